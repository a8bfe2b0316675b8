package agent

import (
	"github.com/godwit-vmm/godwit/internal/promreg"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the agent's Prometheus metrics, in a registry of its own
// (package promreg: with the Go runtime's and the process's).
type metrics struct {
	reg          *prometheus.Registry
	vmsRunning   prometheus.Gauge
	renewals     prometheus.Counter
	renewLatency prometheus.Histogram
	leaseLost    prometheus.Counter
	reconciles   prometheus.Counter
	migrations   *prometheus.CounterVec
	downtime     prometheus.Histogram
	hostLoad     prometheus.Gauge
	memUsed      prometheus.Gauge
}

func newMetrics(a *Agent) *metrics {
	m := &metrics{
		vmsRunning: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "godwit_agent_vms_running", Help: "VMMs running a VM owned by this host (incoming VMMs excluded).",
		}),
		renewals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "godwit_agent_lease_renewals_total", Help: "Acknowledged host lease renewals (grants included).",
		}),
		renewLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "godwit_agent_lease_renewal_seconds", Help: "Round trip of acknowledged host lease renewals.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1},
		}),
		leaseLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "godwit_agent_lease_lost_total", Help: "Times the host lease deadline passed (every VM was stopped).",
		}),
		reconciles: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "godwit_agent_reconcile_passes_total", Help: "Reconcile passes run (periodic, and on each change of the pool that concerns this host).",
		}),
		migrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "godwit_agent_migrations_total", Help: "Migrations driven from this host, by result.",
		}, []string{"result"}),
		downtime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "godwit_agent_migration_downtime_seconds", Help: "Downtime (source pause to destination running) of committed migrations from this host.",
			Buckets: []float64{.005, .01, .02, .05, .1, .2, .5, 1, 2, 5},
		}),
		hostLoad: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "godwit_agent_host_cpu_busy_ratio", Help: "Busy fraction of the host's CPUs over the last usage period.",
		}),
		memUsed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "godwit_agent_host_vm_memory_bytes", Help: "Guest memory of the VMs running here.",
		}),
	}
	for _, r := range []string{"committed", "failed"} {
		m.migrations.WithLabelValues(r)
	}
	deadline := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "godwit_agent_lease_deadline_seconds", Help: "Time left until the host lease's local deadline (0 without a lease).",
	}, func() float64 {
		if l := a.currentLease(); l != nil {
			return max(l.Stats().TimeToDeadline.Seconds(), 0)
		}
		return 0
	})
	m.reg = promreg.New(m.vmsRunning, m.renewals, m.renewLatency, m.leaseLost, m.reconciles, m.migrations, m.downtime,
		m.hostLoad, m.memUsed, deadline)
	return m
}
