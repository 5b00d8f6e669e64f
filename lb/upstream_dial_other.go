//go:build !linux

package lb

import "syscall"

// setUserTimeout does nothing where TCP_USER_TIMEOUT is not available;
// keepalive probes still end connections to vanished hosts, later.
func setUserTimeout(_, _ string, _ syscall.RawConn) error { return nil }
