//go:build !linux

package lb

import (
	"net"
	"syscall"
)

// setUserTimeout does nothing where TCP_USER_TIMEOUT is not available;
// keepalive probes still end connections to vanished hosts, later.
func setUserTimeout(_, _ string, _ syscall.RawConn) error { return nil }

// peerClosed cannot peek without blocking here; stale connections are then
// caught by the retry of requests that may repeat.
func peerClosed(net.Conn) bool { return false }
