package fence

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPublishRead(t *testing.T) {
	p := NewPublisher(filepath.Join(t.TempDir(), "fence"))
	if err := p.PublishAt(123456789); err != nil {
		t.Fatal(err)
	}
	if d, err := Read(p.Path()); err != nil || d != 123456789 {
		t.Fatalf("Read = %d, %v", d, err)
	}
}

func TestWatchFiresAtDeadline(t *testing.T) {
	p := NewPublisher(filepath.Join(t.TempDir(), "fence"))
	p.Publish(150 * time.Millisecond)
	start := time.Now()
	fired := make(chan string, 1)
	stop := Watch(p.Path(), 20*time.Millisecond, func(r string) { fired <- r })
	defer stop()
	select {
	case r := <-fired:
		// Never before the deadline; after it within the poll interval,
		// with room for a loaded CI machine.
		if d := time.Since(start); d < 140*time.Millisecond || d > 1500*time.Millisecond {
			t.Errorf("fired after %v, deadline was 150 ms", d)
		}
		if !strings.Contains(r, "deadline passed") {
			t.Errorf("reason %q", r)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("fence did not fire")
	}
}

func TestWatchRenewedKeepsRunning(t *testing.T) {
	p := NewPublisher(filepath.Join(t.TempDir(), "fence"))
	// Each renewal moves the deadline a second ahead, far more than the
	// 40 ms between renewals, so a loaded machine's scheduling delays do
	// not make it lapse.
	p.Publish(time.Second)
	fired := make(chan string, 1)
	stop := Watch(p.Path(), 10*time.Millisecond, func(r string) { fired <- r })
	defer stop()
	for range 10 {
		time.Sleep(40 * time.Millisecond)
		p.Publish(time.Second) // renewals keep coming
	}
	select {
	case r := <-fired:
		t.Fatalf("fired while renewed: %s", r)
	default:
	}
	// Renewals stop: it fires once the last deadline passes.
	select {
	case <-fired:
	case <-time.After(5 * time.Second):
		t.Fatal("fence did not fire after renewals stopped")
	}
}

func TestWatchFailsClosed(t *testing.T) {
	fired := make(chan string, 1)
	stop := Watch(filepath.Join(t.TempDir(), "missing"), 10*time.Millisecond, func(r string) { fired <- r })
	defer stop()
	select {
	case r := <-fired:
		if !strings.Contains(r, "cannot read") {
			t.Errorf("reason %q", r)
		}
	case <-time.After(time.Second):
		t.Fatal("an unreadable fence did not stop the VM")
	}
}

func TestCheckReadable(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o711)
	os.Chmod(filepath.Dir(dir), 0o711)
	f := filepath.Join(dir, "fence")
	if err := CheckReadable(f, 65534, 65534); err != nil {
		t.Errorf("not yet published, reachable directory: %v", err)
	}
	os.WriteFile(f, make([]byte, 16), 0o600)
	os.Chmod(f, 0o600)
	if err := CheckReadable(f, 65534, 65534); err == nil || !strings.Contains(err.Error(), "cannot read") {
		t.Errorf("file 0600 of another user: %v", err)
	}
	os.Chmod(f, 0o644)
	if err := CheckReadable(f, 65534, 65534); err != nil {
		t.Errorf("file 0644: %v", err)
	}
	os.Chmod(dir, 0o700)
	if err := CheckReadable(f, 65534, 65534); err == nil || !strings.Contains(err.Error(), "cannot search") {
		t.Errorf("directory 0700 of another user: %v", err)
	}
	if err := CheckReadable(f, os.Getuid(), os.Getgid()); err != nil {
		t.Errorf("its owner: %v", err)
	}
}
