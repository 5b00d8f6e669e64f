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
	"syscall"
	"time"
)

// errNoInstance is returned when a service has no instance to send to.
type errNoInstance struct{ service, tag string }

func (e *errNoInstance) Error() string {
	if e.tag != "" {
		return fmt.Sprintf("no healthy instance of service %q with tag %q", e.service, e.tag)
	}
	return fmt.Sprintf("no healthy instance of service %q", e.service)
}

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
	st := &p.pool(service, tag).stats
	st.requests.Add(1)
	if r.Method == http.MethodConnect {
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
func (p *Proxy) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	p.metrics.errors.Add(1)
	if service, tag, ok := route(r.Host, p.cfg.Domain); ok {
		p.pool(service, tag).stats.errors.Add(1)
	}
	var noInst *errNoInstance
	status := http.StatusBadGateway
	switch {
	case errors.As(err, &noInst):
		status = http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		status = http.StatusGatewayTimeout
	case errors.Is(err, context.Canceled):
		return // the client went away
	}
	p.log.Debug("proxy error", "host", r.Host, "path", r.URL.Path, "err", err)
	http.Error(w, "shoal: "+strings.ReplaceAll(err.Error(), "\n", " "), status)
}

// forwarder is the proxy's RoundTripper: it picks an instance of the
// routed service, forwards over pooled keep-alive connections and retries
// on another instance when that is safe.
type forwarder struct{ p *Proxy }

func (f *forwarder) RoundTrip(req *http.Request) (*http.Response, error) {
	p := f.p
	service, tag, ok := route(req.URL.Host, p.cfg.Domain)
	if !ok {
		return nil, fmt.Errorf("%q is not a service address", req.URL.Host)
	}
	began := time.Now()
	pl := p.pool(service, tag)
	snap := pl.current()
	if len(snap.eps) == 0 {
		return nil, &errNoInstance{service, tag}
	}
	key := ""
	if _, isHash := snap.policy.(*Hash); isHash {
		key = hashKey(req, snap.hashKey)
	}
	// The body is guarded so that a request whose body was not read yet (a
	// failed connect) can be sent again; the transport must not close it.
	var body *guardedBody
	if req.Body != nil && req.Body != http.NoBody {
		body = &guardedBody{rc: req.Body}
		defer body.rc.Close()
	}
	var triedBuf [4]*endpoint
	tried := triedBuf[:0]
	for attempt := 0; ; attempt++ {
		e := snap.pick(p, key, tried)
		if e == nil {
			return nil, &errNoInstance{service, tag}
		}
		out := *req
		u := *req.URL
		u.Host = e.addr
		out.URL = &u
		if body != nil {
			out.Body = body
		}
		e.inflight.Add(1)
		start := time.Now()
		resp, err := p.transport.RoundTrip(&out)
		if err == nil {
			now := time.Now()
			e.observeLatency(now.Sub(start), now.UnixNano())
			pl.stats.latency.observe(now.Sub(began))
			e.requests.Add(1)
			if resp.StatusCode >= 500 && p.cfg.EjectAfter5xx > 0 {
				snap.failed(p, e, p.cfg.EjectAfter5xx)
			} else {
				e.succeeded()
			}
			resp.Body = &inflightBody{rc: resp.Body, e: e}
			return resp, nil
		}
		e.inflight.Add(-1)
		dialErr := isDialError(err)
		if dialErr || isReset(err) {
			snap.failed(p, e, p.cfg.EjectAfterErrors)
		}
		tried = append(tried, e)
		safe := dialErr && (body == nil || !body.read.Load())
		if !safe && isIdempotent(req) && body == nil && !errors.Is(err, context.DeadlineExceeded) {
			safe = true // nothing to replay; a reset before the response can be retried
		}
		free := (dialErr && !isNetTimeout(err)) || isWriteReset(err) // costs the instance nothing
		if !safe || attempt >= p.cfg.MaxRetries || len(tried) == len(snap.eps) || req.Context().Err() != nil ||
			(!free && !p.budget.allow(time.Now().UnixNano())) {
			return nil, fmt.Errorf("%w (instance %s of %q)", err, e.addr, service)
		}
		p.metrics.retries.Add(1)
		pl.stats.retries.Add(1)
	}
}

func isIdempotent(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return r.Body == nil || r.Body == http.NoBody
}

// isDialError reports a failure to connect: nothing was sent.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// isTimeout reports a timeout, which may mean an overloaded instance.
func isNetTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// isWriteReset reports a connection the instance reset while the request
// was still being written: the instance is gone and processed nothing.
func isWriteReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "write" && (errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE))
}

// isReset reports a connection that broke before the response headers.
func isReset(err error) bool {
	var op *net.OpError
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		(errors.As(err, &op) && (op.Op == "read" || op.Op == "write"))
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
	rc   io.ReadCloser
	e    *endpoint
	done atomic.Bool
}

func (b *inflightBody) Read(p []byte) (int, error) { return b.rc.Read(p) }

func (b *inflightBody) Close() error {
	if b.done.CompareAndSwap(false, true) {
		b.e.inflight.Add(-1)
	}
	return b.rc.Close()
}

// Write lets the reverse proxy use the body as an io.Writer for upgraded
// (websocket) connections, where the transport returns a read-write body.
func (b *inflightBody) Write(p []byte) (int, error) {
	if w, ok := b.rc.(io.Writer); ok {
		return w.Write(p)
	}
	return 0, errors.New("response body is not writable")
}
