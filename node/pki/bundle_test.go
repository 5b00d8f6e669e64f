package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net/url"
	"path/filepath"
	"testing"
	"time"
)

func TestLoadBundle(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	ca := newTestCA(t, testTD, now)
	n := ca.node(t, "a", now)
	caFile := writeFile(t, dir, "ca.pem", ca.certPEM)
	certFile := writeFile(t, dir, "a.pem", n.certPEM)
	keyFile := writeFile(t, dir, "a-key.pem", n.keyPEM)

	b, err := LoadBundle(caFile, certFile, keyFile, "a", now)
	if err != nil {
		t.Fatalf("LoadBundle: %v", err)
	}
	if b.TrustDomain != testTD || b.Node != "a" {
		t.Errorf("trust domain %q, node %q", b.TrustDomain, b.Node)
	}
	if len(b.Roots) != 1 || !b.Roots[0].Equal(ca.cert) || !b.NodeCert.Equal(n.cert) {
		t.Error("roots or node certificate are not the files'")
	}
	if k, ok := b.NodeKey.(*ecdsa.PrivateKey); !ok || !k.Equal(n.key) {
		t.Errorf("NodeKey %T is not the key file's", b.NodeKey)
	}
	if !bytes.Equal(b.RootsPEM(), ca.certPEM) {
		t.Errorf("RootsPEM:\n%s\nwant\n%s", b.RootsPEM(), ca.certPEM)
	}
	pool := b.Pool()
	if _, err := n.cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("the node certificate does not verify against Pool: %v", err)
	}
	pool.AddCert(newTestCA(t, testTD, now).cert)
	if b.roots.Equal(pool) {
		t.Error("Pool is not a copy")
	}
}

func TestLoadBundleKeyFormats(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, testTD, now)
	n := ca.node(t, "a", now)
	der, err := x509.MarshalPKCS8PrivateKey(n.key)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8 := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	// openssl ecparam -genkey writes the curve before the key.
	params := append(pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}}), n.keyPEM...)
	for name, keyPEM := range map[string][]byte{"SEC1": n.keyPEM, "PKCS#8": pkcs8, "SEC1 after EC PARAMETERS": params} {
		if _, err := newBundle(files{"ca.pem", "a.pem", "a-key.pem"}, ca.certPEM, n.certPEM, keyPEM, "a", now); err != nil {
			t.Errorf("%s key: %v", name, err)
		}
	}
}

func TestLoadBundleNodeNameCase(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, testTD, now)
	n := ca.node(t, "Web_1", now)
	for _, agent := range []string{"Web_1", "web_1", "WEB_1"} {
		b, err := newBundle(files{"ca.pem", "n.pem", "n-key.pem"}, ca.certPEM, n.certPEM, n.keyPEM, agent, now)
		if err != nil {
			t.Fatalf("agent %q: %v", agent, err)
		}
		if b.Node != "web_1" {
			t.Errorf("agent %q: Node %q, want web_1", agent, b.Node)
		}
	}
}

// TestLoadBundleRotation loads two roots of one trust domain: node CAs of
// either are accepted, and trust each other.
func TestLoadBundleRotation(t *testing.T) {
	now := time.Now()
	old, cur := newTestCA(t, testTD, now), newTestCA(t, testTD, now)
	caPEM := append(append([]byte{}, old.certPEM...), cur.certPEM...)
	var bundles []*Bundle
	for i, root := range []*testCA{old, cur} {
		name := []string{"a", "b"}[i]
		n := root.node(t, name, now)
		b, err := newBundle(files{"ca.pem", "n.pem", "n-key.pem"}, caPEM, n.certPEM, n.keyPEM, name, now)
		if err != nil {
			t.Fatalf("node CA of root %d: %v", i+1, err)
		}
		if len(b.Roots) != 2 {
			t.Fatalf("%d roots, want 2", len(b.Roots))
		}
		bundles = append(bundles, b)
	}
	leaf, err := bundles[1].IssueLeaf("web", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := bundles[0].VerifyPeer(leaf.Cert.Certificate, now); err != nil || id != leaf.ID {
		t.Errorf("a leaf of the new root, checked by a node of the old: %v, %v", id, err)
	}
}

func TestLoadBundleRefuses(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, testTD, now)
	a := ca.node(t, "a", now)
	otherCA := newTestCA(t, testTD, now)
	otherTD := newTestCA(t, "other.shoal", now)
	past := newTestCA(t, testTD, now.Add(-2*nodeLife))
	expired := past.node(t, "a", now.Add(-2*nodeLife))
	future := newTestCA(t, testTD, now.Add(time.Hour))
	early := ca.node(t, "a", now.Add(time.Hour)) // a good root, a node CA from the future
	// A node CA without the name constraint, as another tool might make.
	loose, looseKey := signCert(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "a"}, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true,
		MaxPathLen: 0, MaxPathLenZero: true, URIs: []*url.URL{{Scheme: "spiffe", Host: "a." + testTD}},
	}, ca.cert, ca.key)
	leaf, err := (&Bundle{TrustDomain: testTD, Node: "a", NodeCert: a.cert, NodeKey: a.key}).IssueLeaf("web", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaDER, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384DER, _ := x509.MarshalECPrivateKey(p384)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

	tests := []struct {
		name             string
		caPEM, cert, key []byte
		node             string
		want             []string
	}{
		{"CA file not PEM", []byte("junk"), a.certPEM, a.keyPEM, "a", []string{"CA file", "ca.pem", "no PEM CERTIFICATE block"}},
		{"CA file is a node CA", a.certPEM, a.certPEM, a.keyPEM, "a", []string{"CA file ca.pem", `certificate 1 ("a") is not a root`}},
		{"CA file holds a leaf", leaf.CertPEM, a.certPEM, a.keyPEM, "a", []string{"CA file", "ca.pem", "is not a CA certificate"}},
		{"roots of two trust domains", cat(ca.certPEM, otherTD.certPEM), a.certPEM, a.keyPEM, "a", []string{"ca.pem", `certificate 2`, `is for trust domain "other.shoal", but certificate 1 is for "test.shoal"`}},
		{"root not yet valid", cat(ca.certPEM, future.certPEM), a.certPEM, a.keyPEM, "a", []string{"ca.pem", "certificate 2", "is not valid until"}},
		{"node cert not PEM", ca.certPEM, []byte("junk"), a.keyPEM, "a", []string{"node certificate", "a.pem", "no PEM CERTIFICATE block"}},
		{"node cert expired", cat(ca.certPEM, past.certPEM), expired.certPEM, expired.keyPEM, "a", []string{"node certificate a.pem", "expired on " + stamp(expired.cert.NotAfter), "it is now " + stamp(now)}},
		{"node cert not yet valid", ca.certPEM, early.certPEM, early.keyPEM, "a", []string{"node certificate a.pem", "is not valid until"}},
		{"node cert of another CA", ca.certPEM, otherCA.node(t, "a", now).certPEM, a.keyPEM, "a", []string{"node certificate a.pem does not chain to any root in CA file ca.pem"}},
		{"node cert of another trust domain", ca.certPEM, otherTD.node(t, "a", now).certPEM, a.keyPEM, "a", []string{"node certificate a.pem", `is in trust domain "other.shoal", not "test.shoal"`}},
		{"node cert of another node", ca.certPEM, ca.node(t, "b", now).certPEM, a.keyPEM, "a", []string{"node certificate a.pem", `is for "b", but this agent is "a"`}},
		{"node cert self-signed", ca.certPEM, ca.certPEM, ca.keyPEM, "a", []string{"node certificate a.pem", "is self-signed"}},
		{"node cert is a leaf", ca.certPEM, leaf.CertPEM, leaf.KeyPEM, "a", []string{"node certificate a.pem", "is not a CA certificate"}},
		{"node cert without name constraint", ca.certPEM, encodeCert(loose.Raw), mustKeyPEM(t, looseKey), "a", []string{"node certificate a.pem", "is not limited to the identities of its node"}},
		{"key of another cert", ca.certPEM, a.certPEM, ca.keyPEM, "a", []string{"node key a-key.pem does not match node certificate a.pem"}},
		{"key not PEM", ca.certPEM, a.certPEM, []byte("junk"), "a", []string{"node key a-key.pem", "no PEM"}},
		{"RSA key", ca.certPEM, a.certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: rsaDER}), "a", []string{"node key a-key.pem", "want an ECDSA P-256 key"}},
		{"P-384 key", ca.certPEM, a.certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: p384DER}), "a", []string{"node key a-key.pem", "ECDSA P-384", "want an ECDSA P-256 key"}},
		{"encrypted key", ca.certPEM, a.certPEM, pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}), "a", []string{"node key a-key.pem", "encrypted"}},
		{"bad agent name", ca.certPEM, a.certPEM, a.keyPEM, "a.b", []string{`node name "a.b"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := newBundle(files{"ca.pem", "a.pem", "a-key.pem"}, tt.caPEM, tt.cert, tt.key, tt.node, now)
			if b != nil {
				t.Error("returned a bundle with an error")
			}
			wantErrText(t, err, tt.want...)
		})
	}
}

func TestLoadBundleUnreadable(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	ca := newTestCA(t, testTD, now)
	n := ca.node(t, "a", now)
	caFile := writeFile(t, dir, "ca.pem", ca.certPEM)
	certFile := writeFile(t, dir, "a.pem", n.certPEM)
	keyFile := writeFile(t, dir, "a-key.pem", n.keyPEM)
	missing := filepath.Join(dir, "missing.pem")
	for _, tt := range []struct {
		ca, cert, key, want string
	}{
		{missing, certFile, keyFile, "CA file: open " + missing},
		{caFile, missing, keyFile, "node certificate: open " + missing},
		{caFile, certFile, missing, "node key: open " + missing},
	} {
		_, err := LoadBundle(tt.ca, tt.cert, tt.key, "a", now)
		wantErrText(t, err, tt.want, "no such file")
	}
}

func mustKeyPEM(t testing.TB, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	b, err := encodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
