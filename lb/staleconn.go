package lb

import (
	"errors"
	"net"
	"sync/atomic"
	"time"
)

// Upstreams close keep-alive connections they find idle (Node.js after 5 s,
// nginx after 75 s), and a request written on such a connection fails. A
// connection idle for a while is therefore checked before a request is
// written on it: if the instance has closed it (or sent something unasked),
// the write fails with errStaleConn having sent nothing, and the request,
// whatever its method, is sent again on a fresh connection. Connections in
// steady use skip the check, so it costs nothing under load.

// staleCheckAfter is the idle time after which a connection is checked.
// Instances close idle connections after a second or more (Node.js 5 s,
// Apache 5 s, nginx 75 s); a connection busier than this is not, and
// skipping the check keeps a peek syscall per request off the hot path
// under load.
const staleCheckAfter = 200 * time.Millisecond

// errStaleConn reports a pooled connection the instance had closed; nothing
// of the request was sent on it.
var errStaleConn = errors.New("pooled connection closed by the instance while idle")

// staleGuardConn wraps an upstream connection with the idle check.
type staleGuardConn struct {
	net.Conn
	lastUse atomic.Int64 // Unix ns of the last read or write
	// hasDeadline: a deadline is set, to be cleared before a use without
	// one. Only the connection's current user touches it.
	hasDeadline bool
}

func newStaleGuardConn(c net.Conn) *staleGuardConn {
	g := &staleGuardConn{Conn: c}
	g.lastUse.Store(time.Now().UnixNano())
	return g
}

func (g *staleGuardConn) Read(p []byte) (int, error) {
	n, err := g.Conn.Read(p)
	g.lastUse.Store(time.Now().UnixNano())
	return n, err
}

func (g *staleGuardConn) Write(p []byte) (int, error) {
	now := time.Now().UnixNano()
	if now-g.lastUse.Load() > int64(staleCheckAfter) && peerClosed(g.Conn) {
		return 0, errStaleConn
	}
	n, err := g.Conn.Write(p)
	g.lastUse.Store(now)
	return n, err
}

// setDeadline sets the connection's deadline (zero: none), skipping the
// call when there is none to set or clear.
func (g *staleGuardConn) setDeadline(t time.Time) error {
	if t.IsZero() && !g.hasDeadline {
		return nil
	}
	g.hasDeadline = !t.IsZero()
	return g.Conn.SetDeadline(t)
}

// CloseWrite passes half-closes on, for tunnels.
func (g *staleGuardConn) CloseWrite() error {
	if cw, ok := g.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return g.Conn.Close()
}

// isStale reports a failure that provably sent nothing on a connection the
// instance had closed.
func isStale(err error) bool {
	return errors.Is(err, errStaleConn)
}
