package promreg

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

func TestRegistryAndHandler(t *testing.T) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "promreg_test_gauge", Help: "A test gauge."})
	g.Set(42)
	srv := httptest.NewServer(Handler(New(g)))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	for _, want := range []string{"promreg_test_gauge 42\n", "go_goroutines ", "process_open_fds "} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the scrape has no %q:\n%s", want, b)
		}
	}
}

func TestDuplicatePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("registering the Go collector twice did not panic")
		}
	}()
	New(collectors.NewGoCollector())
}

// failing is a collector whose scrape fails.
type failing struct{ d *prometheus.Desc }

func (f failing) Describe(ch chan<- *prometheus.Desc) { ch <- f.d }
func (f failing) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.NewInvalidMetric(f.d, io.ErrUnexpectedEOF)
}

func TestCollectorErrorIs500(t *testing.T) {
	rec := httptest.NewRecorder()
	f := failing{prometheus.NewDesc("promreg_test_failing", "Fails.", nil, nil)}
	Handler(New(f)).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusInternalServerError {
		t.Errorf("status %d, want 500", rec.Code)
	}
}
