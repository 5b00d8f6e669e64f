package lb

import (
	"context"
	"net"
	"net/http"
	"time"
)

// The mesh hop. An instance the view shows with Via set lives on another
// node: the proxy never connects to it directly but asks Config.Mesh for a
// connection through that node's agent, which checks the caller's identity
// and forwards to the instance on its own host. Such a connection carries
// the instance's bytes both ways, so everything above the dial (the request
// loop, the HTTP/1 pool, h2c, TCP upstreams, tunnels) works on it unchanged,
// and a pooled keep-alive connection pays the TLS handshake once.

// Mesh opens connections to instances on other nodes through their agents.
// It must be safe for concurrent use.
type Mesh interface {
	// Dial connects to the instance (an Instance.ID) hosted by the agent
	// at via, presenting identity: the name of the local service the
	// traffic comes from, or "" for the node itself. An error means
	// nothing reached the instance: the request loop tries another one.
	Dial(ctx context.Context, via, instance, identity string) (net.Conn, error)
}

// DeniedError is what Mesh.Dial returns when the instance's agent refused
// the caller by policy (an intention): every instance of the service would
// refuse it alike, so the request loop stops at once and the caller gets
// 403 (an HTTP request) or a closed connection (TCP), with Reason.
type DeniedError struct{ Reason string }

func (e *DeniedError) Error() string { return "permission denied: " + e.Reason }

// dial connects to the endpoint's instance, directly or through the mesh,
// as identity (see Mesh; ignored for direct connects).
func (e *endpoint) dial(identity string) (net.Conn, error) {
	if e.via == "" {
		c, err := upstreamDialer(e.connectTimeout).Dial("tcp", e.addr)
		if err != nil {
			return nil, &dialError{err}
		}
		return c, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.connectTimeout)
	defer cancel()
	c, err := e.mesh.Dial(ctx, e.via, e.id, identity)
	if err != nil {
		return nil, &dialError{err}
	}
	return c, nil
}

// h2Transport returns the h2c path's transport for the endpoint: the
// proxy's shared one for direct instances, one of the endpoint's own,
// dialling through the mesh as identity, for instances on other nodes.
func (e *endpoint) h2Transport(shared *http.Transport, identity string) *http.Transport {
	if e.via == "" {
		return shared
	}
	if identity == "" {
		if t := e.h2t.Load(); t != nil {
			return t
		}
	} else if t, ok := e.h2tByIdentity.Load(identity); ok {
		return t.(*http.Transport)
	}
	t := shared.Clone()
	t.DialContext = func(context.Context, string, string) (net.Conn, error) { return e.dial(identity) }
	if identity != "" {
		actual, loaded := e.h2tByIdentity.LoadOrStore(identity, t)
		if loaded {
			t.CloseIdleConnections()
		}
		return actual.(*http.Transport)
	}
	if e.h2t.CompareAndSwap(nil, t) {
		return t
	}
	t.CloseIdleConnections()
	return e.h2t.Load()
}

// meshIdleTimeout is how long a pooled connection through the mesh may stay
// idle: below the remote agent's idle limit, so that the caller, not the
// agent, closes it.
const meshIdleTimeout = 60 * time.Second
