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
	pc, h2 := sniffH2(c)
	select {
	case <-l.closed:
		c.Close() // sniffed after shutdown began
		return
	default:
	}
	if h2 {
		l.serveH2(pc)
		return
	}
	select {
	case l.conns <- pc:
	case <-l.closed:
		c.Close()
	}
}

// sniffH2 reads as much of the h2c preface as the client sends (10 s at
// most) and reports whether it is one; the returned connection replays the
// bytes read.
func sniffH2(c net.Conn) (net.Conn, bool) {
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
	return &prefixConn{Conn: c, prefix: buf[:n]}, n == len(h2Preface) && string(buf) == h2Preface
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

// connSet tracks long-lived sessions (tunnels, TCP upstream sessions, h2c
// clients) so that shutdown can wait for them and close the stragglers.
// Once shutdown began, no new session is admitted.
type connSet struct {
	mu      sync.Mutex // guards conns and stopped
	conns   map[net.Conn]struct{}
	stopped bool
	wg      sync.WaitGroup // one per session
}

// begin admits a session over conns; false (with conns closed) once
// shutdown began. A true begin must be followed by end.
func (s *connSet) begin(conns ...net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		for _, c := range conns {
			c.Close()
		}
		return false
	}
	if s.conns == nil {
		s.conns = make(map[net.Conn]struct{})
	}
	for _, c := range conns {
		s.conns[c] = struct{}{}
	}
	s.wg.Add(1)
	return true
}

// join adds a connection to a session already begun (its upstream side);
// false (with c closed) once shutdown force-closed the set.
func (s *connSet) join(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		c.Close()
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

// drop removes a connection added with join.
func (s *connSet) drop(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// end finishes a session begun with begin.
func (s *connSet) end(conns ...net.Conn) {
	s.mu.Lock()
	for _, c := range conns {
		delete(s.conns, c)
	}
	s.mu.Unlock()
	s.wg.Done()
}

// drain admits no new session, waits for the running ones until ctx is
// done, then closes their connections and waits for them to notice.
func (s *connSet) drain(ctx context.Context) {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
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
	s.conns = nil // later joins close their connection at once
	s.mu.Unlock()
	<-done
}
