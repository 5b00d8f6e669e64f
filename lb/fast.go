package lb

import (
	"bufio"
	"bytes"
	"errors"
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

// dialError marks a failure to connect: nothing of the request was sent, so
// it is always safe to try another instance.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// hopHeaders are removed in both directions (RFC 9110, section 7.6.1), with
// the headers named by Connection.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Upgrade",
}

// fastClient returns the endpoint's upstream connection pool.
func (e *endpoint) fastClient(p *Proxy) *fasthttp.HostClient {
	if hc := e.fc.Load(); hc != nil {
		return hc
	}
	dialer := upstreamDialer(p.cfg.ConnectTimeout)
	hc := &fasthttp.HostClient{
		Addr: e.addr,
		DialTimeout: func(addr string, _ time.Duration) (net.Conn, error) {
			c, err := dialer.Dial("tcp", addr)
			if err != nil {
				return nil, &dialError{err}
			}
			return newStaleGuardConn(c), nil
		},
		MaxConns:                      1 << 16,
		MaxIdleConnDuration:           90 * time.Second,
		MaxIdemponentCallAttempts:     2,
		RetryIfErr:                    staleConnRetry,
		StreamResponseBody:            true,
		DisableHeaderNamesNormalizing: true,
		DisablePathNormalizing:        true,
		NoDefaultUserAgentHeader:      true,
		ReadBufferSize:                16 << 10,
		WriteBufferSize:               16 << 10,
	}
	if e.fc.CompareAndSwap(nil, hc) {
		return hc
	}
	return e.fc.Load()
}

// staleConnRetry sends a request once more, on a fresh connection to the
// same instance, when its pooled keep-alive connection turned out to be
// closed by the instance (see staleconn.go): nothing was sent, so any
// request may go again, and it is no failure of the instance. Other errors
// go back to the proxy, which retries on another instance when it may.
func staleConnRetry(req *fasthttp.Request, attempts int, err error) (bool, bool) {
	if attempts >= 2 || req.IsBodyStream() {
		return false, false
	}
	return false, isStale(err)
}

// serveFast handles one HTTP/1.x request.
func (p *Proxy) serveFast(ctx *fasthttp.RequestCtx) {
	p.metrics.requests.Add(1)
	now := time.Now()
	p.budget.request(now.UnixNano())
	host := ctx.Host()
	service, tag, ok := route(unsafeString(host), p.cfg.Domain)
	if !ok {
		p.metrics.errors.Add(1)
		ctx.Error(fmt.Sprintf("shoal: %q is not a service address: want NAME, NAME.service.%s or TAG.NAME.service.%s\n",
			host, p.cfg.Domain, p.cfg.Domain), fasthttp.StatusServiceUnavailable)
		return
	}
	pl := p.pool(service, tag)
	pl.stats.requests.Add(1)
	req := &ctx.Request
	if ctx.IsConnect() || req.Header.ConnectionUpgrade() {
		p.tunnel(ctx, service, tag)
		return
	}
	snap := pl.current()
	if len(snap.eps) == 0 {
		p.fastError(ctx, &pl.stats, &errNoInstance{service: service, tag: tag}, fasthttp.StatusServiceUnavailable)
		return
	}
	stripHop(&req.Header)
	setForwarded(ctx, host)
	key := ""
	if _, isHash := snap.policy.(*Hash); isHash {
		key = fastHashKey(ctx, snap.hashKey)
	}
	if req.IsBodyStream() {
		// A small body of known length is read in full, so that the request
		// can be sent again after a stale connection or a refused connect;
		// larger and chunked bodies stream through unbuffered.
		if n := req.Header.ContentLength(); n >= 0 && n <= maxReplayableBody {
			body := make([]byte, n)
			if _, err := io.ReadFull(req.BodyStream(), body); err != nil {
				p.fastError(ctx, &pl.stats, fmt.Errorf("incomplete request body: %w", err), fasthttp.StatusBadRequest)
				return
			}
			req.SetBody(body)
		}
	}
	idempotent := isIdempotentMethod(req.Header.Method()) || (!req.IsBodyStream() && len(req.Body()) == 0)
	resp := &ctx.Response
	var deadline time.Time // the whole request's, retries included
	if p.cfg.Timeout > 0 {
		deadline = now.Add(p.cfg.Timeout)
	}

	var triedBuf [4]*endpoint
	tried := triedBuf[:0]
	for attempt := 0; ; attempt++ {
		e := snap.pick(p, key, tried)
		if e == nil {
			p.fastError(ctx, &pl.stats, &errNoInstance{service: service, tag: tag}, fasthttp.StatusServiceUnavailable)
			return
		}
		e.inflight.Add(1)
		start := time.Now()
		tryDeadline := deadline
		if p.cfg.TryTimeout > 0 {
			if d := start.Add(p.cfg.TryTimeout); tryDeadline.IsZero() || d.Before(tryDeadline) {
				tryDeadline = d
			}
		}
		var err error
		if tryDeadline.IsZero() {
			err = e.fastClient(p).Do(req, resp)
		} else {
			err = e.fastClient(p).DoDeadline(req, resp, tryDeadline)
		}
		e.inflight.Add(-1)
		if err == nil {
			end := time.Now()
			e.observeLatency(end.Sub(start), end.UnixNano())
			pl.stats.latency.observe(end.Sub(now))
			e.requests.Add(1)
			if resp.StatusCode() >= 500 && p.cfg.EjectAfter5xx > 0 {
				snap.failed(p, e, p.cfg.EjectAfter5xx)
			} else {
				e.succeeded()
			}
			stripHopResponse(&resp.Header)
			return
		}
		var de *dialError
		dialFailed := errors.As(err, &de)
		if dialFailed || isReset(err) || errors.Is(err, fasthttp.ErrConnectionClosed) {
			snap.failed(p, e, p.cfg.EjectAfterErrors)
		}
		tried = append(tried, e)
		timedOut := errors.Is(err, fasthttp.ErrTimeout)
		expired := !deadline.IsZero() && !time.Now().Before(deadline)
		// A per-try timeout is retried like a reset: only requests that can
		// be sent twice. A connect failure can always go elsewhere.
		safe := dialFailed || (idempotent && !req.IsBodyStream())
		// A refused connect, or a connection reset while the request was
		// being written, delivered nothing and costs the instance nothing
		// (it is gone), so it does not draw on the retry budget; everything
		// else does.
		free := (dialFailed && !errors.Is(err, fasthttp.ErrDialTimeout) && !isNetTimeout(err)) || isWriteReset(err)
		if !safe || expired || attempt >= p.cfg.MaxRetries || len(tried) == len(snap.eps) ||
			(!free && !p.budget.allow(time.Now().UnixNano())) {
			status := fasthttp.StatusBadGateway
			if timedOut || expired {
				status = fasthttp.StatusGatewayTimeout
			}
			p.fastError(ctx, &pl.stats, fmt.Errorf("%w (instance %s of %q)", err, e.addr, service), status)
			return
		}
		p.metrics.retries.Add(1)
		pl.stats.retries.Add(1)
		resp.Reset()
	}
}

// fastError answers a request that could not be forwarded, in one line,
// and counts it against the proxy and the pool's stats st.
func (p *Proxy) fastError(ctx *fasthttp.RequestCtx, st *poolStats, err error, status int) {
	p.metrics.errors.Add(1)
	st.errors.Add(1)
	p.log.Debug("proxy error", "host", string(ctx.Host()), "err", err)
	msg := bytes.ReplaceAll([]byte("shoal: "+err.Error()), []byte("\n"), []byte(" "))
	ctx.Response.Reset()
	ctx.Error(string(msg)+"\n", status)
}

// stripHop removes hop-by-hop request headers, including those named in
// Connection. fasthttp frames the body itself (Content-Length or chunked).
func stripHop(h *fasthttp.RequestHeader) {
	if conn := h.Peek("Connection"); len(conn) > 0 {
		for _, tok := range bytes.Split(conn, []byte(",")) {
			if tok = bytes.TrimSpace(tok); len(tok) > 0 && !bytes.EqualFold(tok, []byte("keep-alive")) && !bytes.EqualFold(tok, []byte("close")) {
				h.DelBytes(tok)
			}
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

func stripHopResponse(h *fasthttp.ResponseHeader) {
	if conn := h.Peek("Connection"); len(conn) > 0 {
		for _, tok := range bytes.Split(conn, []byte(",")) {
			if tok = bytes.TrimSpace(tok); len(tok) > 0 && !bytes.EqualFold(tok, []byte("keep-alive")) && !bytes.EqualFold(tok, []byte("close")) {
				h.DelBytes(tok)
			}
		}
	}
	for _, name := range hopHeaders {
		if name != "Trailer" { // announces the trailers that follow the body
			h.Del(name)
		}
	}
}

// setForwarded appends the client to X-Forwarded-For and sets
// X-Forwarded-Host and -Proto, as net/http's ReverseProxy does.
func setForwarded(ctx *fasthttp.RequestCtx, host []byte) {
	h := &ctx.Request.Header
	ip := ctx.RemoteIP().String()
	if prior := h.Peek("X-Forwarded-For"); len(prior) > 0 {
		h.Set("X-Forwarded-For", string(prior)+", "+ip)
	} else {
		h.Set("X-Forwarded-For", ip)
	}
	h.SetBytesV("X-Forwarded-Host", host)
	h.Set("X-Forwarded-Proto", "http")
}

func isIdempotentMethod(m []byte) bool {
	switch string(m) {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	return false
}

func fastHashKey(ctx *fasthttp.RequestCtx, src HashSource) string {
	switch src.Kind {
	case "header":
		return string(ctx.Request.Header.Peek(src.Name))
	case "cookie":
		return string(ctx.Request.Header.Cookie(src.Name))
	}
	return ctx.RemoteIP().String()
}

// tunnel serves CONNECT and Upgrade (websocket) requests: it connects to an
// instance, passes an upgrade request on as it is, and then copies bytes
// both ways; the instance's own 101 answer goes straight to the client.
func (p *Proxy) tunnel(ctx *fasthttp.RequestCtx, service, tag string) {
	pl := p.pool(service, tag)
	up, e, err := p.dial(pl, ctx.RemoteIP().String())
	if err != nil {
		var noInst *errNoInstance
		status := fasthttp.StatusBadGateway
		if errors.As(err, &noInst) {
			status = fasthttp.StatusServiceUnavailable
		}
		p.fastError(ctx, &pl.stats, err, status)
		return
	}
	connect := ctx.IsConnect()
	if !connect {
		h := &ctx.Request.Header
		for _, name := range []string{"Proxy-Connection", "Keep-Alive", "Proxy-Authorization", "Proxy-Authenticate", "Te"} {
			h.Del(name)
		}
		setForwarded(ctx, ctx.Host())
		w := bufio.NewWriter(up)
		if err := ctx.Request.Write(w); err == nil {
			err = w.Flush()
		}
		if err != nil {
			up.Close()
			e.inflight.Add(-1)
			p.fastError(ctx, &pl.stats, err, fasthttp.StatusBadGateway)
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
