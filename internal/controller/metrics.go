package controller

import (
	"context"
	"net/http"
	"time"

	"github.com/godwit-vmm/godwit/internal/promreg"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the controller's Prometheus series, in a registry of its
// own (package promreg: with the Go runtime's and the process's). Counters count this
// controller's own decisions; the gauges of VMs, hosts and migration
// records are read from etcd at each scrape (any controller reports the
// whole pool; filter on godwit_controller_leader == 1 to count once).
type metrics struct {
	reg        *prometheus.Registry
	leader     prometheus.Gauge
	placements *prometheus.CounterVec // result: placed | refused | failed
	migrations *prometheus.CounterVec // result: requested | refused | failed
}

func newMetrics(c *Controller) *metrics {
	m := &metrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "godwit_controller_leader", Help: "1 while this controller leads the pool.",
		}),
		placements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "godwit_controller_placements_total", Help: "VM placements decided by this controller, by result (placed, refused, failed).",
		}, []string{"result"}),
		migrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "godwit_controller_migration_requests_total", Help: "Migration requests handled by this controller, by result (requested, refused, failed).",
		}, []string{"result"}),
	}
	for _, r := range []string{"placed", "refused", "failed"} {
		m.placements.WithLabelValues(r)
	}
	for _, r := range []string{"requested", "refused", "failed"} {
		m.migrations.WithLabelValues(r)
	}
	m.reg = promreg.New(m.leader, m.placements, m.migrations, &poolCollector{c: c})
	return m
}

func (m *metrics) handler() http.Handler { return promreg.Handler(m.reg) }

var (
	vmsDesc   = prometheus.NewDesc("godwit_pool_vms", "VMs in the pool by phase.", []string{"phase"}, nil)
	hostsDesc = prometheus.NewDesc("godwit_pool_hosts", "Hosts in the pool by state (lost: no lease, whatever the state).",
		[]string{"state"}, nil)
	migDesc = prometheus.NewDesc("godwit_pool_migrations", "Migration records by phase (committed, aborted and failed are results).",
		[]string{"phase"}, nil)
	resvDesc = prometheus.NewDesc("godwit_controller_reservations", "In-flight placement and migration reservations.", nil, nil)
)

// poolCollector reads the pool at scrape time.
type poolCollector struct{ c *Controller }

func (p *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- vmsDesc
	ch <- hostsDesc
	ch <- migDesc
	ch <- resvDesc
}

func (p *poolCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(resvDesc, prometheus.GaugeValue, float64(len(p.c.reservations())))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	st, err := p.c.readPool(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(vmsDesc, err)
		return
	}
	hosts := map[string]int{"active": 0, "draining": 0, "maintenance": 0, "failed": 0, "lost": 0}
	for _, h := range st.hosts {
		switch {
		case h.Alive == nil:
			hosts["lost"]++
		case h.State == nil:
			hosts["unset"]++
		default:
			hosts[string(h.State.State)]++
		}
	}
	vms := map[string]int{}
	migs := map[string]int{}
	for _, v := range st.vms {
		if v.Spec == nil {
			continue
		}
		vms[vmView(v).Phase]++
		if v.Migration != nil {
			migs[string(v.Migration.Phase)]++
		}
	}
	for k, n := range hosts {
		ch <- prometheus.MustNewConstMetric(hostsDesc, prometheus.GaugeValue, float64(n), k)
	}
	for k, n := range vms {
		ch <- prometheus.MustNewConstMetric(vmsDesc, prometheus.GaugeValue, float64(n), k)
	}
	for k, n := range migs {
		ch <- prometheus.MustNewConstMetric(migDesc, prometheus.GaugeValue, float64(n), k)
	}
}
