package lb

import (
	"cmp"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// latencyBuckets are the upper bounds, in seconds, of the proxy's latency
// histograms: Prometheus's default buckets with a finer low end, since a
// proxied request on loopback takes well under a millisecond and the
// proxy's own share of it tens of microseconds. Never modified.
var latencyBuckets = [...]float64{
	.00001, .000025, .00005, .0001, .00025,
	.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10,
}

// ServiceStats is the proxy's traffic to one service since start, summed
// over the service's pools (one per tag routed to).
type ServiceStats struct {
	Service string
	// Requests counts HTTP requests routed to the service.
	Requests uint64
	// Errors counts requests and connections the proxy answered itself
	// because no instance could take them (no instance, connect failures,
	// timeouts, resets). An instance's own 5xx answers are not errors here.
	Errors uint64
	// Retries counts tries on another instance after a failed one.
	Retries uint64
	// Ejections counts instances taken out by passive health.
	Ejections uint64
	// Connections counts TCP upstream connections accepted.
	Connections uint64
	// Latency is the time from a request's arrival to its instance's
	// response headers, retries included, of requests that got an answer.
	Latency Histogram
}

// Histogram is a latency distribution over fixed buckets (see Cumulative).
type Histogram struct {
	// Counts[i] is how many observations fell in bucket i, not cumulative;
	// the last element counts those above every bound. Cumulative pairs
	// them with their bounds.
	Counts [len(latencyBuckets) + 1]uint64
	// Count is the number of observations; Sum their total.
	Count uint64
	Sum   time.Duration
}

// poolStats counts a pool's traffic. It is lock-free: the request path
// adds to it with a few atomic operations.
type poolStats struct {
	requests, errors, retries, ejections, connections, timeouts atomic.Uint64
	latency                                                     histogram
}

// histogram is the lock-free accumulator behind Histogram.
type histogram struct {
	counts [len(latencyBuckets) + 1]atomic.Uint64
	sum    atomic.Int64 // nanoseconds
}

// observe adds one observation.
func (h *histogram) observe(d time.Duration) {
	s := d.Seconds()
	i := sort.SearchFloat64s(latencyBuckets[:], s) // first bound >= s
	h.counts[i].Add(1)
	h.sum.Add(int64(d))
}

// addTo adds the histogram's current values to out. Count is taken from
// the buckets so the result is self-consistent even while requests run.
func (h *histogram) addTo(out *Histogram) {
	for i := range h.counts {
		n := h.counts[i].Load()
		out.Counts[i] += n
		out.Count += n
	}
	out.Sum += time.Duration(h.sum.Load())
}

// Overhead returns the distribution of the proxy's own time per HTTP/1
// request: from the handler's start to its end, less the time spent in
// tries (connecting, writing the request, waiting for the instance's
// response headers). It leaves out fasthttp's reading of the request and
// writing of the response, which are the same syscalls any proxy makes;
// what it shows is the time the request waited on the proxy itself:
// routing, picking, header rewrites, and being descheduled in between.
func (p *Proxy) Overhead() Histogram {
	var h Histogram
	p.metrics.overhead.addTo(&h)
	return h
}

// ServiceStats returns the traffic of every service the proxy routed to,
// ordered by service name.
func (p *Proxy) ServiceStats() []ServiceStats {
	by := make(map[string]*ServiceStats)
	for k, pl := range *p.pools.Load() {
		s := by[k.service]
		if s == nil {
			s = &ServiceStats{Service: k.service}
			by[k.service] = s
		}
		st := &pl.stats
		s.Requests += st.requests.Load()
		s.Errors += st.errors.Load()
		s.Retries += st.retries.Load()
		s.Ejections += st.ejections.Load()
		s.Connections += st.connections.Load()
		st.latency.addTo(&s.Latency)
	}
	out := make([]ServiceStats, 0, len(by))
	for _, s := range by {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Service < out[j].Service })
	return out
}

// Cumulative returns the histogram's bucket counts as Prometheus wants
// them: bound in seconds → observations at or below it.
func (h *Histogram) Cumulative() map[float64]uint64 {
	out := make(map[float64]uint64, len(latencyBuckets))
	var n uint64
	for i, b := range latencyBuckets {
		n += h.Counts[i]
		out[b] = n
	}
	return out
}

// DecisionStats is the traffic that took one decision: a route of a
// service's router, a subset of its resolver, or the zone of the instance
// that served it.
type DecisionStats struct {
	Service string
	// Name is the route ("0", "1", … in the router's order, "default" for
	// requests that matched none), the subset, or the zone ("" for
	// instances on nodes without one).
	Name string
	// Requests counts requests and connections that were sent there (the
	// last try's), Retries the tries after a failed one, Timeouts the
	// requests that ran out of time.
	Requests, Retries, Timeouts uint64
}

// decisionStats counts the traffic of one decision.
type decisionStats struct {
	requests, retries, timeouts atomic.Uint64
}

func (d *decisionStats) export(service, name string) DecisionStats {
	return DecisionStats{Service: service, Name: name, Requests: d.requests.Load(),
		Retries: d.retries.Load(), Timeouts: d.timeouts.Load()}
}

// decisionCounters holds the counters of routes and zones. They outlive
// the tables and snapshots that point at them, so that a counter never
// goes back when the configuration changes.
type decisionCounters struct {
	mu     sync.Mutex // guards both maps; taken when tables and snapshots are built
	routes map[[2]string]*decisionStats
	zones  map[[2]string]*decisionStats
}

func (d *decisionCounters) get(m *map[[2]string]*decisionStats, service, name string) *decisionStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	if *m == nil {
		*m = make(map[[2]string]*decisionStats)
	}
	k := [2]string{service, name}
	if s := (*m)[k]; s != nil {
		return s
	}
	s := new(decisionStats)
	(*m)[k] = s
	return s
}

func (d *decisionCounters) route(service, name string) *decisionStats {
	return d.get(&d.routes, service, name)
}

func (p *Proxy) zoneStats(service, zone string) *decisionStats {
	return p.decisions.get(&p.decisions.zones, service, zone)
}

func (d *decisionCounters) export(m *map[[2]string]*decisionStats) []DecisionStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]DecisionStats, 0, len(*m))
	for k, s := range *m {
		out = append(out, s.export(k[0], k[1]))
	}
	sortDecisions(out)
	return out
}

func sortDecisions(s []DecisionStats) {
	slices.SortFunc(s, func(a, b DecisionStats) int {
		return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(a.Name, b.Name))
	})
}

// RouteStats returns the traffic of every route of every router the proxy
// has applied, ordered by service and route.
func (p *Proxy) RouteStats() []DecisionStats { return p.decisions.export(&p.decisions.routes) }

// ZoneStats returns the traffic by service and zone of the instance that
// took it.
func (p *Proxy) ZoneStats() []DecisionStats { return p.decisions.export(&p.decisions.zones) }

// SubsetStats returns the traffic of every resolver subset requests were
// sent to, ordered by service and subset.
func (p *Proxy) SubsetStats() []DecisionStats {
	var out []DecisionStats
	for k, pl := range *p.pools.Load() {
		if k.subset == "" {
			continue
		}
		st := &pl.stats
		out = append(out, DecisionStats{Service: k.service, Name: k.subset, Requests: st.requests.Load(),
			Retries: st.retries.Load(), Timeouts: st.timeouts.Load()})
	}
	sortDecisions(out)
	return out
}
