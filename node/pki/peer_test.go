package pki

import (
	"crypto/ecdsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"
)

// mesh is a root and the bundles of nodes a and b.
type mesh struct {
	ca   *testCA
	a, b *Bundle
	now  time.Time
}

func newMesh(t testing.TB) *mesh {
	now := time.Now()
	ca := newTestCA(t, testTD, now)
	return &mesh{ca: ca, a: ca.bundle(t, "a", now), b: ca.bundle(t, "b", now), now: now}
}

func TestVerifyPeer(t *testing.T) {
	m := newMesh(t)
	for _, service := range []string{"web", ""} {
		l, err := m.b.IssueLeaf(service, time.Hour, m.now)
		if err != nil {
			t.Fatal(err)
		}
		id, err := m.a.VerifyPeer(l.Cert.Certificate, m.now)
		if err != nil {
			t.Fatalf("VerifyPeer(%s): %v", l.ID, err)
		}
		if want := (ID{TrustDomain: testTD, Node: "b", Service: service}); id != want {
			t.Errorf("VerifyPeer = %+v, want %+v", id, want)
		}
	}
}

// TestVerifyPeerNodeNames checks that x509's verifier takes what node
// names allow as the host of a URI under a name constraint: '_', and
// uppercase, which identities fold.
func TestVerifyPeerNodeNames(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, testTD, now)
	a := ca.bundle(t, "a", now)
	for _, name := range []string{"web_1", "Web-1", "X", "n0_-_9"} {
		b := ca.bundle(t, name, now)
		l, err := b.IssueLeaf("svc_1", time.Hour, now)
		if err != nil {
			t.Fatalf("IssueLeaf on %q: %v", name, err)
		}
		id, err := a.VerifyPeer(l.Cert.Certificate, now)
		if err != nil {
			t.Fatalf("a leaf of node %q: %v", name, err)
		}
		if id != l.ID || !strings.EqualFold(id.Node, name) || id.Node != strings.ToLower(name) {
			t.Errorf("node %q: VerifyPeer = %+v, issued %+v", name, id, l.ID)
		}
	}
}

// TestVerifyPeerNameConstraint proves the node CA's name constraint: a
// leaf node a's CA signs for node b is refused by the standard chain
// verification, while the same leaf for a is accepted.
func TestVerifyPeerNameConstraint(t *testing.T) {
	m := newMesh(t)
	for _, tt := range []struct {
		uri    string
		reason string
	}{
		{"spiffe://a.test.shoal/svc/web", ""},
		{"spiffe://b.test.shoal/svc/web", ReasonBadChain},
		{"spiffe://B.test.shoal/svc/web", ReasonBadChain},
		{"spiffe://b.test.shoal/node", ReasonBadChain},
		{"spiffe://x.a.test.shoal/svc/web", ReasonBadID}, // permitted by "a.test.shoal", but not an ID
	} {
		leaf, _ := signCert(t, leafTemplate(tt.uri, m.now), m.a.NodeCert, nodeKey(m.a))
		id, err := m.b.VerifyPeer([][]byte{leaf.Raw, m.a.NodeCert.Raw}, m.now)
		if tt.reason == "" {
			if err != nil {
				t.Errorf("%s signed by the CA of a: %v", tt.uri, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s signed by the CA of a was accepted as %v", tt.uri, id)
			continue
		}
		r := wantRefused(t, err, tt.reason)
		if tt.reason == ReasonBadChain {
			wantErrText(t, err, "not permitted")
			var inv x509.CertificateInvalidError
			if !errors.As(r, &inv) || inv.Reason != x509.CANotAuthorizedForThisName {
				t.Errorf("refused with %v, want x509's CANotAuthorizedForThisName", r.Err)
			}
		}
	}
}

// TestVerifyPeerPathLength proves the node CA's path length of 0: a
// sub-CA it signs, even one within its name constraint, signs nothing
// that verifies.
func TestVerifyPeerPathLength(t *testing.T) {
	m := newMesh(t)
	sub, subKey := signCert(t, &x509.Certificate{
		Subject:   pkix.Name{CommonName: "sub"},
		NotBefore: m.now.Add(-time.Minute), NotAfter: m.now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true, IsCA: true,
		URIs: []*url.URL{{Scheme: "spiffe", Host: "a." + testTD}},
	}, m.a.NodeCert, nodeKey(m.a))
	leaf, _ := signCert(t, leafTemplate("spiffe://a.test.shoal/svc/web", m.now), sub, subKey)
	_, err := m.b.VerifyPeer([][]byte{leaf.Raw, sub.Raw, m.a.NodeCert.Raw}, m.now)
	r := wantRefused(t, err, ReasonBadChain)
	var inv x509.CertificateInvalidError
	if !errors.As(r, &inv) || inv.Reason != x509.TooManyIntermediates || !inv.Cert.Equal(m.a.NodeCert) {
		t.Errorf("refused with %v, want the node CA's TooManyIntermediates", r.Err)
	}
}

func TestVerifyPeerRefuses(t *testing.T) {
	m := newMesh(t)
	web, err := m.a.IssueLeaf("web", time.Hour, m.now)
	if err != nil {
		t.Fatal(err)
	}
	stranger := newTestCA(t, testTD, m.now).bundle(t, "a", m.now)
	foreign, _ := stranger.IssueLeaf("web", time.Hour, m.now)
	byRoot, _ := signCert(t, leafTemplate("spiffe://a.test.shoal/node", m.now), m.ca.cert, m.ca.key)
	twoURIs := leafTemplate("spiffe://a.test.shoal/svc/web", m.now)
	twoURIs.URIs = append(twoURIs.URIs, &url.URL{Scheme: "spiffe", Host: "a." + testTD, Path: "/node"})
	twoIDs, _ := signCert(t, twoURIs, m.a.NodeCert, nodeKey(m.a))
	badPath, _ := signCert(t, leafTemplate("spiffe://a.test.shoal/admin", m.now), m.a.NodeCert, nodeKey(m.a))
	noURI := leafTemplate("spiffe://a.test.shoal/node", m.now)
	noURI.URIs, noURI.DNSNames = nil, []string{"a.test.shoal"}
	dnsOnly, _ := signCert(t, noURI, m.a.NodeCert, nodeKey(m.a))
	nodeDER := m.a.NodeCert.Raw

	for _, tt := range []struct {
		name   string
		raw    [][]byte
		now    time.Time
		reason string
		want   string
	}{
		{"nothing", nil, m.now, ReasonNoCertificate, "no certificate"},
		{"garbage", [][]byte{[]byte("junk")}, m.now, ReasonBadCertificate, "peer certificate"},
		{"garbage intermediate", [][]byte{web.Cert.Certificate[0], []byte("junk")}, m.now, ReasonBadCertificate, "intermediate"},
		{"too many", [][]byte{nodeDER, nodeDER, nodeDER, nodeDER, nodeDER}, m.now, ReasonBadChain, "5 certificates"},
		{"another CA", foreign.Cert.Certificate, m.now, ReasonBadChain, "unknown authority"},
		{"no intermediate", web.Cert.Certificate[:1], m.now, ReasonBadChain, "unknown authority"},
		{"expired leaf", web.Cert.Certificate, m.now.Add(2 * time.Hour), ReasonExpired, "expired on"},
		{"leaf not yet valid", web.Cert.Certificate, m.now.Add(-time.Hour), ReasonNotYetValid, "not valid until"},
		{"expired node CA", [][]byte{mustSign(t, leafTemplate("spiffe://a.test.shoal/node", m.now.Add(2*nodeLife)), m.a), nodeDER}, m.now.Add(2 * nodeLife), ReasonExpired, "expired"},
		{"node CA as a leaf", [][]byte{nodeDER}, m.now, ReasonBadChain, "is a CA"},
		{"leaf signed by the root", [][]byte{byRoot.Raw}, m.now, ReasonWrongNode, `not signed by the CA of node "a"`},
		{"two identities", [][]byte{twoIDs.Raw, nodeDER}, m.now, ReasonBadID, "2 URI SANs"},
		{"no identity", [][]byte{dnsOnly.Raw, nodeDER}, m.now, ReasonBadID, "0 URI SANs"},
		{"not an identity", [][]byte{badPath.Raw, nodeDER}, m.now, ReasonBadID, "neither /node nor /svc/SERVICE"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			id, err := m.b.VerifyPeer(tt.raw, tt.now)
			if err == nil {
				t.Fatalf("accepted as %v", id)
			}
			wantRefused(t, err, tt.reason, tt.want)
		})
	}
}

func nodeKey(b *Bundle) *ecdsa.PrivateKey { return b.NodeKey.(*ecdsa.PrivateKey) }

// mustSign signs tmpl with b's node CA, bypassing IssueLeaf's checks.
func mustSign(t testing.TB, tmpl *x509.Certificate, b *Bundle) []byte {
	c, _ := signCert(t, tmpl, b.NodeCert, nodeKey(b))
	return c.Raw
}

func BenchmarkVerifyPeer(b *testing.B) {
	m := newMesh(b)
	l, err := m.b.IssueLeaf("web", time.Hour, m.now)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.a.VerifyPeer(l.Cert.Certificate, m.now); err != nil {
			b.Fatal(err)
		}
	}
}

// TestVerifyPeerZeroBundle checks that a Bundle not made by LoadBundle
// trusts nothing, not the system's roots.
func TestVerifyPeerZeroBundle(t *testing.T) {
	m := newMesh(t)
	l, _ := m.b.IssueLeaf("web", time.Hour, m.now)
	var zero Bundle
	_, err := zero.VerifyPeer(l.Cert.Certificate, m.now)
	wantRefused(t, err, ReasonBadChain)
	sig, cert, _ := m.b.Sign([]byte("x"))
	wantRefused(t, zero.VerifySigned("b", []byte("x"), sig, cert, m.now), ReasonBadChain)
}
