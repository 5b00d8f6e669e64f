package pki

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"regexp"
	"strings"
	"testing"
	"time"
)

var oidNameConstraints = asn1.ObjectIdentifier{2, 5, 29, 30}

func TestCreateCA(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, testTD, now)
	c := ca.cert
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 1 {
		t.Errorf("IsCA %v, MaxPathLen %d: want a CA with path length 1", c.IsCA, c.MaxPathLen)
	}
	if want := x509.KeyUsageCertSign | x509.KeyUsageCRLSign; c.KeyUsage != want {
		t.Errorf("KeyUsage %v, want %v", c.KeyUsage, want)
	}
	if c.PublicKeyAlgorithm != x509.ECDSA || c.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		t.Errorf("key %v signed with %v, want ECDSA P-256", c.PublicKeyAlgorithm, c.SignatureAlgorithm)
	}
	if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 || c.SerialNumber.BitLen() < 120 {
		t.Errorf("serial %v, want a random positive 128-bit number", c.SerialNumber)
	}
	if !regexp.MustCompile(`^Shoal CA [0-9a-f]{8}$`).MatchString(c.Subject.CommonName) {
		t.Errorf("CN %q, want \"Shoal CA <8 hex digits>\"", c.Subject.CommonName)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://"+testTD {
		t.Errorf("URIs %v, want [spiffe://%s]", c.URIs, testTD)
	}
	if want := now.Add(-time.Minute).Truncate(time.Second); !c.NotBefore.Equal(want) {
		t.Errorf("NotBefore %v, want %v", c.NotBefore, want)
	}
	if want := now.Add(caLife).Truncate(time.Second); !c.NotAfter.Equal(want) {
		t.Errorf("NotAfter %v, want %v", c.NotAfter, want)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if !ca.key.PublicKey.Equal(c.PublicKey) {
		t.Error("the key is not the certificate's")
	}
	if b, _ := pem.Decode(ca.keyPEM); b == nil || b.Type != "EC PRIVATE KEY" {
		t.Errorf("key PEM %q, want an EC PRIVATE KEY block", ca.keyPEM)
	}
	other := newTestCA(t, testTD, now)
	if other.cert.SerialNumber.Cmp(c.SerialNumber) == 0 || other.key.Equal(ca.key) {
		t.Error("two CAs share a serial or a key")
	}
}

func TestCreateCARandomTrustDomain(t *testing.T) {
	uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\.shoal$`)
	seen := map[string]bool{}
	for range 3 {
		ca := newTestCA(t, "", time.Now())
		td, err := rootTrustDomain(ca.cert)
		if err != nil {
			t.Fatal(err)
		}
		if !uuid.MatchString(td) {
			t.Errorf("trust domain %q, want \"<uuid v4>.shoal\"", td)
		}
		if seen[td] {
			t.Errorf("trust domain %q twice", td)
		}
		seen[td] = true
	}
}

func TestCreateCARefuses(t *testing.T) {
	for _, tt := range []struct {
		td       string
		validFor time.Duration
		want     string
	}{
		{"Test.Shoal", caLife, "trust domain"},
		{"a..b", caLife, "trust domain"},
		{"a_b", caLife, "trust domain"},
		{strings.Repeat("a.", 95) + "a", caLife, "trust domain"},
		{testTD, 0, "not positive"},
		{testTD, -time.Hour, "not positive"},
	} {
		certPEM, keyPEM, err := CreateCA(tt.td, tt.validFor, time.Now())
		if certPEM != nil || keyPEM != nil {
			t.Errorf("CreateCA(%q, %v) returned PEM with an error", tt.td, tt.validFor)
		}
		wantErrText(t, err, tt.want)
	}
}

func TestCreateNodeCA(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, testTD, now)
	n := ca.node(t, "a", now)
	c := n.cert
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("IsCA %v, MaxPathLen %d, MaxPathLenZero %v: want a CA with path length 0", c.IsCA, c.MaxPathLen, c.MaxPathLenZero)
	}
	if want := x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature; c.KeyUsage != want {
		t.Errorf("KeyUsage %v, want %v", c.KeyUsage, want)
	}
	if c.Subject.CommonName != "a" {
		t.Errorf("CN %q, want a", c.Subject.CommonName)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://a."+testTD {
		t.Errorf("URIs %v, want [spiffe://a.%s]", c.URIs, testTD)
	}
	if len(c.PermittedURIDomains) != 1 || c.PermittedURIDomains[0] != "a."+testTD {
		t.Errorf("PermittedURIDomains %q, want [a.%s]", c.PermittedURIDomains, testTD)
	}
	critical := false
	for _, e := range c.Extensions {
		if e.Id.Equal(oidNameConstraints) {
			critical = e.Critical
		}
	}
	if !critical || !c.PermittedDNSDomainsCritical {
		t.Error("the name constraints extension is not critical")
	}
	if err := c.CheckSignatureFrom(ca.cert); err != nil {
		t.Errorf("not signed by the root: %v", err)
	}
	if !n.key.PublicKey.Equal(c.PublicKey) || n.key.Equal(ca.key) {
		t.Error("the key is not the node certificate's own")
	}
	if want := now.Add(nodeLife).Truncate(time.Second); !c.NotAfter.Equal(want) {
		t.Errorf("NotAfter %v, want %v", c.NotAfter, want)
	}
}

func TestCreateNodeCACappedAtRoot(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, testTD, now)
	certPEM, _, err := CreateNodeCA(ca.certPEM, ca.keyPEM, "a", 10*caLife, now)
	if err != nil {
		t.Fatal(err)
	}
	certs, _ := ParseCertificates(certPEM)
	if !certs[0].NotAfter.Equal(ca.cert.NotAfter) {
		t.Errorf("NotAfter %v, want the root's %v", certs[0].NotAfter, ca.cert.NotAfter)
	}
}

func TestCreateNodeCAPicksTheRootOfTheKey(t *testing.T) {
	now := time.Now()
	old, cur := newTestCA(t, testTD, now), newTestCA(t, testTD, now)
	bundle := append(append([]byte{}, old.certPEM...), cur.certPEM...)
	certPEM, _, err := CreateNodeCA(bundle, cur.keyPEM, "a", nodeLife, now)
	if err != nil {
		t.Fatal(err)
	}
	certs, _ := ParseCertificates(certPEM)
	if err := certs[0].CheckSignatureFrom(cur.cert); err != nil {
		t.Errorf("not signed by the root of the key: %v", err)
	}
}

func TestCreateNodeCARefuses(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, testTD, now)
	other := newTestCA(t, testTD, now)
	n := ca.node(t, "a", now)
	past := newTestCA(t, testTD, now.Add(-10*caLife))
	tests := []struct {
		name            string
		certPEM, keyPEM []byte
		node            string
		validFor        time.Duration
		want            string
	}{
		{"key of another CA", ca.certPEM, other.keyPEM, "a", nodeLife, "the CA key does not match the CA certificate"},
		{"node CA as the CA", n.certPEM, n.keyPEM, "b", nodeLife, "not a root"},
		{"not PEM", []byte("hello"), ca.keyPEM, "a", nodeLife, "CA certificate: no PEM CERTIFICATE block"},
		{"no key", ca.certPEM, ca.certPEM, "a", nodeLife, "CA key: no PEM"},
		{"expired CA", past.certPEM, past.keyPEM, "a", nodeLife, "CA certificate: expired on"},
		{"bad name", ca.certPEM, ca.keyPEM, "a.b", nodeLife, `node name "a.b"`},
		{"empty name", ca.certPEM, ca.keyPEM, "", nodeLife, `node name ""`},
		{"long name", ca.certPEM, ca.keyPEM, strings.Repeat("n", 64), nodeLife, "node name"},
		{"no validity", ca.certPEM, ca.keyPEM, "a", 0, "not positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certPEM, keyPEM, err := CreateNodeCA(tt.certPEM, tt.keyPEM, tt.node, tt.validFor, now)
			if certPEM != nil || keyPEM != nil {
				t.Error("returned PEM with an error")
			}
			wantErrText(t, err, tt.want)
		})
	}
}
