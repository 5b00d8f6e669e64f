package lb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync/atomic"
	"time"
)

// httpHandler serves h2c (HTTP/2 cleartext) clients through net/http's
// reverse proxy; HTTP/1.x takes the faster path in fast.go.
type httpHandler struct {
	p  *Proxy
	rp *httputil.ReverseProxy
}

func (h *httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := h.p
	p.metrics.requests.Add(1)
	p.budget.request(time.Now().UnixNano())
	service, tag, ok := route(r.Host, p.cfg.Domain)
	if !ok {
		p.metrics.errors.Add(1)
		http.Error(w, fmt.Sprintf("shoal: %q is not a service address: want NAME, NAME.service.%s or TAG.NAME.service.%s",
			r.Host, p.cfg.Domain, p.cfg.Domain), http.StatusServiceUnavailable)
		return
	}
	if r.Method == http.MethodConnect {
		st := &p.pool(service, tag).stats
		st.requests.Add(1)
		p.metrics.errors.Add(1)
		st.errors.Add(1)
		http.Error(w, "shoal: CONNECT is served over HTTP/1.1 only", http.StatusMethodNotAllowed)
		return
	}
	if p.cfg.Timeout > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), p.cfg.Timeout)
		defer cancel()
		r = r.WithContext(ctx)
	}
	h.rp.ServeHTTP(w, r)
}

// rewrite prepares the outbound request: the original Host is kept (the
// forwarder routes on it and sends it on), X-Forwarded-* are set.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = pr.In.Host
	pr.Out.Host = pr.In.Host
	pr.SetXForwarded()
}

// proxyError answers a request that could not be forwarded, in one line.
// The forwarder counted it against its pool.
func (p *Proxy) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	p.metrics.errors.Add(1)
	if errors.Is(err, context.Canceled) {
		return // the client went away
	}
	status := statusOf(err)
	if errors.Is(err, context.DeadlineExceeded) {
		status = http.StatusGatewayTimeout
	}
	p.log.Debug("proxy error", "host", r.Host, "path", r.URL.Path, "err", err)
	http.Error(w, "shoal: "+strings.ReplaceAll(err.Error(), "\n", " "), status)
}

// forwarder is the h2c path's RoundTripper: it runs the request loop with
// net/http's transport making each try.
type forwarder struct{ p *Proxy }

func (f *forwarder) RoundTrip(req *http.Request) (*http.Response, error) {
	p := f.p
	service, tag, ok := route(req.URL.Host, p.cfg.Domain)
	if !ok {
		return nil, fmt.Errorf("%q is not a service address", req.URL.Host)
	}
	d := decision{}
	if ch := p.table.Load().chainOf(service); ch != nil && tag == "" {
		d = p.decide(ch.match(&stdRequest{r: req}))
		service = d.pool.service
	} else {
		d.pool = p.pool(service, tag)
	}
	pl := d.pool
	pl.stats.requests.Add(1)
	c := p.newCall(pl, service, tag, time.Now())
	defer c.release()
	resp, err := f.forward(c, req, &d)
	if err != nil {
		pl.stats.errors.Add(1)
	}
	return resp, err
}

// forward runs the request loop for an h2c request and applies the
// traffic policy's changes to the request and its answer.
func (f *forwarder) forward(c *call, req *http.Request, d *decision) (*http.Response, error) {
	p := f.p
	if len(c.snap.all.eps) == 0 {
		return nil, c.noInstance()
	}
	if d.route != nil {
		c.follow(d)
		d.applyStd(req)
	}
	if _, isHash := c.snap.all.policy.(*Hash); isHash {
		c.key = hashKey(req, c.snap.hashKey)
	}
	x := &h2Exchange{p: p, req: req}
	if d.route != nil {
		x.deadline = c.deadline // the proxy's own Timeout is on the request's context already
	}
	// The body is guarded so that a request whose body was not read yet (a
	// failed connect) can be sent again; the transport must not close it.
	if req.Body != nil && req.Body != http.NoBody {
		x.body = &guardedBody{rc: req.Body}
		defer x.body.rc.Close()
	}
	c.idempotent = isIdempotentMethod(req.Method) || x.body == nil
	e, err := p.forward(c, x)
	if err != nil {
		return nil, err
	}
	if d.route != nil {
		d.route.respOps.apply(x.resp.Header)
		d.leg.respOps.apply(x.resp.Header)
	}
	if p.cfg.DebugHeaders {
		x.resp.Header.Set(debugInstance, e.id)
		x.resp.Header.Set(debugRoute, debugRouteValue(e, d))
	}
	x.resp.Body = &inflightBody{rc: x.resp.Body, e: e, cancel: x.cancel}
	return x.resp, nil
}

// h2Exchange is the h2c side of a call: each try is a round trip on the
// proxy's net/http transport, whose context carries the deadline.
type h2Exchange struct {
	p    *Proxy
	req  *http.Request
	body *guardedBody
	resp *http.Response
	// deadline bounds each try, answer included (a route's timeout); its
	// context's cancel goes with the answer's body.
	deadline time.Time
	cancel   context.CancelFunc
}

func (x *h2Exchange) try(e *endpoint, _ time.Time) (int, error) {
	out := *x.req
	if !x.deadline.IsZero() {
		ctx, cancel := context.WithDeadline(x.req.Context(), x.deadline)
		out = *out.WithContext(ctx)
		x.cancel = cancel
	}
	u := *x.req.URL
	u.Host = e.addr
	out.URL = &u
	if x.body != nil {
		out.Body = x.body
	}
	identity, _ := x.req.Context().Value(identityKey{}).(string)
	resp, err := e.h2Transport(x.p.transport, identity).RoundTrip(&out)
	if err != nil {
		if x.cancel != nil {
			x.cancel()
			x.cancel = nil
		}
		if ctxErr := out.Context().Err(); ctxErr != nil {
			// The caller is gone or out of time: not the instance's fault,
			// and final, even when it cut a connect short.
			if !errors.Is(err, ctxErr) {
				err = fmt.Errorf("%w (%w)", err, ctxErr)
			}
			return 0, err
		}
		if isDialError(err) {
			err = &dialError{err}
		}
		return 0, err
	}
	x.resp = resp
	return resp.StatusCode, nil
}

func (x *h2Exchange) bodyTouched() bool { return x.body != nil && x.body.read.Load() }

func (x *h2Exchange) replayable() bool { return x.body == nil }

func (x *h2Exchange) discard() {
	x.resp.Body.Close()
	if x.cancel != nil {
		x.cancel()
		x.cancel = nil
	}
}

// isDialError reports a failure to connect: nothing was sent.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// hashKey extracts the hash policy's key from a request.
func hashKey(r *http.Request, src HashSource) string {
	switch src.Kind {
	case "header":
		return r.Header.Get(src.Name)
	case "cookie":
		if c, err := r.Cookie(src.Name); err == nil {
			return c.Value
		}
		return ""
	}
	return clientIP(r.RemoteAddr)
}

func clientIP(remote string) string {
	if host, _, err := net.SplitHostPort(remote); err == nil {
		return host
	}
	return remote
}

// guardedBody lets the forwarder resend a request body that was never read,
// and keeps the transport from closing it between tries.
type guardedBody struct {
	rc   io.ReadCloser
	read atomic.Bool
}

func (b *guardedBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	return b.rc.Read(p)
}

func (b *guardedBody) Close() error { return nil }

// inflightBody ends an endpoint's in-flight request when the response body
// is closed, so least_request sees streams that are still open.
type inflightBody struct {
	rc     io.ReadCloser
	e      *endpoint
	cancel context.CancelFunc // of the try's deadline; nil: none
	done   atomic.Bool
}

func (b *inflightBody) Read(p []byte) (int, error) { return b.rc.Read(p) }

func (b *inflightBody) Close() error {
	if b.done.CompareAndSwap(false, true) {
		b.e.inflight.Add(-1)
	}
	err := b.rc.Close()
	if b.cancel != nil {
		b.cancel()
	}
	return err
}

// Write lets the reverse proxy use the body as an io.Writer for upgraded
// (websocket) connections, where the transport returns a read-write body.
func (b *inflightBody) Write(p []byte) (int, error) {
	if w, ok := b.rc.(io.Writer); ok {
		return w.Write(p)
	}
	return 0, errors.New("response body is not writable")
}
