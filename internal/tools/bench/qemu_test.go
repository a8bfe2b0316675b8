package main

import (
	"strings"
	"testing"

	"github.com/godwit-vmm/godwit/internal/migration"
	"github.com/godwit-vmm/godwit/internal/tools/qemu"
)

func qemuDone(total, down, pause float64, sent uint64, seqOK bool) qemuRun {
	return qemuRun{Status: "completed", WallMs: total + 50, GuestPauseMs: pause, SeqContinuous: seqOK,
		Stats: &qemu.MigrationStats{Status: "completed", TotalMs: total, DowntimeMs: down,
			RAM: qemu.RAMStats{Transferred: sent << 20, Mbps: 800, DirtySyncCount: 3}}}
}

// TestQEMUSummaryAndTable: the statistics cover completed runs only (what
// every run sent aside), and the table puts them beside Godwit's.
func TestQEMUSummaryAndTable(t *testing.T) {
	cancelled := qemuRun{Status: "cancelled(timeout)", WallMs: 45000,
		Stats: &qemu.MigrationStats{Status: "cancelled", RAM: qemu.RAMStats{Transferred: 5000 << 20}}}
	q := &qemuScenario{Scenario: "ws64", Variant: "uncapped", Verify: "VERIFY OK 16384", VerifyOK: true,
		Runs: []qemuRun{qemuDone(300, 30, 40, 100, true), cancelled, qemuDone(500, 50, 60, 200, false)}}
	q.summarize()
	if q.Completed != 2 || q.SeqOK != 1 || !q.Cancelled || strings.Join(q.Statuses, ",") != "completed,cancelled(timeout),completed" {
		t.Fatalf("completed %d, seq ok %d, cancelled %v, statuses %v", q.Completed, q.SeqOK, q.Cancelled, q.Statuses)
	}
	if q.TotalMs.Median != 400 || q.PauseMs.Median != 50 || q.SentMiB.Max != 200 || q.AllSent.N != 3 || q.AllSent.Max != 5000 {
		t.Fatalf("total %+v, pause %+v, sent %+v, all sent %+v", q.TotalMs, q.PauseMs, q.SentMiB, q.AllSent)
	}
	def := &qemuScenario{Scenario: "ws64", Variant: "default", Runs: []qemuRun{cancelled}}
	def.summarize()
	g := &godwitScenario{Scenario: "ws64", MemMiB: 1024, Workload: "64 64 0",
		Runs: []migRun{{Status: "completed", GuestPauseMs: 25, Report: &migration.Report{Result: "completed", TotalMs: 200, Bytes: 80 << 20}}}}
	g.summarize()
	var b strings.Builder
	renderMigrate(&b, &migrateResult{Godwit: []*godwitScenario{g}, QEMU: []*qemuScenario{def, q}}, map[string]any{"runs": 3, "qemu_timeout_s": 45})
	md := b.String()
	for _, want := range []string{
		"| ws64 (1024 MiB, W 64 64 0) | 200 | 0 | 25 | 80 | **not converged** 0/1 (cancelled @45 s, 5000 MiB sent) | 400 / 40 / 50 / 150 (only 2/3 converged) | 0.50 | 0.50 |",
		"| ws64 | uncapped | completed,cancelled(timeout),completed | 1/2 | VERIFY OK 16384 | 400 [300..500] |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("table lacks %q:\n%s", want, md)
		}
	}
}
