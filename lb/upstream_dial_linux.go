package lb

import (
	"net"
	"syscall"
)

// tcpUserTimeout is TCP_USER_TIMEOUT from linux/tcp.h, the same on every
// architecture; package syscall defines it on some only.
const tcpUserTimeout = 0x12

// setUserTimeout sets TCP_USER_TIMEOUT on a socket about to connect.
func setUserTimeout(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout, int(upstreamUnackedTimeout.Milliseconds()))
	})
	if err != nil {
		return err
	}
	return serr
}

// peerClosed reports, without blocking or consuming anything, whether the
// other end of c has closed it or sent data nobody asked for: either way
// the connection must not carry a new request.
func peerClosed(c net.Conn) bool {
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok {
		// A TLS connection through the mesh: anything waiting on its
		// socket while idle is the far agent's close (the mesh dial read
		// past the handshake's session tickets).
		c = tc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	var buf [1]byte
	rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		closed = (err == nil && n >= 0) || (err != nil && err != syscall.EAGAIN && err != syscall.EINTR)
		return true // never wait for readiness
	})
	return closed
}
