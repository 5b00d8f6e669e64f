package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	testTD   = "test.shoal"
	day      = 24 * time.Hour
	caLife   = 5 * 365 * day
	nodeLife = 365 * day
)

// testCA is a root CA with its key, in PEM and parsed.
type testCA struct {
	certPEM, keyPEM []byte
	cert            *x509.Certificate
	key             *ecdsa.PrivateKey
}

func newTestCA(t testing.TB, td string, now time.Time) *testCA {
	t.Helper()
	certPEM, keyPEM, err := CreateCA(td, caLife, now)
	if err != nil {
		t.Fatalf("CreateCA: %v", err)
	}
	return parseTestCA(t, certPEM, keyPEM)
}

func parseTestCA(t testing.TB, certPEM, keyPEM []byte) *testCA {
	t.Helper()
	certs, err := ParseCertificates(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{certPEM: certPEM, keyPEM: keyPEM, cert: certs[0], key: key}
}

// node signs a node CA for name.
func (ca *testCA) node(t testing.TB, name string, now time.Time) *testCA {
	t.Helper()
	certPEM, keyPEM, err := CreateNodeCA(ca.certPEM, ca.keyPEM, name, nodeLife, now)
	if err != nil {
		t.Fatalf("CreateNodeCA(%q): %v", name, err)
	}
	return parseTestCA(t, certPEM, keyPEM)
}

// bundle loads the bundle of node name, with ca's root as the CA file.
func (ca *testCA) bundle(t testing.TB, name string, now time.Time) *Bundle {
	t.Helper()
	n := ca.node(t, name, now)
	b, err := newBundle(files{"ca.pem", "node.pem", "node-key.pem"}, ca.certPEM, n.certPEM, n.keyPEM, name, now)
	if err != nil {
		t.Fatalf("load the bundle of %q: %v", name, err)
	}
	return b
}

// writeFile writes data to name in dir and returns its path.
func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// signCert signs tmpl with parent's key, for certificates this package
// would never make. The template gets a key and a serial if it has none.
func signCert(t testing.TB, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber, _ = newSerial()
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

// leafTemplate is a leaf for uri, as IssueLeaf would make it.
func leafTemplate(uri string, now time.Time) *x509.Certificate {
	u, err := url.Parse(uri)
	if err != nil {
		panic(err)
	}
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: "hand-made"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{u},
	}
}

// wantRefused fails the test unless err is a *RefusedError with reason
// whose one-line message contains every part.
func wantRefused(t testing.TB, err error, reason string, parts ...string) *RefusedError {
	t.Helper()
	var r *RefusedError
	if !errors.As(err, &r) {
		t.Fatalf("error %v (%T), want a *RefusedError %q", err, err, reason)
	}
	if r.Reason != reason {
		t.Errorf("refused as %q (%v), want %q", r.Reason, err, reason)
	}
	wantErrText(t, err, parts...)
	return r
}

// wantErrText fails the test unless err is non-nil, one line, and
// contains every part.
func wantErrText(t testing.TB, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not contain %q", err, p)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error %q is not one line", err)
	}
}
