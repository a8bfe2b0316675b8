package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// What the workload reads of the kernel, from /proc and /sys.

// onlineCPUs counts the CPUs in /proc/stat.
func onlineCPUs() int {
	return len(cpuTickList(readFile("/proc/stat")))
}

// meminfo returns a /proc/meminfo field in KiB (0 if absent).
func meminfo(field string) uint64 {
	for _, l := range strings.Split(readFile("/proc/meminfo"), "\n") {
		if rest, ok := strings.CutPrefix(l, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				v, _ := strconv.ParseUint(f[0], 10, 64)
				return v
			}
		}
	}
	return 0
}

// param returns the value of name=value on a kernel command line.
func param(cmdline, name string) string {
	for _, f := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(f, name+"="); ok {
			return v
		}
	}
	return ""
}

// uptimeMs is the time since the kernel booted, from /proc/uptime.
func uptimeMs() int64 {
	f := strings.Fields(readFile("/proc/uptime"))
	if len(f) == 0 {
		return 0
	}
	s, _ := strconv.ParseFloat(f[0], 64)
	return int64(s * 1000)
}

// cpuTicks returns each CPU's accounted time in USER_HZ ticks (100 a
// second, idle included, tickless or not), space-separated: the CPU line's
// counts advance by about 10 per 100 ms on every online CPU.
func cpuTicks() string {
	return strings.Join(cpuTickList(readFile("/proc/stat")), " ")
}

// cpuTickList parses the cpuN lines of /proc/stat into their sums.
func cpuTickList(stat string) []string {
	var out []string
	for _, l := range strings.Split(stat, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		var sum uint64
		for _, x := range f[1:] {
			v, _ := strconv.ParseUint(x, 10, 64)
			sum += v
		}
		out = append(out, strconv.FormatUint(sum, 10))
	}
	return out
}

// netstat reports eth0's frame counts and the kernel's ARP and ICMP echo
// answers, in NETSTAT's fields (udp: none, the kernel echoes no UDP).
func netstat() string {
	stat := func(name string) string {
		s := strings.TrimSpace(readFile("/sys/class/net/eth0/statistics/" + name))
		if s == "" {
			return "0"
		}
		return s
	}
	return fmt.Sprintf("rx=%s tx=%s arp=%d icmp=%d udp=0", stat("rx_packets"), stat("tx_packets"),
		0, snmp(readFile("/proc/net/snmp"), "Icmp", "OutEchoReps"))
}

// snmp returns one counter of /proc/net/snmp (a header line of names
// followed by a line of values, per protocol).
func snmp(text, proto, name string) uint64 {
	lines := strings.Split(text, "\n")
	for i := 0; i+1 < len(lines); i++ {
		h, v := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(h) == 0 || h[0] != proto+":" || len(v) != len(h) || v[0] != proto+":" {
			continue
		}
		for j := range h {
			if h[j] == name {
				n, _ := strconv.ParseUint(v[j], 10, 64)
				return n
			}
		}
	}
	return 0
}

func readFile(name string) string {
	b, _ := os.ReadFile(name)
	return string(b)
}
