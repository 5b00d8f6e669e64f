package lb

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
)

// Proxy is the local forwarding proxy: one HTTP listener routing by Host and
// one TCP listener per configured upstream, balancing over the View.
// Create it with New, then Start; Shutdown drains it.
type Proxy struct {
	cfg     Config
	view    View
	log     *slog.Logger
	seed    maphash.Seed
	budget  retryBudget
	metrics counters

	// pools is copy-on-write: requests read it without locking.
	pools   atomic.Pointer[map[poolKey]*pool]
	poolsMu sync.Mutex // serializes pool creation
	nobody  *pool      // the empty pool of names the view does not know

	// table is the traffic policy (SetTable); never nil.
	table   atomic.Pointer[Table]
	tableMu sync.Mutex // serializes SetTable
	// rtts holds the latest distances (Config.Distances); nil: none yet.
	rtts atomic.Pointer[map[string]time.Duration]
	// decisions counts traffic by route and by zone, across tables.
	decisions decisionCounters

	transport *http.Transport // upstream connections of the h2c path
	httpLn    net.Listener
	sniffer   *sniffListener
	fastSrv   *fasthttp.Server
	upSrv     *fasthttp.Server // serves HTTP on upstream listeners (see serveUpstreamHTTP)
	upIdle    idleConns        // upSrv's connections between requests
	h2        *http2.Server
	h2Handler http.Handler
	h2Conns   connSet    // h2c client connections
	tunnels   connSet    // CONNECT and Upgrade sessions
	upMu      sync.Mutex // guards upstreams and closed, for AddUpstream
	upstreams []*tcpUpstream
	closed    bool

	stop         chan struct{} // closed by Shutdown: ends the distance refresher
	shutdownOnce sync.Once
	wg           sync.WaitGroup
}

type poolKey struct{ service, subset, tag string }

// New validates cfg and prepares a proxy; nothing listens until Start.
func New(cfg Config, view View) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	p := &Proxy{cfg: cfg, view: view, log: log.With("component", "proxy"), seed: maphash.MakeSeed(), stop: make(chan struct{})}
	p.table.Store(&Table{})
	p.budget.ratio, p.budget.minPerSec = cfg.RetryBudget, int64(cfg.MinRetriesPerSecond)
	empty := make(map[poolKey]*pool)
	p.pools.Store(&empty)
	p.nobody = newPool(p, "", "", "")
	dialer := upstreamDialer(cfg.ConnectTimeout)
	p.transport = &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		MaxIdleConns:          0, // no global cap; per host below
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: cfg.TryTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true, // pass bodies through as they are
		ForceAttemptHTTP2:     false,
		WriteBufferSize:       32 << 10,
		ReadBufferSize:        32 << 10,
	}
	return p, nil
}

// Start binds the HTTP listener and every upstream listener, failing at
// once when an address is taken, and starts serving.
func (p *Proxy) Start() error {
	if p.cfg.HTTPAddr != "" {
		ln, err := net.Listen("tcp", p.cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("proxy: %w", err)
		}
		p.httpLn = ln
	}
	for name, addr := range p.cfg.Upstreams {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			p.closeListeners()
			return fmt.Errorf("proxy: upstream %s: %w", name, err)
		}
		p.upstreams = append(p.upstreams, &tcpUpstream{service: name, addr: addr, ln: ln})
	}
	rp := &httputil.ReverseProxy{
		Rewrite:      p.rewrite,
		Transport:    &forwarder{p: p},
		ErrorHandler: p.proxyError,
		BufferPool:   newBufferPool(),
		ErrorLog:     slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
	p.h2 = &http2.Server{}
	p.h2Handler = &httpHandler{p: p, rp: rp}
	// The shared listener's server, and a second one for the upstream
	// listeners of services that speak HTTP, which hands it connections
	// one by one (and closes them itself at shutdown).
	p.fastSrv, p.upSrv = p.newFastServer(), p.newFastServer()
	p.upSrv.ConnState = p.upIdle.track
	if p.httpLn != nil {
		p.sniffer = newSniffListener(p.httpLn, p.serveH2)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			if err := p.fastSrv.Serve(p.sniffer); err != nil && !errors.Is(err, net.ErrClosed) {
				p.log.Error("http proxy stopped", "err", err)
			}
		}()
	}
	for _, u := range p.upstreams {
		p.wg.Add(1)
		go p.serveTCP(u)
	}
	if p.cfg.Distances != nil {
		p.wg.Add(1)
		go p.refreshDistances()
	}
	p.log.Info("proxy started", "http", p.HTTPAddr(), "upstreams", len(p.upstreams))
	return nil
}

// newFastServer returns the HTTP/1.x server of the proxy's listeners.
func (p *Proxy) newFastServer() *fasthttp.Server {
	return &fasthttp.Server{
		Handler:                       p.serveFast,
		Name:                          "",
		NoDefaultServerHeader:         true,
		NoDefaultDate:                 true,
		NoDefaultContentType:          true,
		DisableHeaderNamesNormalizing: true,
		DisablePreParseMultipartForm:  true,
		StreamRequestBody:             true,
		ReadBufferSize:                16 << 10,
		IdleTimeout:                   2 * time.Minute,
		CloseOnShutdown:               true,
		Logger:                        slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
}

func (p *Proxy) closeListeners() {
	if p.httpLn != nil {
		p.httpLn.Close()
	}
	for _, u := range p.upstreams {
		u.ln.Close()
	}
}

// HTTPAddr is the HTTP proxy's address, or "" when disabled.
func (p *Proxy) HTTPAddr() string {
	if p.httpLn == nil {
		return ""
	}
	return p.httpLn.Addr().String()
}

// UpstreamAddr is the address of the TCP listener of a service, or "".
func (p *Proxy) UpstreamAddr(service string) string {
	p.upMu.Lock()
	defer p.upMu.Unlock()
	for _, u := range p.upstreams {
		if u.service == service {
			return u.ln.Addr().String()
		}
	}
	return ""
}

// Shutdown stops accepting, lets in-flight requests and connections finish
// until ctx is done (or ShutdownTimeout passes), then closes what remains.
func (p *Proxy) Shutdown(ctx context.Context) error {
	var err error
	p.shutdownOnce.Do(func() {
		if p.cfg.ShutdownTimeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, p.cfg.ShutdownTimeout)
			defer cancel()
		}
		close(p.stop)
		p.upMu.Lock()
		p.closed = true
		upstreams := slices.Clone(p.upstreams)
		p.upMu.Unlock()
		for _, u := range upstreams {
			u.ln.Close()
		}
		// HTTP connections of upstream listeners that wait for a request
		// go now; busy ones close after their answer (serveFast).
		p.upIdle.closeAll()
		if p.sniffer != nil {
			err = p.fastSrv.ShutdownWithContext(ctx)
			p.sniffer.Close()
		}
		// The accept loops add sessions; they must be gone before the
		// drains wait, or a late Add races with Wait and escapes it.
		p.wg.Wait()
		p.h2Conns.drain(ctx)
		p.tunnels.drain(ctx)
		for _, u := range upstreams {
			u.sessions.drain(ctx)
		}
		p.transport.CloseIdleConnections()
	})
	return err
}

// serveH2 serves one h2c client connection until it ends.
func (p *Proxy) serveH2(c net.Conn) {
	if !p.h2Conns.begin(c) {
		return
	}
	defer p.h2Conns.end(c)
	p.h2.ServeConn(c, &http2.ServeConnOpts{Handler: p.h2Handler})
}

// pool returns the pool of a service (and tag), creating it on first use
// of a service the view knows. Names the view does not know share one empty
// pool, so that clients asking for ever new names leave nothing behind.
func (p *Proxy) pool(service, tag string) *pool {
	if pl := (*p.pools.Load())[poolKey{service, "", tag}]; pl != nil {
		return pl
	}
	if len(p.view.Instances(service)) == 0 {
		return p.nobody
	}
	return p.ensurePool(service, "", tag)
}

// targetPool returns the pool of a target of the traffic policy. Targets
// are as many as the configuration makes, so their pools are made at once.
func (p *Proxy) targetPool(t *target) *pool {
	if pl := (*p.pools.Load())[poolKey{t.Service, t.Subset, ""}]; pl != nil {
		return pl
	}
	return p.ensurePool(t.Service, t.Subset, "")
}

// ensurePool returns the pool of a service (or its subset, or tag),
// creating it if needed.
func (p *Proxy) ensurePool(service, subset, tag string) *pool {
	k := poolKey{service, subset, tag}
	if pl := (*p.pools.Load())[k]; pl != nil {
		return pl
	}
	p.poolsMu.Lock()
	defer p.poolsMu.Unlock()
	cur := *p.pools.Load()
	if pl := cur[k]; pl != nil {
		return pl
	}
	next := make(map[poolKey]*pool, len(cur)+1)
	for kk, v := range cur {
		next[kk] = v
	}
	// Keys may come from request buffers (see unsafeString): clone them.
	service, tag = strings.Clone(service), strings.Clone(tag)
	k = poolKey{service, subset, tag}
	pl := newPool(p, service, subset, tag)
	next[k] = pl
	p.pools.Store(&next)
	return pl
}

// policyName chooses the policy of a service: this agent's configuration
// first, then the traffic policy's resolver (or service defaults), then
// the instances' Meta, then the default.
func (p *Proxy) policyName(service string, settings *target, metaPolicy, metaHashKey string) (string, HashSource) {
	name := p.cfg.Policy
	if metaPolicy != "" && ValidPolicy(metaPolicy) {
		name = metaPolicy
	}
	if settings != nil && settings.Policy != "" {
		name = settings.Policy
	}
	if cp, ok := p.cfg.Policies[service]; ok {
		name = cp
	}
	key := p.cfg.HashKey
	if _, err := ParseHashSource(metaHashKey); metaHashKey != "" && err == nil {
		key = metaHashKey
	}
	if settings != nil && settings.HashKey != "" {
		key = settings.HashKey
	}
	src, err := ParseHashSource(key)
	if err != nil { // unreachable: keys are validated
		src = HashSource{Kind: "ip"}
	}
	return name, src
}

// SetTable installs a new traffic policy and takes ownership of t.
// Requests already routed finish on the old one; every pool picks up the
// new settings at its next request.
func (p *Proxy) SetTable(t *Table) {
	if t == nil {
		t = &Table{}
	}
	for _, c := range t.chains {
		for _, r := range c.routes {
			r.stats = p.decisions.route(c.service, r.name)
		}
		c.def.stats = p.decisions.route(c.service, c.def.name)
	}
	p.tableMu.Lock()
	defer p.tableMu.Unlock()
	t.gen = p.table.Load().gen + 1
	p.table.Store(t)
}

// refreshDistances takes the distances to other nodes every
// DistanceRefresh, hands them to every endpoint and redraws the latency
// policies' tables.
func (p *Proxy) refreshDistances() {
	defer p.wg.Done()
	tick := time.NewTicker(p.cfg.DistanceRefresh)
	defer tick.Stop()
	for {
		rtts := p.cfg.Distances.RTTs()
		p.rtts.Store(&rtts)
		for _, pl := range *p.pools.Load() {
			pl.applyDistances(rtts)
		}
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
	}
}

// Stats are the proxy's counters since start.
type Stats struct {
	Requests, Errors, Retries, Ejections, Connections uint64
}

type counters struct {
	requests, errors, retries, ejections, connections atomic.Uint64
	overhead                                          histogram // see Overhead
}

// Stats returns the proxy's counters.
func (p *Proxy) Stats() Stats {
	m := &p.metrics
	return Stats{m.requests.Load(), m.errors.Load(), m.retries.Load(), m.ejections.Load(), m.connections.Load()}
}

// retryBudget allows retries up to ratio × the requests of the current and
// previous second, plus minPerSec, so that a failing pool cannot turn
// retries into a storm.
type retryBudget struct {
	ratio     float64
	minPerSec int64

	second   atomic.Int64
	requests atomic.Int64
	prevReqs atomic.Int64
	retries  atomic.Int64
}

func (b *retryBudget) roll(now int64) {
	sec := now / int64(time.Second)
	if old := b.second.Load(); old != sec && b.second.CompareAndSwap(old, sec) {
		b.prevReqs.Store(b.requests.Swap(0))
		b.retries.Store(0)
	}
}

func (b *retryBudget) request(now int64) {
	b.roll(now)
	b.requests.Add(1)
}

// allow takes a retry from the budget if one is left.
func (b *retryBudget) allow(now int64) bool {
	b.roll(now)
	reqs := max(b.requests.Load(), b.prevReqs.Load())
	limit := b.minPerSec + int64(b.ratio*float64(reqs))
	if b.retries.Add(1) > limit {
		b.retries.Add(-1)
		return false
	}
	return true
}

// bufferPool recycles the copy buffers of proxied bodies.
type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

func (b *bufferPool) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b *bufferPool) Put(x []byte) { b.p.Put(&x) }
