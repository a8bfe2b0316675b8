package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/guest"
	"github.com/godwit-vmm/godwit/internal/testenv"
)

func TestMakePlan(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	bin, elf := filepath.Join(dir, "godwit"), filepath.Join(dir, "guest.elf")
	for _, f := range []string{bin, elf} {
		if err := os.WriteFile(f, nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	p, err := makePlan(options{godwit: bin, elf: elf})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range p.legs {
		got = append(got, fmt.Sprintf("%d->%d %s verify=%v", l.from, l.to, l.tag, l.verify))
	}
	if want := "0->1 B verify=false, 1->0 A2 verify=true"; strings.Join(got, ", ") != want || p.hosts != 2 {
		t.Errorf("%d hosts, legs %s; want 2 hosts, legs %s", p.hosts, strings.Join(got, ", "), want)
	}
	if _, err := makePlan(options{godwit: bin, elf: filepath.Join(dir, "missing.elf")}); err == nil || !strings.Contains(err.Error(), "make build guest") {
		t.Errorf("missing guest: %v, want an error naming `make build guest`", err)
	}
}

// TestLegPause: a leg's pause is the longest heartbeat gap from the last
// heartbeat before it on, up to heartbeats after it, not an earlier longer
// one.
func TestLegPause(t *testing.T) {
	d := &demo{ctx: context.Background(), con: guest.NewConsole(nil)}
	seq := 0
	beat := func(n int) {
		for range n {
			fmt.Fprintf(d.con, "HB %d 0 0\n", seq)
			seq++
		}
	}
	beat(2)
	time.Sleep(300 * time.Millisecond) // an earlier leg's pause
	beat(2)
	mark := len(d.con.Heartbeats()) - 1
	time.Sleep(100 * time.Millisecond) // this leg's
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { // the destination, beating until the leg has its pause
		defer close(done)
		time.Sleep(50 * time.Millisecond)
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
				beat(1)
			}
		}
	}()
	pause, err := d.legPause(mark)
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if pause < 100*time.Millisecond || pause >= 300*time.Millisecond {
		t.Errorf("pause %v, want this leg's gap (100 to 300 ms), not the earlier 300 ms", pause)
	}
}
