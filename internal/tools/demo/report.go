package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/godwit-vmm/godwit/internal/migration"
)

// report prints the demo's results and fails if the guest found its
// memory or its heartbeats wrong.
func report(accel string, boot bootTimes, legs []legResult, end ending) error {
	fmt.Println()
	fmt.Println("Godwit demo results")
	fmt.Printf("  accelerator:                %s\n", accelDesc(accel))
	fmt.Printf("  boot to READY:              %v\n", boot.ready.Round(time.Millisecond))
	for _, l := range legs {
		r := l.rep.Report
		fmt.Printf("  migration %s -> %s:\n", l.from, l.to)
		fmt.Printf("    total %.0f ms, downtime %.1f ms, guest-visible pause %v, %d rounds, %.1f MiB sent, max throttle %d%%\n",
			r.TotalMs, r.DowntimeMs, l.pause.Round(time.Millisecond), len(r.Rounds), float64(r.Bytes)/(1<<20), r.MaxThrottle)
		fmt.Printf("    downtime by step (ms): %s\n", steps(r.Switchover))
		fmt.Printf("    RAM checksums verified on the destination: %v\n", r.Verified)
		fmt.Printf("    client pings every 10 ms: %s\n", l.ping)
		fmt.Printf("    packets that reached the source while paused, delivered on the destination: %d\n", r.RXHandedOver)
	}
	hb := end.hb
	fmt.Printf("  heartbeats: %d seen, seq %d..%d, sequence errors: %d\n", hb.Count, hb.FirstSeq, hb.LastSeq, len(hb.SeqErrors))
	fmt.Printf("  per-vCPU timer ticks at the end: %s\n", end.cpus)
	fmt.Printf("  guest verify after two migrations: %s\n", end.verify)
	if !strings.HasPrefix(end.verify, "VERIFY OK") || len(hb.SeqErrors) > 0 {
		return errors.New("verification FAILED")
	}
	fmt.Println("  result: OK")
	return nil
}

// steps formats the switchover breakdown in the order the steps happen.
func steps(m map[string]float64) string {
	var parts []string
	for _, k := range migration.SwitchoverSteps {
		if v, ok := m[k]; ok {
			parts = append(parts, fmt.Sprintf("%s %.1f", k, v))
		}
	}
	return strings.Join(parts, ", ")
}

// accelDesc names an accelerator for the report.
func accelDesc(a string) string {
	switch a {
	case "kvm":
		return "kvm (Linux KVM)"
	case "emu":
		return "emu (Godwit's software x86-64 CPU; no /dev/kvm here)"
	}
	return a
}
