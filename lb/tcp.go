package lb

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
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
			up, e, err := p.connect(pl, u.service, "", clientIP(conn.RemoteAddr().String()))
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
	c := p.newCall(pl, service, tag, time.Now())
	defer c.release()
	c.key = key
	var x tcpExchange
	e, err := p.forward(c, &x)
	if err != nil {
		return nil, nil, err
	}
	return x.conn, e, nil
}

// tcpExchange is the TCP side of a call: a try is a connect, and a
// connection that was made is the answer.
type tcpExchange struct{ conn net.Conn }

func (x *tcpExchange) try(e *endpoint, _ time.Time) (int, error) {
	conn, err := upstreamDialer(e.connectTimeout).Dial("tcp", e.addr)
	if err != nil {
		return 0, &dialError{err}
	}
	x.conn = conn
	return 0, nil
}

func (x *tcpExchange) bodyTouched() bool { return false }

func (x *tcpExchange) replayable() bool { return false }

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
