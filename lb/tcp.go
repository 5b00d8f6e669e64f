package lb

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// tcpUpstream is the local L4 listener of one service.
type tcpUpstream struct {
	service  string
	ln       net.Listener
	sessions connSet
}

// serveTCP accepts connections of one upstream until its listener closes.
func (p *Proxy) serveTCP(u *tcpUpstream) {
	defer p.wg.Done()
	pl := p.ensurePool(u.service, "")
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
			pl.stats.connections.Add(1)
			up, e, err := p.dial(pl, clientIP(conn.RemoteAddr().String()))
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

// dial connects to an instance of the pool's service, trying others when a
// connect fails. The endpoint's in-flight count is raised for the caller.
func (p *Proxy) dial(pl *pool, key string) (net.Conn, *endpoint, error) {
	snap := pl.current()
	if len(snap.eps) == 0 {
		return nil, nil, &errNoInstance{pl.service, pl.tag}
	}
	var triedBuf [4]*endpoint
	tried := triedBuf[:0]
	var lastErr error
	for attempt := 0; attempt <= p.cfg.MaxRetries; attempt++ {
		e := snap.pick(p, key, tried)
		if e == nil {
			break
		}
		e.inflight.Add(1)
		conn, err := upstreamDialer(p.cfg.ConnectTimeout).Dial("tcp", e.addr)
		if err == nil {
			e.succeeded()
			e.requests.Add(1)
			return conn, e, nil
		}
		e.inflight.Add(-1)
		snap.failed(p, e, p.cfg.EjectAfterErrors)
		tried = append(tried, e)
		lastErr = err
		if attempt > 0 {
			p.metrics.retries.Add(1)
			pl.stats.retries.Add(1)
		}
	}
	if lastErr == nil {
		return nil, nil, &errNoInstance{pl.service, pl.tag}
	}
	return nil, nil, fmt.Errorf("service %q: %w", pl.service, lastErr)
}

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
