package lb

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"
)

// The HTTP/1.x data path runs on fasthttp: its request parsing and upstream
// connection pool allocate nothing per request, which is what it takes to
// keep pace with HAProxy (net/http's ReverseProxy manages about a third).
// HTTP/2 cleartext clients are sniffed off the same listener and served by
// the net/http path in http.go.

// maxReplayableBody is the largest request body kept in memory so that it
// can be sent again on another connection.
const maxReplayableBody = 64 << 10

// fastClient returns the endpoint's pool of upstream connections that
// carry identity on the mesh hop ("": the node's, the common case, kept in
// a field of its own). Only its pool and dialing are used: the exchange is
// roundTrip's (upstream_http1.go).
func (e *endpoint) fastClient(identity string) *fasthttp.HostClient {
	if identity == "" {
		if hc := e.fc.Load(); hc != nil {
			return hc
		}
	} else if hc, ok := e.fcByIdentity.Load(identity); ok {
		return hc.(*fasthttp.HostClient)
	}
	idle := 90 * time.Second
	if e.via != "" {
		idle = meshIdleTimeout
	}
	hc := &fasthttp.HostClient{
		Addr: e.addr,
		DialTimeout: func(string, time.Duration) (net.Conn, error) {
			c, err := e.dial(identity)
			if err != nil {
				return nil, err
			}
			return newStaleGuardConn(c), nil
		},
		MaxConns:            1 << 16,
		MaxIdleConnDuration: idle,
		ReadBufferSize:      16 << 10,
		WriteBufferSize:     16 << 10,
	}
	if identity != "" {
		actual, _ := e.fcByIdentity.LoadOrStore(identity, hc)
		return actual.(*fasthttp.HostClient)
	}
	if e.fc.CompareAndSwap(nil, hc) {
		return hc
	}
	return e.fc.Load()
}

// serveFast handles one HTTP/1.x request.
func (p *Proxy) serveFast(ctx *fasthttp.RequestCtx) {
	p.metrics.requests.Add(1)
	now := time.Now()
	p.budget.request(now.UnixNano())
	host := ctx.Host()
	service, tag, ok := route(unsafeString(host), p.cfg.Domain)
	identity := ""
	if uc, isUpstream := ctx.Conn().(*upstreamConn); isUpstream {
		// A service's own upstream listener: the destination is fixed,
		// and the caller is that listener's service.
		service, tag, ok, identity = uc.u.service, "", true, uc.u.identity
		if p.upIdle.closing() {
			ctx.SetConnectionClose()
		}
	}
	if !ok {
		p.metrics.errors.Add(1)
		ctx.Error(fmt.Sprintf("shoal: %q is not a service address: want NAME, NAME.service.%s or TAG.NAME.service.%s\n",
			host, p.cfg.Domain, p.cfg.Domain), fasthttp.StatusServiceUnavailable)
		return
	}
	req := &ctx.Request
	d := p.decideFast(req, service, tag)
	pl := d.pool
	pl.stats.requests.Add(1)
	if d.route != nil {
		service = pl.service // the target's: a split, redirect or failover may name another
	}
	if ctx.IsConnect() || req.Header.ConnectionUpgrade() {
		p.tunnel(ctx, pl, service, tag, identity)
		return
	}
	c := p.newCall(pl, service, tag, now)
	defer c.release()
	if len(c.snap.all.eps) == 0 {
		p.fastError(ctx, pl, c.noInstance())
		return
	}
	stripHopRequest(&req.Header)
	c.scratch = setForwarded(&req.Header, ctx.RemoteAddr(), host, c.scratch)
	if d.route != nil {
		c.follow(&d)
		c.scratch = d.applyFast(req, c.scratch)
	}
	if _, isHash := c.snap.all.policy.(*Hash); isHash {
		c.key = fastHashKey(ctx, c.snap.hashKey)
	}
	if req.IsBodyStream() {
		// A small body of known length is read in full, so that the request
		// can be sent again after a stale connection or a refused connect;
		// larger and chunked bodies stream through unbuffered.
		if n := req.Header.ContentLength(); n >= 0 && n <= maxReplayableBody {
			body := make([]byte, n)
			if _, err := io.ReadFull(req.BodyStream(), body); err != nil {
				p.metrics.errors.Add(1)
				pl.stats.errors.Add(1)
				ctx.Error("shoal: incomplete request body: "+err.Error()+"\n", fasthttp.StatusBadRequest)
				return
			}
			req.SetBody(body)
		}
	}
	c.idempotent = isIdempotentMethod(unsafeString(req.Header.Method())) || (!req.IsBodyStream() && len(req.Body()) == 0)
	c.fx = fastExchange{ctx: ctx, identity: identity}
	e, err := p.forward(c, &c.fx)
	if err != nil {
		p.fastError(ctx, pl, err)
		return
	}
	// The response body streams to the client after this handler returns;
	// the request counts as in flight until its headers are back.
	e.inflight.Add(-1)
	stripHopResponse(&ctx.Response.Header)
	if d.route != nil {
		d.route.respOps.apply(&ctx.Response.Header)
		d.leg.respOps.apply(&ctx.Response.Header)
	}
	if p.cfg.DebugHeaders {
		setDebugHeaders(&ctx.Response.Header, e, d)
	}
	p.metrics.overhead.observe(time.Since(now) - c.inTries)
}

// decideFast applies the traffic policy of the service to an HTTP/1
// request (a name with a tag goes straight to the tag's pool).
func (p *Proxy) decideFast(req *fasthttp.Request, service, tag string) decision {
	if ch := p.table.Load().chainOf(service); ch != nil && tag == "" {
		rt := ch.match((*fastRequest)(req))
		return p.decide(rt)
	}
	return decision{pool: p.pool(service, tag)}
}

// fastExchange is the HTTP/1.x side of a call: the request context and
// the identity its tries carry on the mesh hop. It lives in the pooled
// call, so that handing it to the request loop allocates nothing.
type fastExchange struct {
	ctx      *fasthttp.RequestCtx
	identity string
}

func (x *fastExchange) try(e *endpoint, deadline time.Time) (int, error) {
	resp := &x.ctx.Response
	resp.Reset()
	if err := e.roundTrip(x.identity, &x.ctx.Request, resp, deadline); err != nil {
		return 0, err
	}
	return resp.StatusCode(), nil
}

// bodyTouched: the connect comes before any of the body is sent.
func (x *fastExchange) bodyTouched() bool { return false }

// replayable: small bodies were read into memory (see serveFast).
func (x *fastExchange) replayable() bool { return !x.ctx.Request.IsBodyStream() }

// discard drops the answer, handing its connection back (or closing it
// when its body was not read).
func (x *fastExchange) discard() { x.ctx.Response.Reset() }

// fastError answers a request that could not be forwarded, in one line,
// and counts it against the proxy and the pool.
func (p *Proxy) fastError(ctx *fasthttp.RequestCtx, pl *pool, err error) {
	p.metrics.errors.Add(1)
	pl.stats.errors.Add(1)
	p.log.Debug("proxy error", "host", string(ctx.Host()), "err", err)
	msg := bytes.ReplaceAll([]byte("shoal: "+err.Error()), []byte("\n"), []byte(" "))
	ctx.Response.Reset()
	ctx.Error(string(msg)+"\n", statusOf(err))
}

func fastHashKey(ctx *fasthttp.RequestCtx, src HashSource) string {
	switch src.Kind {
	case "header":
		v, _ := peekHeader(&ctx.Request.Header, src.Name)
		return string(v)
	case "cookie":
		return string(ctx.Request.Header.Cookie(src.Name))
	}
	return ctx.RemoteIP().String()
}

// tunnel serves CONNECT and Upgrade (websocket) requests: it connects to an
// instance, passes an upgrade request on as it is, and then copies bytes
// both ways; the instance's own 101 answer goes straight to the client.
func (p *Proxy) tunnel(ctx *fasthttp.RequestCtx, pl *pool, service, tag, identity string) {
	up, e, err := p.connectAs(pl, service, tag, ctx.RemoteIP().String(), identity, nil)
	if err != nil {
		p.fastError(ctx, pl, err)
		return
	}
	connect := ctx.IsConnect()
	if !connect {
		h := &ctx.Request.Header
		for _, name := range upgradeHopHeaders {
			h.Del(name)
		}
		setForwarded(h, ctx.RemoteAddr(), ctx.Host(), nil)
		w := bufio.NewWriter(up)
		if err := ctx.Request.Write(w); err == nil {
			err = w.Flush()
		}
		if err != nil {
			up.Close()
			e.inflight.Add(-1)
			p.fastError(ctx, pl, err)
			return
		}
	}
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(hijacked net.Conn) {
		defer e.inflight.Add(-1)
		client := ownHijacked(hijacked)
		if !p.tunnels.begin(client, up) {
			return // shutting down: both closed
		}
		defer p.tunnels.end(client, up)
		if connect {
			if _, err := client.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
				up.Close()
				return
			}
		}
		pipe(client, up)
	})
}

// unsafeString views b as a string without copying, for lookups only: the
// result must not outlive the request (pool keys are cloned).
func unsafeString(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// hijackedConn reads through fasthttp's hijacked connection (which holds
// any bytes the client sent ahead) but closes the real one: fasthttp's own
// Close is a no-op, which would leave a tunnel's other half, or shutdown,
// waiting on the client forever.
type hijackedConn struct {
	net.Conn
	raw net.Conn
}

func ownHijacked(c net.Conn) net.Conn {
	u, ok := c.(interface{ UnsafeConn() net.Conn })
	if !ok {
		return c
	}
	return &hijackedConn{Conn: c, raw: u.UnsafeConn()}
}

func (c *hijackedConn) Close() error { return c.raw.Close() }

// CloseWrite half-closes the client side, for tunnels.
func (c *hijackedConn) CloseWrite() error {
	if cw, ok := c.raw.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.raw.Close()
}
