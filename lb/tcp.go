package lb

import (
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"
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
			p.metrics.connections.Add(1)
			// Each connection takes the service's splitter and resolver
			// as they are when it arrives.
			d := p.decideTCP(u.service)
			pl := d.pool
			pl.stats.connections.Add(1)
			up, e, err := p.connectAs(pl, pl.service, "", clientIP(conn.RemoteAddr().String()), u.identity)
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
	return p.connectAs(pl, service, tag, key, "")
}

// connectAs is connect presenting identity on the mesh hop.
func (p *Proxy) connectAs(pl *pool, service, tag, key, identity string) (net.Conn, *endpoint, error) {
	c := p.newCall(pl, service, tag, time.Now())
	defer c.release()
	c.key = key
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
