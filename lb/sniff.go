package lb

import (
	"context"
	"net"
	"sync"
	"time"
)

// h2Preface is what an HTTP/2 client with prior knowledge (h2c) sends first.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// sniffListener hands HTTP/1.x connections to Accept and h2c connections to
// serveH2, telling them apart by their first bytes. The sniffing happens off
// the accept path, one goroutine per new connection, so a slow client holds
// up no one.
type sniffListener struct {
	net.Listener
	serveH2 func(net.Conn)

	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
}

func newSniffListener(ln net.Listener, serveH2 func(net.Conn)) *sniffListener {
	l := &sniffListener{Listener: ln, serveH2: serveH2, conns: make(chan net.Conn), closed: make(chan struct{})}
	go l.acceptLoop()
	return l
}

func (l *sniffListener) acceptLoop() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			l.Close()
			return
		}
		go l.sniff(c)
	}
}

func (l *sniffListener) sniff(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, len(h2Preface))
	n := 0
	for n < len(buf) {
		m, err := c.Read(buf[n:])
		n += m
		if err != nil || string(buf[:n]) != h2Preface[:n] {
			break
		}
	}
	c.SetReadDeadline(time.Time{})
	pc := &prefixConn{Conn: c, prefix: buf[:n]}
	if n == len(h2Preface) && string(buf) == h2Preface {
		l.serveH2(pc)
		return
	}
	select {
	case l.conns <- pc:
	case <-l.closed:
		c.Close()
	}
}

// Accept returns the next HTTP/1.x connection.
func (l *sniffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close stops accepting; it is safe to call more than once.
func (l *sniffListener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.closed)
		err = l.Listener.Close()
	})
	return err
}

// prefixConn replays the sniffed bytes before reading on.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite half-closes the connection, for tunnels.
func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// connSet tracks long-lived connections (tunnels, TCP upstream sessions) so
// that shutdown can wait for them and close the stragglers.
type connSet struct {
	mu    sync.Mutex // guards conns
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup // one per session
}

func (s *connSet) add(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		s.conns = make(map[net.Conn]struct{})
	}
	s.conns[c] = struct{}{}
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

// drain waits for the sessions to end until ctx is done, then closes the
// remaining connections and waits for their sessions to notice.
func (s *connSet) drain(ctx context.Context) {
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	<-done
}
