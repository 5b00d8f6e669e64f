package node

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// scrape reads an agent's metrics at path and parses them.
func scrapeMetrics(t *testing.T, a *Agent, path string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := do(t, a, "GET", path, nil)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	return fams
}

// metricValue returns the value of the series of family name whose labels
// include want, and whether there is one.
func metricValue(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

func wantMetric(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string, want float64) {
	t.Helper()
	got, ok := metricValue(fams, name, labels)
	if !ok {
		t.Errorf("%s%v: no such series", name, labels)
	} else if got != want {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

func TestMetricsCluster(t *testing.T) {
	as := startAgents(t, 3)
	putOK(t, as[1], "/v1/agent/service/register", map[string]any{"ID": "web-1", "Name": "web", "Port": 8001})
	putOK(t, as[2], "/v1/agent/service/register", map[string]any{"ID": "db-1", "Name": "db", "Port": 5432,
		"Check": map[string]any{"CheckID": "ttl-db", "TTL": "1h"}})
	testutil.Wait(t, 10*time.Second, "instances replicated to n0", func() bool {
		return len(as[0].Cluster().Catalog().AllInstances()) == 2
	})

	// Every agent has its own registry: three in one process, no clash.
	for _, a := range as {
		fams := scrapeMetrics(t, a, "/metrics")
		wantMetric(t, fams, "shoal_members", map[string]string{"status": "alive"}, 3)
		wantMetric(t, fams, "shoal_members", map[string]string{"status": "failed"}, 0)
		wantMetric(t, fams, "shoal_agent_info", map[string]string{"node": a.NodeName(), "datacenter": "dc1"}, 1)
		for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_resident_memory_bytes",
			"shoal_gossip_queue_depth", "shoal_gossip_health_score", "shoal_replication_bytes_total"} {
			if fams[name] == nil {
				t.Errorf("%s: no %s", a.NodeName(), name)
			}
		}
	}

	fams := scrapeMetrics(t, as[0], "/metrics")
	wantMetric(t, fams, "shoal_catalog_instances", map[string]string{"health": "passing"}, 1)
	wantMetric(t, fams, "shoal_catalog_instances", map[string]string{"health": "critical"}, 1)
	wantMetric(t, fams, "shoal_catalog_services", nil, 2)
	if v, _ := metricValue(fams, "shoal_replication_bytes_total", map[string]string{"direction": "in"}); v <= 0 {
		t.Errorf("n0 replicated two services in %v bytes", v)
	}
	if v, _ := metricValue(fams, "shoal_replication_pushes_total", map[string]string{"direction": "in"}); v <= 0 {
		t.Errorf("n0 received %v pushes", v)
	}

	// The owner's check, with its status.
	fams = scrapeMetrics(t, as[2], "/metrics")
	wantMetric(t, fams, "shoal_check_status", map[string]string{"check": "ttl-db", "service": "db", "status": "critical"}, 1)
	wantMetric(t, fams, "shoal_check_status", map[string]string{"check": "ttl-db", "service": "db", "status": "passing"}, 0)
	putOK(t, as[2], "/v1/agent/check/pass/ttl-db", nil)
	fams = scrapeMetrics(t, as[2], "/metrics")
	wantMetric(t, fams, "shoal_check_status", map[string]string{"check": "ttl-db", "service": "db", "status": "passing"}, 1)

	// Once gossip has carried every owner's version, nobody lags.
	testutil.Wait(t, 10*time.Second, "no catalog version lag on n0", func() bool {
		fams := scrapeMetrics(t, as[0], "/metrics")
		for _, peer := range []string{"n1", "n2"} {
			if v, ok := metricValue(fams, "shoal_catalog_version_lag", map[string]string{"node": peer}); !ok || v != 0 {
				return false
			}
		}
		return true
	})

	// A failed member shows up as such.
	as[2].Shutdown()
	testutil.Wait(t, 15*time.Second, "n2 failed in n0's metrics", func() bool {
		fams := scrapeMetrics(t, as[0], "/metrics")
		v, _ := metricValue(fams, "shoal_members", map[string]string{"status": "failed"})
		return v == 1
	})
}

func TestMetricsProxy(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	}))
	defer backend.Close()
	_, portStr, _ := net.SplitHostPort(backend.Listener.Addr().String())
	port, _ := strconv.Atoi(portStr)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadPort := dead.Addr().(*net.TCPAddr).Port
	dead.Close() // refuses connections from now on

	a := startAgent(t, "n0", nil)
	putOK(t, a, "/v1/agent/service/register", map[string]any{"ID": "echo-1", "Name": "echo", "Address": "127.0.0.1", "Port": port})
	putOK(t, a, "/v1/agent/service/register", map[string]any{"ID": "gone-1", "Name": "gone", "Address": "127.0.0.1", "Port": deadPort})

	client := &http.Client{Timeout: 5 * time.Second}
	get := func(host string) int {
		req, _ := http.NewRequest("GET", "http://"+a.Proxy().HTTPAddr()+"/", nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	const n = 7
	for range n {
		if code := get("echo"); code != http.StatusOK {
			t.Fatalf("GET via proxy: %d", code)
		}
	}
	if code := get("gone"); code != http.StatusBadGateway {
		t.Errorf("GET of a dead instance: %d, want 502", code)
	}

	for _, path := range []string{"/metrics", "/v1/agent/metrics?format=prometheus"} {
		fams := scrapeMetrics(t, a, path)
		wantMetric(t, fams, "shoal_proxy_requests_total", map[string]string{"service": "echo"}, n)
		wantMetric(t, fams, "shoal_proxy_errors_total", map[string]string{"service": "echo"}, 0)
		wantMetric(t, fams, "shoal_proxy_request_duration_seconds", map[string]string{"service": "echo"}, n)
		wantMetric(t, fams, "shoal_proxy_requests_total", map[string]string{"service": "gone"}, 1)
		wantMetric(t, fams, "shoal_proxy_errors_total", map[string]string{"service": "gone"}, 1)
		wantMetric(t, fams, "shoal_proxy_ejections_total", map[string]string{"service": "gone"}, 1)
		h := fams["shoal_proxy_request_duration_seconds"]
		if h.GetType() != dto.MetricType_HISTOGRAM {
			t.Fatalf("latency is a %v, want a histogram", h.GetType())
		}
		for _, m := range h.GetMetric() {
			hist := m.GetHistogram()
			if b := hist.GetBucket(); len(b) == 0 || b[len(b)-1].GetCumulativeCount() > hist.GetSampleCount() {
				t.Errorf("buckets %v inconsistent with count %d", b, hist.GetSampleCount())
			}
			if hist.GetSampleSum() <= 0 && hist.GetSampleCount() > 0 {
				t.Errorf("latency sum %v for %d requests", hist.GetSampleSum(), hist.GetSampleCount())
			}
		}
	}

	// More requests, higher counter: read at scrape time.
	get("echo")
	wantMetric(t, scrapeMetrics(t, a, "/metrics"), "shoal_proxy_requests_total", map[string]string{"service": "echo"}, n+1)
}

// TestAgentMetricsJSON reads /v1/agent/metrics with the official Consul
// client, which decodes Consul's shape.
func TestAgentMetricsJSON(t *testing.T) {
	a := startAgent(t, "n0", nil)
	c, err := consul.NewClient(&consul.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Agent().Metrics()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, g := range info.Gauges {
		if g.Name == "shoal_members" && g.Labels["status"] == "alive" {
			found = g.Value == 1
		}
		if strings.HasPrefix(g.Name, "go_") {
			t.Errorf("JSON summary has runtime gauge %s; want Shoal's own only", g.Name)
		}
	}
	if !found || info.Timestamp == "" {
		t.Errorf("summary %+v: want shoal_members{status=alive} = 1", info)
	}
	if len(info.Counters) == 0 {
		t.Errorf("summary has no counters")
	}
}
