package lb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// tcpUpstream is the local L4 listener of one service.
type tcpUpstream struct {
	service string
	ln      net.Listener

	mu    sync.Mutex // guards conns
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup // one per connection being served
}

func (u *tcpUpstream) track(c net.Conn, add bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if add {
		u.conns[c] = struct{}{}
	} else {
		delete(u.conns, c)
	}
}

// drain waits for the connections to end until ctx is done, then closes
// the rest.
func (u *tcpUpstream) drain(ctx context.Context) {
	done := make(chan struct{})
	go func() { u.wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	u.mu.Lock()
	for c := range u.conns {
		c.Close()
	}
	u.mu.Unlock()
	<-done
}

// serveTCP accepts connections of one upstream until its listener closes.
func (p *Proxy) serveTCP(u *tcpUpstream) {
	defer p.wg.Done()
	pl := p.pool(u.service, "")
	for {
		conn, err := u.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				p.log.Warn("upstream listener failed", "service", u.service, "err", err)
			}
			return
		}
		u.wg.Add(1)
		u.track(conn, true)
		go func() {
			defer u.wg.Done()
			defer u.track(conn, false)
			defer conn.Close()
			p.metrics.connections.Add(1)
			up, e, err := p.dial(pl, clientIP(conn.RemoteAddr().String()))
			if err != nil {
				p.metrics.errors.Add(1)
				p.log.Debug("upstream connect failed", "service", u.service, "err", err)
				return
			}
			u.track(up, true)
			defer u.track(up, false)
			pipe(conn, up)
			e.inflight.Add(-1)
		}()
	}
}

// dial connects to an instance of the pool's service, trying others when a
// connect fails. The endpoint's in-flight count is raised for the caller.
func (p *Proxy) dial(pl *pool, key string) (net.Conn, *endpoint, error) {
	snap := pl.current()
	if len(snap.eps) == 0 {
		return nil, nil, &errNoInstance{pl.service}
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
		conn, err := net.DialTimeout("tcp", e.addr, p.cfg.ConnectTimeout)
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
		}
	}
	if lastErr == nil {
		return nil, nil, &errNoInstance{pl.service}
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

// connect tunnels a CONNECT request (HTTPS through the proxy) to an
// instance of the service named by its authority.
func (p *Proxy) connect(w http.ResponseWriter, r *http.Request) {
	service, tag, _ := route(r.Host, p.cfg.Domain)
	up, e, err := p.dial(p.pool(service, tag), clientIP(r.RemoteAddr))
	if err != nil {
		p.proxyError(w, r, err)
		return
	}
	defer e.inflight.Add(-1)
	hj, ok := w.(http.Hijacker)
	if !ok {
		up.Close()
		http.Error(w, "shoal: CONNECT needs HTTP/1.1", http.StatusHTTPVersionNotSupported)
		return
	}
	client, buf, err := hj.Hijack()
	if err != nil {
		up.Close()
		return
	}
	client.SetDeadline(time.Time{})
	if _, err := client.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		client.Close()
		up.Close()
		return
	}
	if n := buf.Reader.Buffered(); n > 0 {
		early, _ := buf.Reader.Peek(n)
		if _, err := up.Write(early); err != nil {
			client.Close()
			up.Close()
			return
		}
	}
	pipe(client, up)
}
