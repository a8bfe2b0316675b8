package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newTestWorkload(t *testing.T, mib int) *workload {
	t.Helper()
	buf, err := alignedBuf(mib << 20)
	if err != nil {
		t.Fatal(err)
	}
	return newWorkload(buf)
}

// TestStampMatchesProtocol: the page stamp is guest/PROTOCOL.md's, with
// the virtual address in place of the guest-physical one (the Python
// reference's value for run 1, gen 2, page 0x1000000).
func TestStampMatchesProtocol(t *testing.T) {
	if got, want := stamp(1, 2, 0x1000000), uint64(0x855d05bada3f823e); got != want {
		t.Fatalf("stamp(1, 2, 0x1000000) = %#x, want %#x", got, want)
	}
}

// TestWorkloadSweepsAndVerifies: fill, sweeps, verify at every point of a
// sweep, and a poked page fails verify with its address.
func TestWorkloadSweepsAndVerifies(t *testing.T) {
	w := newTestWorkload(t, 4)
	if r := w.verify(); r.checked != 0 {
		t.Fatalf("verify before W checked %d pages", r.checked)
	}
	w.set(4, 1, 0) // 1024 pages, 256 in the working set
	if r := w.verify(); r.bad != 0 || r.checked != 768 {
		t.Fatalf("after fill: %+v, want 768 checked, 0 bad", r)
	}
	for i := 0; i < 7; i++ { // 448 pages: one sweep and 3/4 of the next
		if !w.step() {
			t.Fatal("step wrote nothing at rate 0")
		}
		if r := w.verify(); r.bad != 0 {
			t.Fatalf("after %d batches: %+v", i+1, r)
		}
	}
	if r := w.verify(); r.checked != 1024 {
		t.Fatalf("second sweep: checked %d, want 1024", r.checked)
	}
	if got := w.dirtied.Load(); got != 768+448 {
		t.Fatalf("dirtied %d, want %d", got, 768+448)
	}
	va := w.base + 300*pageSize + 17
	page, old, new, err := w.poke(va)
	if err != nil || page != w.base+300*pageSize || new != old^1 {
		t.Fatalf("poke: %#x %#x %#x %v", page, old, new, err)
	}
	r := w.verify()
	if r.bad != 1 || r.first != page || r.got != new {
		t.Fatalf("after poke: %+v, want page %#x bad", r, page)
	}
	if _, _, _, err := w.poke(w.base - 1); err == nil {
		t.Fatal("poke outside the buffer accepted")
	}
	// A new W is a new run: the old stamps no longer verify.
	w.set(1, 0, 0)
	if r := w.verify(); r.bad != 0 || r.checked != 256 {
		t.Fatalf("run 2: %+v", r)
	}
}

// TestWorkloadRate: at 1000 pages/s the sweep writes about that many.
func TestWorkloadRate(t *testing.T) {
	w := newTestWorkload(t, 8)
	w.set(8, 8, 1000)
	stop := make(chan struct{})
	go w.loop(stop)
	time.Sleep(300 * time.Millisecond)
	w.setPause(true)
	n := w.dirtied.Load()
	time.Sleep(50 * time.Millisecond)
	if w.dirtied.Load() != n {
		t.Fatal("the sweep wrote while paused")
	}
	close(stop)
	if n < 200 || n > 450 { // 300 ms at 1000/s, 64-page batches
		t.Fatalf("%d pages in 300 ms at 1000 pages/s", n)
	}
	if r := w.verify(); r.bad != 0 {
		t.Fatalf("verify: %+v", r)
	}
}

func TestProcParsers(t *testing.T) {
	stat := "cpu  10 0 5 100 0 0 0 0 0 0\ncpu0 5 0 2 50 0 0 0 0 0 0\ncpu1 5 0 3 50 1 0 0 0 0 0\nintr 1\n"
	if got := strings.Join(cpuTickList(stat), " "); got != "57 59" {
		t.Fatalf("cpuTickList = %q", got)
	}
	snmpText := "Ip: Forwarding DefaultTTL\nIp: 1 64\nIcmp: InMsgs InEchos OutEchoReps\nIcmp: 9 4 3\n"
	if got := snmp(snmpText, "Icmp", "OutEchoReps"); got != 3 {
		t.Fatalf("snmp OutEchoReps = %d", got)
	}
	if got := param("console=ttyS0 godwit.ip=10.0.0.2 quiet", "godwit.ip"); got != "10.0.0.2" {
		t.Fatalf("param = %q", got)
	}
}

// TestCommands drives the command loop with a file for the console and a
// file for the disk.
func TestCommands(t *testing.T) {
	dir := t.TempDir()
	outFile, err := os.Create(filepath.Join(dir, "console"))
	if err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "disk")
	if err := os.WriteFile(disk, make([]byte, 64*sectorSize), 0o600); err != nil {
		t.Fatal(err)
	}
	blkDevice = disk
	g := &session{o: &out{f: outFile}, wl: newTestWorkload(t, 2)}
	for _, c := range []string{"w 2 1 0", "V", "W x", "ECHO hi there", "BLKW 2 3 9", "BLKV 2 3 9", "BLKV 2 3 8", "BLKR 60 8", "FROB"} {
		g.command(c)
	}
	b, _ := os.ReadFile(outFile.Name())
	got := string(b)
	crc := "BLKW OK 2 3 "
	for _, want := range []string{"ACK W 2 1 0 ", "VERIFY OK 256", "ERR bad arguments W", "ECHO hi there", crc,
		"BLKV OK 2 3\n", "BLKV FAIL 2 3 bad=3 first=2", "BLKR FAIL 60 8 range capacity=64", "ERR unknown command FROB"} {
		if !strings.Contains(got, want) {
			t.Errorf("console lacks %q:\n%s", want, got)
		}
	}
}
