package migration_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/godwit-vmm/godwit/internal/migration/wire"
	"github.com/godwit-vmm/godwit/internal/testenv"
	"github.com/godwit-vmm/godwit/internal/vm"
)

// TestPacketsHandedOver: frames that reach the source's TAP while the VM
// is paused for the switchover reach the guest on the destination. A
// destination that grants late-rx takes them in an RX frame just before
// COMMIT, so those that arrive while the state travels count too; one
// that predates the feature (simulated by renaming it in CONFIG in
// flight) gets those taken before the state, inside it.
func TestPacketsHandedOver(t *testing.T) {
	testenv.RequireRoot(t)
	for _, late := range []bool{true, false} {
		t.Run(fmt.Sprintf("late-rx=%v", late), func(t *testing.T) {
			id := os.Getpid()%100000*10 + map[bool]int{true: 1, false: 2}[late]
			srcTap, dstTap := fmt.Sprintf("gwrs%d", id), fmt.Sprintf("gwrd%d", id)
			fp := newFaultPair(t, vm.Config{Net: &vm.NetConfig{TAP: srcTap}}, vm.Config{Net: &vm.NetConfig{TAP: dstTap}})
			inject := packetSocket(t, srcTap)
			before := netstatRX(t, fp.command(fp.src, "NETSTAT", "NETSTAT ", 30*time.Second))

			const burst = 4
			var mu sync.Mutex
			injected, rxFrames := 0, 0
			send := func() {
				for range burst {
					injected++
					if err := unix.Send(inject, testFrame(injected), 0); err != nil {
						t.Errorf("inject a frame: %v", err)
					}
				}
				time.Sleep(30 * time.Millisecond) // the source's TAP reader takes them
			}
			px := newFaultProxy(t, fp.ln.Addr().String())
			px.OnFrame = func(f frameInfo) proxyAction {
				mu.Lock()
				defer mu.Unlock()
				switch {
				case !f.ToDest:
				case f.Type == wire.TypeIterEnd:
					// The last round's end comes after the pause: these
					// are handed over either way.
					send()
				case f.Type == wire.TypeState && late:
					send()
				case f.Type == wire.TypeRX:
					rxFrames++
				}
				return forward
			}
			px.Mutate = func(f frameInfo, off uint64, b []byte) {
				if !late && f.Type == wire.TypeConfig && f.ToDest {
					if i := bytes.Index(b, []byte(`"`+wire.FeatureLateRX+`"`)); i >= 0 {
						copy(b[i:], `"late-xx"`)
					}
				}
			}
			rep, err := fp.send(px.Addr(), converging())
			if err != nil {
				t.Fatal(err)
			}
			r := fp.result(60 * time.Second)
			if r == nil || r.v == nil {
				t.Fatalf("Receive: %+v", r)
			}
			mu.Lock()
			defer mu.Unlock()
			want := burst // the last round's
			if late {
				want += burst // and those sent with the state
			}
			t.Logf("%d frames injected over %d rounds; %d handed over; switchover steps %v", injected, len(rep.Rounds), rep.RXHandedOver, rep.Switchover)
			if rep.RXHandedOver < want {
				t.Errorf("%d frames handed over, want at least %d", rep.RXHandedOver, want)
			}
			if wantRX := map[bool]int{true: 1, false: 0}[late]; rxFrames != wantRX {
				t.Errorf("%d RX frames went to the destination, want %d", rxFrames, wantRX)
			}
			// Every injected frame reached the guest: before the pause on
			// the source, the rest on the destination.
			after := netstatRX(t, fp.command(r.v, "NETSTAT", "NETSTAT ", 30*time.Second))
			if after-before < injected {
				t.Errorf("the guest counted %d frames received since the first NETSTAT, want at least the %d injected", after-before, injected)
			}
		})
	}
}

// packetSocket opens a raw socket that transmits on interface name: what
// it sends there reaches the VMM reading the TAP.
func packetSocket(t *testing.T, name string) int {
	t.Helper()
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		t.Fatal(err)
	}
	proto := int(htons(unix.ETH_P_ALL))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: ifi.Index}); err != nil {
		t.Fatal(err)
	}
	return fd
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// testFrame is a broadcast frame of the IEEE local experimental
// ethertype, numbered n: the test guest counts it and ignores it.
func testFrame(n int) []byte {
	f := make([]byte, 60)
	copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x88, 0xb5})
	binary.BigEndian.PutUint32(f[14:], uint32(n))
	return f
}

// netstatRX returns rx= of a NETSTAT line.
func netstatRX(t *testing.T, line string) int {
	t.Helper()
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "rx="); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("NETSTAT: %q", line)
			}
			return n
		}
	}
	t.Fatalf("NETSTAT without rx=: %q", line)
	return 0
}
