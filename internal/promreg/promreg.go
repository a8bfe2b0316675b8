// Package promreg is the Prometheus setup the agent and the controller
// share: a registry of their own (never the global one) with the Go
// runtime's and the process's collectors, and its /metrics handler.
//
// Who may import it: anything; it imports nothing of Godwit's.
package promreg

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// New returns a registry holding the Go runtime's and the process's
// collectors, and cs. It panics if two collectors describe the same
// series, as prometheus.Registry.MustRegister does.
func New(cs ...prometheus.Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(cs...)
	return reg
}

// Handler serves reg in the Prometheus text format (GET /metrics); a
// collector's error is served as HTTP 500.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError})
}
