package node

import (
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// metrics is an agent's Prometheus registry: its own, never the global
// default, so that agents in one process do not mix. Everything Shoal
// exports is read from the live state at scrape time by agentCollector;
// nothing on the request paths touches Prometheus.
type metrics struct {
	reg  *prometheus.Registry
	prom http.Handler
}

func newMetrics(a *Agent) *metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		// The scheduler's latencies and GC pauses tell where a slow
		// request's time went when the proxy's own code did not take it.
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
			collectors.MetricsGC, collectors.MetricsScheduler)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newAgentCollector(a),
	)
	return &metrics{
		reg: reg,
		prom: promhttp.HandlerFor(reg, promhttp.HandlerOpts{
			ErrorHandling: promhttp.ContinueOnError, // a partial scrape beats none
		}),
	}
}

// servePrometheus serves GET /metrics in Prometheus's exposition format.
func (m *metrics) servePrometheus(w http.ResponseWriter, r *http.Request) {
	m.prom.ServeHTTP(w, r)
}

// serveAgentMetrics serves GET /v1/agent/metrics: Prometheus's format with
// ?format=prometheus, as Consul, else a JSON summary of Shoal's own
// metrics shaped like Consul's (Gauges, Counters, Samples).
func (m *metrics) serveAgentMetrics(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("format") == "prometheus" {
		m.prom.ServeHTTP(w, r)
		return
	}
	families, err := m.reg.Gather()
	if err != nil && len(families) == 0 {
		writeError(w, http.StatusInternalServerError, "gather metrics: %v", err)
		return
	}
	writeJSON(w, r, summarize(families, time.Now()))
}

// MetricsSummary is the JSON of /v1/agent/metrics, in the shape of
// Consul's (github.com/hashicorp/consul/api.MetricsInfo).
type MetricsSummary struct {
	Timestamp string
	Gauges    []GaugeValue
	Points    []struct{}
	Counters  []SampledValue
	Samples   []SampledValue
}

// GaugeValue is a gauge's current value.
type GaugeValue struct {
	Name   string
	Value  float64
	Labels map[string]string
}

// SampledValue is a counter (Count and Sum: its total) or a histogram
// (Count observations adding up to Sum).
type SampledValue struct {
	Name   string
	Count  uint64
	Sum    float64
	Mean   float64
	Labels map[string]string
}

// summarize turns Shoal's families (shoal_*) into the JSON summary.
func summarize(families []*dto.MetricFamily, now time.Time) MetricsSummary {
	out := MetricsSummary{
		Timestamp: now.UTC().Format("2006-01-02 15:04:05 -0700 MST"),
		Gauges:    []GaugeValue{}, Points: []struct{}{}, Counters: []SampledValue{}, Samples: []SampledValue{},
	}
	for _, f := range families {
		name := f.GetName()
		if !strings.HasPrefix(name, "shoal_") {
			continue
		}
		for _, mt := range f.GetMetric() {
			labels := make(map[string]string, len(mt.GetLabel()))
			for _, l := range mt.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			switch f.GetType() {
			case dto.MetricType_GAUGE:
				out.Gauges = append(out.Gauges, GaugeValue{Name: name, Value: mt.GetGauge().GetValue(), Labels: labels})
			case dto.MetricType_COUNTER:
				v := mt.GetCounter().GetValue()
				out.Counters = append(out.Counters, SampledValue{Name: name, Count: uint64(v), Sum: v, Mean: v, Labels: labels})
			case dto.MetricType_HISTOGRAM:
				h := mt.GetHistogram()
				s := SampledValue{Name: name, Count: h.GetSampleCount(), Sum: h.GetSampleSum(), Labels: labels}
				if s.Count > 0 {
					s.Mean = s.Sum / float64(s.Count)
				}
				out.Samples = append(out.Samples, s)
			}
		}
	}
	return out
}
