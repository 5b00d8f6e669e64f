package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-mesh/shoal/gossip"
	"github.com/shoal-mesh/shoal/lb"
	"github.com/shoal-mesh/shoal/node/pki"
)

// The mesh hop between agents (see DESIGN.md, "Identity and the mesh hop").
//
// A caller's proxy reaches an instance on another node through that node's
// agent: it opens a TLS 1.3 connection to the agent's catalog port,
// presenting the leaf certificate of the calling service (or of the node),
// and checks that the certificate it gets back is the node's own. It then
// names the instance in one line, "shoal-mesh/1 SERVICE-ID\n". The agent
// checks the caller (chain to a configured root, node alive in gossip,
// service registered on that node), checks that the instance is one of its
// own, connects to it and answers "ok\n" (or "refused REASON: WHY\n"), and
// from then on copies bytes both ways. One TLS connection carries one
// upstream connection: the caller's HTTP/1 pool keeps them alive, so the
// handshake is paid per pooled connection, not per request, and the far
// agent never parses the traffic it forwards.

// meshALPN names the mesh protocol in the TLS handshake.
const meshALPN = "shoal-mesh/1"

const (
	// meshHandshakeTimeout bounds a mesh connection's handshake and
	// preamble, on both sides.
	meshHandshakeTimeout = 10 * time.Second
	// maxMeshLine bounds the preamble's lines.
	maxMeshLine = 512
)

// Mesh refusal reasons, the label of shoal_mesh_refused_total.
const (
	refusedHandshake    = "handshake"           // TLS failed: plaintext, wrong protocol, no certificate
	refusedCertificate  = "certificate"         // the chain, validity or identity of the certificate
	refusedNodeNotAlive = "node_not_alive"      // the caller's node is not an alive member
	refusedNotOnNode    = "service_not_on_node" // the caller's service is not registered on its node
	refusedNotLocal     = "instance_not_local"  // the destination is not an instance of this node
	refusedUnreachable  = "instance_unreachable"
	refusedPreamble     = "preamble"
	refusedIntention    = "intention" // an intention (or the default action) denies the caller
)

var meshRefusalReasons = []string{refusedHandshake, refusedCertificate, refusedNodeNotAlive,
	refusedNotOnNode, refusedNotLocal, refusedUnreachable, refusedPreamble, refusedIntention}

// mesh is the agent's side of the mesh hop: the listener half (serve) and
// the dialer the proxy uses (Dial).
type mesh struct {
	ids        *identities
	catalog    *gossip.Catalog
	intentions *intentions
	local      string
	log        *slog.Logger

	// server is the listener side's TLS configuration, replaced at each
	// reload so that its session tickets (keys rotated by crypto/tls) start
	// afresh.
	server atomic.Pointer[tls.Config]

	// clients holds a TLS client configuration per caller identity, each
	// with its own session cache: a resumed session carries the identity
	// it was made with.
	clients sync.Map // identity → *tls.Config

	refused refusalCounter
	// forwarded counts connections forwarded, by caller and destination;
	// allowed and denied the intentions' decisions, by the same.
	forwarded, allowed, denied pairCounter
	accepted                   atomic.Uint64
	dialed                     atomic.Uint64
	active                     atomic.Int64

	mu     sync.Mutex
	conns  map[net.Conn]*tunnel // nil until the tunnel is forwarding
	closed bool
}

// tunnel is a forwarding connection's caller and destination, checked
// again when the intentions change.
type tunnel struct{ source, destination string }

func newMesh(ids *identities, catalog *gossip.Catalog, in *intentions, local string, log *slog.Logger) *mesh {
	m := &mesh{ids: ids, catalog: catalog, intentions: in, local: local, log: log.With("component", "mesh"),
		conns: map[net.Conn]*tunnel{}}
	m.server.Store(m.serverConfig())
	return m
}

func (m *mesh) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAnyClientCert, // checked after the handshake, to answer why
		NextProtos: []string{meshALPN},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return &m.ids.leaf("").Cert, nil
		},
	}
}

// serve handles one mesh connection handed over by the catalog port.
func (m *mesh) serve(raw net.Conn) {
	if !m.track(raw) {
		raw.Close()
		return
	}
	defer m.untrack(raw)
	defer raw.Close()
	m.accepted.Add(1)
	peer := clientIP(raw.RemoteAddr()) // logged once per host, whatever its ports
	_ = raw.SetDeadline(time.Now().Add(meshHandshakeTimeout))
	tc := tls.Server(raw, m.server.Load())
	if err := tc.Handshake(); err != nil {
		m.refuse(peer, refusedHandshake, err)
		return
	}
	now := time.Now()
	id, err := m.ids.Bundle().VerifyPeer(rawCerts(tc.ConnectionState()), now)
	if err != nil {
		m.deny(tc, peer, refusedCertificate, err)
		return
	}
	who := id.String()
	line, err := readLine(tc)
	if err != nil {
		m.refuse(who, refusedPreamble, err)
		return
	}
	proto, serviceID, ok := strings.Cut(line, " ")
	if !ok || proto != meshALPN || serviceID == "" {
		m.deny(tc, who, refusedPreamble, fmt.Errorf("preamble %.64q: want %q", line, meshALPN+" SERVICE-ID"))
		return
	}
	if reason, err := m.authorize(id); err != nil {
		m.deny(tc, who, reason, err)
		return
	}
	addr, dest, err := m.localInstance(serviceID)
	if err != nil {
		m.deny(tc, who, refusedNotLocal, err)
		return
	}
	source := callerName(id)
	if d := m.intentions.decide(source, dest); !d.allowed {
		m.denied.add(source, dest)
		m.deny(tc, who, refusedIntention, errors.New(d.reason(source, dest, m.intentions.defaultAllow)))
		return
	}
	m.allowed.add(source, dest)
	up, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		m.deny(tc, who, refusedUnreachable, fmt.Errorf("instance %q at %s: %w", serviceID, addr, err))
		return
	}
	defer up.Close()
	if _, err := io.WriteString(tc, "ok\n"); err != nil {
		return
	}
	_ = raw.SetDeadline(time.Time{})
	m.setTunnel(raw, &tunnel{source, dest})
	m.forwarded.add(source, dest)
	m.active.Add(1)
	defer m.active.Add(-1)
	splice(tc, up)
}

// authorize checks the caller's identity against the replicated catalog:
// its node is alive, and a service identity names a service registered on
// that node.
func (m *mesh) authorize(id pki.ID) (reason string, err error) {
	mem, ok := m.member(id.Node)
	if !ok || mem.Status != gossip.StatusAlive {
		return refusedNodeNotAlive, fmt.Errorf("node %q is not an alive member", id.Node)
	}
	if id.Service == "" {
		return "", nil
	}
	for _, in := range m.catalog.NodeInstances(mem.Name) {
		if in.Service.Name == id.Service {
			return "", nil
		}
	}
	return refusedNotOnNode, fmt.Errorf("service %q is not registered on node %q", id.Service, id.Node)
}

// member finds the caller's node. Identities carry node names in lower
// case (URI hosts ignore case), so a node named with capitals is found by
// a case-insensitive match.
func (m *mesh) member(node string) (gossip.Member, bool) {
	if mem, ok := m.catalog.Member(node); ok {
		return mem, true
	}
	for _, mem := range m.catalog.Members() {
		if strings.EqualFold(mem.Name, node) {
			return mem, true
		}
	}
	return gossip.Member{}, false
}

// localInstance returns the address of one of this node's own instances,
// the way the proxy reaches it: its registered address, or the node's.
func (m *mesh) localInstance(serviceID string) (addr, service string, err error) {
	for _, in := range m.catalog.NodeInstances(m.local) {
		if in.Service.ID != serviceID {
			continue
		}
		if in.Service.Port == 0 {
			return "", "", fmt.Errorf("instance %q has no port", serviceID)
		}
		host := in.Service.Address
		if host == "" {
			host = in.Node.Addr.String()
		}
		return net.JoinHostPort(host, strconv.Itoa(in.Service.Port)), in.Service.Name, nil
	}
	return "", "", fmt.Errorf("no instance %q on node %q", serviceID, m.local)
}

// callerName is how metrics name a caller: its service, or node:NAME for
// a node's shared proxy (the source names intentions use).
func callerName(id pki.ID) string {
	if id.Service == "" {
		return "node:" + id.Node
	}
	return id.Service
}

// deny counts and logs a refusal, then answers the caller with the reason.
func (m *mesh) deny(tc *tls.Conn, who, reason string, err error) {
	m.refuse(who, reason, err) // counted before the peer can read the answer
	_, _ = io.WriteString(tc, "refused "+reason+": "+oneLine(err.Error())+"\n")
}

func (m *mesh) refuse(who, reason string, err error) {
	if m.refused.add(who, reason) {
		m.log.Warn("refused mesh connection", "peer", who, "reason", reason, "err", err)
	}
}

// Dial implements lb.Mesh.
func (m *mesh) Dial(ctx context.Context, via, instance, identity string) (net.Conn, error) {
	node, serviceID, ok := strings.Cut(instance, "/")
	if !ok {
		return nil, fmt.Errorf("mesh: instance %q is not NODE/SERVICE-ID", instance)
	}
	if m.ids.leaf(identity) == nil {
		return nil, fmt.Errorf("mesh: %s has no identity on this node", describeIdentity(identity))
	}
	cfg := m.clientConfig(identity).Clone()
	cfg.ServerName = node
	d := tls.Dialer{
		NetDialer: &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 5 * time.Second, Interval: 5 * time.Second, Count: 3}},
		Config:    cfg,
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, meshHandshakeTimeout)
		defer cancel()
	}
	c, err := d.DialContext(ctx, "tcp", via)
	if err != nil {
		return nil, fmt.Errorf("mesh: %s: %w", via, err)
	}
	tc := c.(*tls.Conn)
	if dl, ok := ctx.Deadline(); ok {
		_ = tc.SetDeadline(dl)
	}
	if _, err := io.WriteString(tc, meshALPN+" "+serviceID+"\n"); err != nil {
		tc.Close()
		return nil, fmt.Errorf("mesh: %s: %w", via, err)
	}
	reply, err := readLine(tc)
	if err != nil {
		tc.Close()
		return nil, fmt.Errorf("mesh: %s: no answer: %w", via, err)
	}
	if reply != "ok" {
		tc.Close()
		if why, ok := strings.CutPrefix(reply, "refused "+refusedIntention+": "); ok {
			return nil, &lb.DeniedError{Reason: "the agent of " + node + " refused: " + why}
		}
		return nil, fmt.Errorf("mesh: the agent of %s %s", node, reply)
	}
	_ = tc.SetDeadline(time.Time{})
	m.dialed.Add(1)
	return tc, nil
}

// clientConfig returns the TLS configuration of connections made as
// identity. The server must prove to be the node named in ServerName.
func (m *mesh) clientConfig(identity string) *tls.Config {
	if c, ok := m.clients.Load(identity); ok {
		return c.(*tls.Config)
	}
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{meshALPN},
		ClientSessionCache: tls.NewLRUClientSessionCache(256),
		// The server is checked by VerifyConnection, against the SPIFFE
		// identity of its node rather than a DNS name.
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			l := m.ids.leaf(identity)
			if l == nil {
				return nil, fmt.Errorf("%s has no identity on this node", describeIdentity(identity))
			}
			return &l.Cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := m.ids.Bundle().VerifyPeer(rawCerts(cs), time.Now())
			if err != nil {
				return err
			}
			if id.Service != "" || !strings.EqualFold(id.Node, cs.ServerName) {
				return fmt.Errorf("the agent presented %s, want the node identity of %q", id, cs.ServerName)
			}
			return nil
		},
	}
	actual, _ := m.clients.LoadOrStore(identity, cfg)
	return actual.(*tls.Config)
}

// reload forgets the TLS sessions made with the previous PKI material. A
// resumed session skips the certificates, carrying the ones of the session
// it resumes, whose chain may end at a root just removed: after a reload
// every new connection makes a full handshake with the current material.
// Open connections are not touched.
func (m *mesh) reload() {
	m.clients.Clear()
	m.server.Store(m.serverConfig())
}

func (m *mesh) track(c net.Conn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.conns[c] = nil
	return true
}

func (m *mesh) setTunnel(c net.Conn, t *tunnel) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.conns[c]; ok {
		m.conns[c] = t
	}
}

// recheck closes the forwarding connections the current intentions deny:
// a caller's keep-alive connection is refused at its next request, when its
// proxy connects again and is told why.
func (m *mesh) recheck() {
	m.mu.Lock()
	defer m.mu.Unlock()
	closed := map[tunnel]int{}
	for c, t := range m.conns {
		if t == nil {
			continue
		}
		if d := m.intentions.decide(t.source, t.destination); !d.allowed {
			c.Close()
			delete(m.conns, c)
			closed[*t]++
		}
	}
	for t, n := range closed {
		m.log.Info("closed mesh connections an intention now denies", "source", t.source,
			"destination", t.destination, "connections", n)
	}
}

func (m *mesh) untrack(c net.Conn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.conns, c)
}

// close ends every inbound mesh connection; call after the proxy drained.
func (m *mesh) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	for c := range m.conns {
		c.Close()
	}
}

var _ lb.Mesh = (*mesh)(nil)

// rawCerts returns the peer's certificate chain as it was sent.
func rawCerts(cs tls.ConnectionState) [][]byte {
	out := make([][]byte, len(cs.PeerCertificates))
	for i, c := range cs.PeerCertificates {
		out[i] = c.Raw
	}
	return out
}

// readLine reads one "\n"-terminated line of at most maxMeshLine bytes,
// byte by byte so that nothing after it is consumed (a TLS connection
// serves these reads from its record buffer).
func readLine(r io.Reader) (string, error) {
	var buf [maxMeshLine]byte
	for n := 0; n < len(buf); n++ {
		if _, err := io.ReadFull(r, buf[n:n+1]); err != nil {
			return "", err
		}
		if buf[n] == '\n' {
			return string(buf[:n]), nil
		}
	}
	return "", fmt.Errorf("line longer than %d bytes", maxMeshLine)
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// splice copies bytes both ways until both directions ended, passing each
// end on as a half-close.
func splice(a, b net.Conn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(b, a)
		closeWrite(b)
	}()
	_, _ = io.Copy(a, b)
	closeWrite(a)
	<-done
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		return
	}
	c.Close()
}

// refusalCounter counts refusals by reason and reports the first of each
// (peer, reason), so that a misbehaving peer is logged once, not flooded.
type refusalCounter struct {
	mu     sync.Mutex
	counts map[string]uint64
	logged map[[2]string]bool
}

func (r *refusalCounter) add(peer, reason string) (first bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.counts == nil {
		r.counts, r.logged = map[string]uint64{}, map[[2]string]bool{}
	}
	r.counts[reason]++
	k := [2]string{peer, reason}
	if r.logged[k] {
		return false
	}
	if len(r.logged) >= 4096 {
		clear(r.logged)
	}
	r.logged[k] = true
	return true
}

func (r *refusalCounter) snapshot() map[string]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]uint64, len(r.counts))
	for k, v := range r.counts {
		out[k] = v
	}
	return out
}

// pairCounter counts by (source, destination).
type pairCounter struct {
	mu sync.Mutex
	n  map[[2]string]uint64
}

func (c *pairCounter) add(src, dst string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[[2]string]uint64{}
	}
	c.n[[2]string{src, dst}]++
}

func (c *pairCounter) snapshot() map[[2]string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[[2]string]uint64, len(c.n))
	for k, v := range c.n {
		out[k] = v
	}
	return out
}

// errNoPKI is the answer of the identity endpoints of an agent without one.
var errNoPKI = errors.New("this agent has no PKI: start it with --ca-file, --node-cert-file and --node-key-file")
