package lb

import (
	"net"
	"time"
)

// Upstream connections must notice an instance that vanished from the
// network. A host that is cut off, powered off or has lost its kernel
// neither answers nor resets, so a request in flight on a pooled keep-alive
// connection to it would wait for TCP to give up on its own: about 15
// minutes. Two kernel bounds end such a connection with an error instead,
// which the proxy treats as a reset: the instance is ejected and an
// idempotent request is retried on another one.
//
//   - TCP_USER_TIMEOUT: data sent but not acknowledged for
//     upstreamUnackedTimeout, like a request written to a host that is gone.
//   - Keepalive probes after upstreamKeepAliveIdle of silence catch a
//     request acknowledged just before the host went away, whose answer
//     never comes; the user timeout bounds the unanswered probes too.
//
// A slow instance that is alive acknowledges both, so neither bound limits
// how long it may take to answer: long polls and streams are unaffected.
// (The netns fault scenario "cut one host off under load" found this: GETs
// stuck on connections to the cut host failed at the client's timeout.)
const (
	upstreamUnackedTimeout = 5 * time.Second
	upstreamKeepAliveIdle  = 5 * time.Second
)

// upstreamDialer returns the dialer of connections to instances.
func upstreamDialer(connectTimeout time.Duration) *net.Dialer {
	return &net.Dialer{
		Timeout: connectTimeout,
		KeepAliveConfig: net.KeepAliveConfig{
			Enable: true, Idle: upstreamKeepAliveIdle, Interval: upstreamKeepAliveIdle, Count: 3,
		},
		Control: setUserTimeout,
	}
}
