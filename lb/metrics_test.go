package lb

import (
	"net/http"
	"testing"
	"time"
)

// metricsTestView is an empty view: these tests drive the counters directly.
type metricsTestView struct{}

func (metricsTestView) Generation(string) uint64    { return 1 }
func (metricsTestView) Instances(string) []Instance { return nil }

func TestHistogramBuckets(t *testing.T) {
	var h histogram
	for _, d := range []time.Duration{
		100 * time.Microsecond, // first bucket (0.0005)
		500 * time.Microsecond, // a bound belongs to its bucket (le)
		501 * time.Microsecond, // next one (0.001)
		30 * time.Millisecond,  // 0.05
		time.Minute,            // above every bound
	} {
		h.observe(d)
	}
	var got Histogram
	h.addTo(&got)
	if got.Count != 5 {
		t.Errorf("count %d, want 5", got.Count)
	}
	if want := 100*time.Microsecond + 500*time.Microsecond + 501*time.Microsecond + 30*time.Millisecond + time.Minute; got.Sum != want {
		t.Errorf("sum %v, want %v", got.Sum, want)
	}
	cum := got.Cumulative()
	for bound, want := range map[float64]uint64{.0005: 2, .001: 3, .025: 3, .05: 4, 10: 4} {
		if cum[bound] != want {
			t.Errorf("le=%v: %d, want %d", bound, cum[bound], want)
		}
	}
	if len(cum) != len(latencyBuckets) {
		t.Errorf("%d bounds, want %d (+Inf is the count)", len(cum), len(latencyBuckets))
	}
}

func TestServiceStatsSumsPools(t *testing.T) {
	p, err := New(DefaultConfig(), metricsTestView{})
	if err != nil {
		t.Fatal(err)
	}
	all, v2, db := p.ensurePool("web", "", ""), p.ensurePool("web", "", "v2"), p.ensurePool("db", "", "")
	all.stats.requests.Add(3)
	v2.stats.requests.Add(2)
	v2.stats.errors.Add(1)
	all.stats.latency.observe(time.Millisecond)
	v2.stats.latency.observe(time.Millisecond)
	db.stats.connections.Add(4)
	db.stats.retries.Add(1)
	db.stats.ejections.Add(1)

	got := p.ServiceStats()
	if len(got) != 2 || got[0].Service != "db" || got[1].Service != "web" {
		t.Fatalf("services %+v, want db and web", got)
	}
	if d := got[0]; d.Connections != 4 || d.Retries != 1 || d.Ejections != 1 || d.Requests != 0 {
		t.Errorf("db %+v", d)
	}
	if w := got[1]; w.Requests != 5 || w.Errors != 1 || w.Latency.Count != 2 || w.Latency.Sum != 2*time.Millisecond {
		t.Errorf("web (both tags summed) %+v", w)
	}
}

// BenchmarkPoolStats is what metrics add to each proxied request: a
// counter and a latency observation, from every core at once.
func BenchmarkPoolStats(b *testing.B) {
	var st poolStats
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			st.requests.Add(1)
			st.latency.observe(700 * time.Microsecond)
		}
	})
}

// TestProxyOverheadCountsEveryAnsweredRequest: each HTTP/1 request that an
// instance answered adds one observation of the proxy's own time, which is
// less than the request took in all.
func TestProxyOverheadCountsEveryAnsweredRequest(t *testing.T) {
	v := newFakeView()
	threeBackends(t, v)
	p := startProxy(t, testConfig(), v)
	pc := newProxyClient(t, p)
	start := time.Now()
	for range 20 {
		if status, _ := pc.get(t, "web", "/"); status != http.StatusOK {
			t.Fatalf("status %d", status)
		}
	}
	took := time.Since(start)
	o := p.Overhead()
	if o.Count != 20 {
		t.Fatalf("overhead has %d observations after 20 requests", o.Count)
	}
	if o.Sum <= 0 || o.Sum >= took {
		t.Fatalf("overhead sums to %v over requests that took %v in all", o.Sum, took)
	}
}
