// Command gwload is the Linux guest's workload: it speaks the test guest's
// serial protocol (guest/PROTOCOL.md) on its standard input and output, the
// console, so every harness that drives the bare-metal test guest drives a
// Linux VM too. It prints the boot lines and READY, a heartbeat every 10 ms
// and the per-CPU tick counts every 100 ms, and answers W, V, STATUS,
// WPAUSE, WRESUME, POKE, NETSTAT, BLKW, BLKR, BLKV, ECHO, HELP and OFF. The
// memory workload stamps pages of its own address space (the virtual
// address stands for the guest-physical one), the block commands use
// /dev/vda with O_DIRECT, and OFF powers the machine off.
//
// It runs as the last step of the initramfs's /init (guest/linux/init),
// built by make linux-guest (internal/tools/linuxguest).
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// out writes whole lines, one write each, so lines never interleave.
type out struct {
	mu sync.Mutex
	f  *os.File
}

func (o *out) printf(format string, a ...any) {
	s := fmt.Sprintf(format, a...) + "\n"
	o.mu.Lock()
	o.f.WriteString(s)
	o.mu.Unlock()
}

func main() {
	o := &out{f: os.Stdout}
	rawConsole(0)
	os.WriteFile("/proc/sys/kernel/printk", []byte("1\n"), 0) // keep kernel messages off the protocol
	g := &session{o: o, start: time.Now()}
	if err := g.boot(); err != nil {
		o.printf("PANIC %v", err)
		os.Exit(1)
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 256), 256)
	for in.Scan() {
		line := strings.TrimSpace(strings.ReplaceAll(in.Text(), "\r", ""))
		if line != "" {
			g.command(line)
		}
	}
	o.printf("WARN console closed: %v", in.Err())
	select {}
}

// rawConsole turns off echo and output processing on the console, keeping
// line input (a line ends at \r or \n), as the test guest behaves.
func rawConsole(fd int) {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return // not a terminal (a test pipe)
	}
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ECHOE | unix.ECHOK
	t.Lflag |= unix.ICANON
	t.Iflag |= unix.ICRNL
	t.Oflag &^= unix.OPOST
	unix.IoctlSetTermios(fd, unix.TCSETS, t)
}

// session is the state behind the commands.
type session struct {
	o     *out
	start time.Time
	wl    *workload
	stop  chan struct{}
	ip    string
	hb    uint64
	hbMu  sync.Mutex
}

func (g *session) boot() error {
	cmdline, _ := os.ReadFile("/proc/cmdline")
	cpus := onlineCPUs()
	memMiB := meminfo("MemTotal") >> 10
	g.o.printf("GODWIT-GUEST v1 cpus=%d mem=%d cmdline=%s", cpus, memMiB, strings.TrimSpace(string(cmdline)))
	g.o.printf("CLOCK tsc_khz=1000000 apic_timer_khz=0 source=linux-monotonic")
	go g.heartbeats()
	g.ip = param(string(cmdline), "godwit.ip")
	if mac, err := os.ReadFile("/sys/class/net/eth0/address"); err == nil {
		ip := g.ip
		if ip == "" {
			ip = "none"
		}
		g.o.printf("NET mac=%s ip=%s", strings.TrimSpace(string(mac)), ip)
	} else {
		g.o.printf("NET none")
	}
	if size, err := os.ReadFile("/sys/block/vda/size"); err == nil {
		g.o.printf("BLK capacity=%s", strings.TrimSpace(string(size)))
	} else {
		g.o.printf("BLK none")
	}
	// The buffer: what is free now but 48 MiB for the kernel and us,
	// reserved address space only until the workload writes it.
	bufMiB := max(int(meminfo("MemAvailable")>>10)-48, 1)
	buf, err := unix.Mmap(-1, 0, bufMiB<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return fmt.Errorf("mmap %d MiB: %w", bufMiB, err)
	}
	g.wl = newWorkload(buf)
	g.stop = make(chan struct{})
	go g.wl.loop(g.stop)
	g.o.printf("INFO boot cpus=%d buffer_mib=%d boot_ms=%d", cpus, bufMiB, uptimeMs())
	g.o.printf("READY")
	return nil
}

// heartbeats prints HB every 10 ms and CPU every 100 ms. t is the time
// since start in units of 65536 ns (CLOCK says the "TSC" runs at 1 GHz).
func (g *session) heartbeats() {
	tick := time.NewTicker(10 * time.Millisecond)
	var cpuSeq uint64
	for range tick.C {
		g.hbMu.Lock()
		seq := g.hb
		g.hb++
		g.hbMu.Unlock()
		var d uint64
		if g.wl != nil {
			d = g.wl.dirtied.Load()
		}
		g.o.printf("HB %d %d %d", seq, uint64(time.Since(g.start).Nanoseconds())>>16, d)
		if seq%10 == 9 {
			g.o.printf("CPU %d %s", cpuSeq, cpuTicks())
			cpuSeq++
		}
	}
}

var commands = []string{"W", "V", "VERIFY", "STATUS", "CPUS", "NETSTAT", "BLKW", "BLKR", "BLKV", "WPAUSE", "WRESUME", "POKE", "ECHO", "HELP", "OFF", "REBOOT"}

// command runs one command line.
func (g *session) command(line string) {
	f := strings.Fields(line)
	word := strings.ToUpper(f[0])
	args := f[1:]
	nums := func(n int) ([]uint64, bool) {
		if len(args) != n {
			return nil, false
		}
		v := make([]uint64, n)
		for i, a := range args {
			x, err := strconv.ParseUint(a, 0, 64)
			if err != nil {
				return nil, false
			}
			v[i] = x
		}
		return v, true
	}
	bad := func() { g.o.printf("ERR bad arguments %s", word) }
	switch word {
	case "W":
		v, ok := nums(3)
		if !ok {
			bad()
			return
		}
		a, w, r := int(v[0]), int(v[1]), int(v[2])
		if have := g.wl.pages() / 256; a > have {
			a, w = have, min(w, have)
			g.o.printf("WARN W clamped to alloc=%d wset=%d: buffer RAM is %d MiB", a, w, have)
		}
		ms := g.wl.set(a, w, r).Milliseconds()
		g.o.printf("ACK W %s %s %s %d", args[0], args[1], args[2], ms)
	case "V", "VERIFY":
		t0 := time.Now()
		r := g.wl.verify()
		g.o.printf("INFO verify checked=%d bad=%d ms=%d", r.checked, r.bad, time.Since(t0).Milliseconds())
		if r.bad == 0 {
			g.o.printf("VERIFY OK %d", r.checked)
		} else {
			g.o.printf("VERIFY FAIL %d first=0x%x want=0x%016x got=0x%016x", r.bad, r.first, r.want, r.got)
		}
	case "STATUS", "CPUS":
		a, w, r := g.wl.status()
		g.hbMu.Lock()
		hb := g.hb
		g.hbMu.Unlock()
		g.o.printf("STATUS cpus=%d mem=%d hb=%d wl=%d,%d,%d", onlineCPUs(), meminfo("MemTotal")>>10, hb, a, w, r)
	case "WPAUSE", "WRESUME":
		g.wl.setPause(word == "WPAUSE")
		g.o.printf("%s OK", word)
	case "POKE":
		v, ok := nums(1)
		if !ok {
			bad()
			return
		}
		page, old, new, err := g.wl.poke(v[0])
		if err != nil {
			g.o.printf("ERR POKE %v", err)
			return
		}
		g.o.printf("POKE 0x%x old=0x%016x new=0x%016x", page, old, new)
	case "NETSTAT":
		g.o.printf("NETSTAT %s", netstat())
	case "BLKW", "BLKR", "BLKV":
		want := 3
		if word == "BLKR" {
			want = 2
		}
		v, ok := nums(want)
		if !ok {
			bad()
			return
		}
		g.o.printf("%s", blkCommand(word, v))
	case "ECHO":
		g.o.printf("ECHO %s", strings.Join(args, " "))
	case "HELP":
		g.o.printf("HELP %s", strings.Join(commands, " "))
	case "OFF":
		g.o.printf("POWEROFF")
		unix.Sync()
		if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
			g.o.printf("ERR OFF %v", err)
		}
	case "REBOOT":
		g.o.printf("REBOOT")
		unix.Sync()
		if err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART); err != nil {
			g.o.printf("ERR REBOOT %v", err)
		}
	default:
		g.o.printf("ERR unknown command %s", f[0])
	}
}
