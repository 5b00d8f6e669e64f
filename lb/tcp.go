package lb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
)

// tcpUpstream is the local L4 listener of one service.
type tcpUpstream struct {
	service string
	// addr is the address asked for (the listener's may differ: port 0).
	addr string
	// identity is the local service whose traffic this is, presented on
	// the mesh hop; "" for the node's own.
	identity string
	ln       net.Listener
	sessions connSet
}

// AddUpstream opens a local TCP listener on addr for traffic of the local
// service identity to service, as a registration's sidecar upstreams ask
// (Connect.SidecarService.Proxy.Upstreams). It returns the bound address.
func (p *Proxy) AddUpstream(service, addr, identity string) (string, error) {
	p.upMu.Lock()
	defer p.upMu.Unlock()
	if p.closed {
		return "", errors.New("proxy: shut down")
	}
	for _, u := range p.upstreams {
		if u.addr == addr {
			if u.service == service && u.identity == identity {
				return u.ln.Addr().String(), nil
			}
			return "", fmt.Errorf("proxy: upstream address %s is taken by %q", addr, u.service)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("proxy: upstream %s: %w", service, err)
	}
	u := &tcpUpstream{service: service, addr: addr, identity: identity, ln: ln}
	p.upstreams = append(p.upstreams, u)
	p.wg.Add(1)
	go p.serveTCP(u)
	p.log.Info("upstream listener opened", "service", service, "addr", ln.Addr().String(), "identity", identity)
	return ln.Addr().String(), nil
}

// RemoveUpstream closes the listener AddUpstream opened on addr; its open
// connections run on until either side ends them.
func (p *Proxy) RemoveUpstream(addr string) {
	p.upMu.Lock()
	defer p.upMu.Unlock()
	for i, u := range p.upstreams {
		if u.addr == addr {
			u.ln.Close()
			p.upstreams = slices.Delete(p.upstreams, i, i+1)
			p.log.Info("upstream listener closed", "service", u.service, "addr", addr)
			return
		}
	}
}

// serveTCP accepts connections of one upstream until its listener closes.
func (p *Proxy) serveTCP(u *tcpUpstream) {
	defer p.wg.Done()
	for {
		conn, err := u.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				p.log.Warn("upstream listener failed", "service", u.service, "err", err)
			}
			return
		}
		if !u.sessions.begin(conn) {
			return // shutting down
		}
		go func() {
			defer u.sessions.end(conn)
			defer conn.Close()
			if p.table.Load().speaksHTTP(u.service) {
				p.serveUpstreamHTTP(conn, u)
				return
			}
			p.metrics.connections.Add(1)
			// Each connection takes the service's splitter and resolver
			// as they are when it arrives.
			d := p.decideTCP(u.service)
			pl := d.pool
			pl.stats.connections.Add(1)
			up, e, err := p.connectAs(pl, pl.service, "", clientIP(conn.RemoteAddr().String()), u.identity, d.failover)
			if err != nil {
				p.metrics.errors.Add(1)
				pl.stats.errors.Add(1)
				p.log.Debug("upstream connect failed", "service", u.service, "err", err)
				return
			}
			defer e.inflight.Add(-1)
			if !u.sessions.join(up) {
				return
			}
			defer u.sessions.drop(up)
			pipe(conn, up)
		}()
	}
}

// connect connects to an instance of the pool's service through the
// request loop, trying others when a connect fails. The endpoint's
// in-flight count is raised for the caller. key is the hash policy's key.
func (p *Proxy) connect(pl *pool, service, tag, key string) (net.Conn, *endpoint, error) {
	return p.connectAs(pl, service, tag, key, "", nil)
}

// connectAs is connect presenting identity on the mesh hop, going on to
// the failover targets when every connect to the pool fails.
func (p *Proxy) connectAs(pl *pool, service, tag, key, identity string, failover []*target) (net.Conn, *endpoint, error) {
	c := p.newCall(pl, service, tag, time.Now())
	defer c.release()
	c.key, c.failover = key, failover
	x := tcpExchange{identity: identity}
	e, err := p.forward(c, &x)
	if err != nil {
		return nil, nil, err
	}
	return x.conn, e, nil
}

// tcpExchange is the TCP side of a call: a try is a connect, and a
// connection that was made is the answer.
type tcpExchange struct {
	identity string // the caller's, on the mesh hop
	conn     net.Conn
}

func (x *tcpExchange) try(e *endpoint, _ time.Time) (int, error) {
	conn, err := e.dial(x.identity)
	if err != nil {
		return 0, err
	}
	x.conn = conn
	return 0, nil
}

func (x *tcpExchange) bodyTouched() bool { return false }

func (x *tcpExchange) replayable() bool { return false }

func (x *tcpExchange) discard() {} // a connection has no answer to retry

// pipe copies both ways until both sides are done, passing half-closes on:
// when one side stops sending, the other side's write half is closed. On
// Linux, TCP-to-TCP copies use splice and never enter user space.
func pipe(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	copyHalf := func(dst, src net.Conn) {
		defer wg.Done()
		_, err := io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok && err == nil {
			cw.CloseWrite()
		} else {
			// An error (a reset) ends the whole exchange.
			dst.Close()
			src.Close()
		}
	}
	go copyHalf(a, b)
	copyHalf(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}

// upstreamConn is a connection to the upstream listener of a service that
// speaks HTTP: the proxy's HTTP handlers find their destination and the
// caller's identity on it, instead of in the Host header.
type upstreamConn struct {
	net.Conn
	u *tcpUpstream
}

// serveUpstreamHTTP serves one connection of an upstream listener as HTTP
// (HTTP/1.x, or h2c when it starts with the preface), so that the
// service's routes, splits and retries apply per request, as on the shared
// listener. It returns when the connection is done.
func (p *Proxy) serveUpstreamHTTP(conn net.Conn, u *tcpUpstream) {
	pc, h2 := sniffH2(conn)
	uc := &upstreamConn{Conn: pc, u: u}
	if h2 {
		p.h2.ServeConn(uc, &http2.ServeConnOpts{Handler: upstreamH2Handler{p: p, u: u}})
		return
	}
	if err := p.upSrv.ServeConn(uc); err != nil && !isClosedConn(err) {
		p.log.Debug("upstream http connection", "service", u.service, "err", err)
	}
}

// isClosedConn reports the error of a connection closed under a server.
func isClosedConn(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF)
}

// upstreamH2Handler serves h2c requests of an upstream listener: each goes
// to the listener's service, carrying its identity.
type upstreamH2Handler struct {
	p *Proxy
	u *tcpUpstream
}

func (h upstreamH2Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r.Host = h.u.service
	if h.u.identity != "" {
		r = r.WithContext(context.WithValue(r.Context(), identityKey{}, h.u.identity))
	}
	h.p.h2Handler.ServeHTTP(w, r)
}

// identityKey carries a request's mesh identity in its context (h2c).
type identityKey struct{}

// idleConns tracks the HTTP connections of upstream listeners that wait
// for their next request, so that shutdown closes them at once instead of
// waiting out ShutdownTimeout: their server serves connections handed to
// it one by one, and fasthttp's own shutdown knows only of listeners.
type idleConns struct {
	mu     sync.Mutex // guards conns, and closed's change
	conns  map[net.Conn]struct{}
	closed atomic.Bool
}

// track is the server's ConnState hook.
func (s *idleConns) track(c net.Conn, state fasthttp.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case state == fasthttp.StateIdle && s.closed.Load():
		c.Close()
	case state == fasthttp.StateIdle:
		if s.conns == nil {
			s.conns = make(map[net.Conn]struct{})
		}
		s.conns[c] = struct{}{}
	default:
		delete(s.conns, c)
	}
}

// closing reports whether shutdown began.
func (s *idleConns) closing() bool { return s.closed.Load() }

// closeAll closes the idle connections, and any that turns idle later.
func (s *idleConns) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed.Store(true)
	for c := range s.conns {
		c.Close()
	}
	s.conns = nil
}
