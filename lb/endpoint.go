package lb

import (
	"math"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// endpoint is the proxy's state for one instance: what the view says about
// it plus what only the proxy knows. It outlives view refreshes.
type endpoint struct {
	id   string
	addr string
	// via is the agent to reach the instance through (Instance.Via), with
	// mesh; "" connects directly.
	via  string
	mesh Mesh
	// h2t is the h2c transport of an instance reached through the mesh;
	// h2tByIdentity those that carry a service's identity.
	h2t           atomic.Pointer[http.Transport]
	h2tByIdentity sync.Map // identity → *http.Transport
	// connectTimeout bounds a connect to the instance.
	connectTimeout time.Duration
	// fc is the endpoint's pool of upstream HTTP/1.1 connections, made on
	// first use; fcByIdentity holds the pools of connections that carry a
	// service's identity on the mesh hop (from its upstream listener).
	fc           atomic.Pointer[fasthttp.HostClient]
	fcByIdentity sync.Map // identity → *fasthttp.HostClient
	// weight changes only under the pool's refresh lock, read atomically.
	weight atomic.Int64
	// node and zone are the instance's node and that node's zone (another
	// zone makes another endpoint); zstats counts traffic by zone. Set
	// before the endpoint is published, never changed.
	node, zone string
	zstats     *decisionStats
	// rtt is the estimated round-trip time to the instance's node in
	// nanoseconds, from network coordinates; 0: unknown.
	rtt atomic.Int64

	inflight atomic.Int64
	requests atomic.Uint64 // served, for metrics and tests

	// ewma is the peak-EWMA round-trip latency in nanoseconds, as float64
	// bits, for the ewma policy; typical is a plain EWMA of the same
	// samples, for locality and the latency policy (expectedLatency says
	// why); stamp is when they were last updated (Unix ns).
	ewma    atomic.Uint64
	typical atomic.Uint64
	stamp   atomic.Int64

	// ejectedUntil is the Unix ns time until which passive health keeps the
	// endpoint out of the pool; 0 when it is in.
	ejectedUntil atomic.Int64

	// failures counts consecutive failures; any success resets it.
	failures atomic.Int64

	mu        sync.Mutex // guards the ejection bookkeeping below
	ejects    int        // consecutive ejections, for the backoff
	lastEject time.Time
}

func newEndpoint(in Instance, connectTimeout time.Duration, mesh Mesh) *endpoint {
	e := &endpoint{id: in.ID, addr: in.Addr, connectTimeout: connectTimeout, node: in.Node, zone: in.Zone}
	if in.Via != "" && mesh != nil {
		e.via, e.mesh = in.Via, mesh
	}
	e.weight.Store(int64(max(in.Weight, 1)))
	return e
}

// available reports whether the endpoint may take a new request: not
// ejected and under the per-instance concurrency limit (0: no limit).
func (e *endpoint) available(now int64, maxInflight int64) bool {
	if until := e.ejectedUntil.Load(); until != 0 && now < until {
		return false
	}
	return maxInflight <= 0 || e.inflight.Load() < maxInflight
}

// ewmaDecay is the time constant of the peak-EWMA; typicalDecay that of
// the plain average.
const (
	ewmaDecay    = float64(10 * time.Second)
	typicalDecay = float64(time.Second)
)

// observeLatency folds a round-trip time into the peak-EWMA, where a
// slower sample is taken at once and faster ones decay in over ewmaDecay,
// and into the typical latency, where every sample decays in over
// typicalDecay.
func (e *endpoint) observeLatency(rtt time.Duration, now int64) {
	sample := float64(rtt)
	last := e.stamp.Swap(now)
	gap := float64(max(now-last, 0)) // concurrent answers may come in out of order

	prev := math.Float64frombits(e.ewma.Load())
	next := sample
	if prev != 0 && sample < prev {
		w := math.Exp(-gap / ewmaDecay)
		next = prev*w + sample*(1-w)
	}
	e.ewma.Store(math.Float64bits(next))

	next = sample
	if prev := math.Float64frombits(e.typical.Load()); prev != 0 {
		w := math.Exp(-gap / typicalDecay)
		next = prev*w + sample*(1-w)
	}
	e.typical.Store(math.Float64bits(next))
}

// cost is the peak-EWMA load estimate used by the ewma policy: latency
// times (requests in flight + 1), divided by weight.
func (e *endpoint) cost() float64 {
	lat := math.Float64frombits(e.ewma.Load())
	if lat == 0 {
		lat = float64(time.Millisecond) // unknown: a neutral guess so new endpoints get tried
	}
	return lat * float64(e.inflight.Load()+1) / float64(e.weight.Load())
}

// atomicSlice holds a []float64 that is replaced whole.
type atomicSlice struct{ p atomic.Pointer[[]float64] }

func (a *atomicSlice) load() []float64 {
	if s := a.p.Load(); s != nil {
		return *s
	}
	return nil
}

func (a *atomicSlice) store(s []float64) { a.p.Store(&s) }

func randFloat() float64 { return rand.Float64() }
