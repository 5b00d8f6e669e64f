package pki

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"
	"time"
)

func TestIssueLeaf(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, testTD, now)
	b := ca.bundle(t, "a", now)
	for _, tt := range []struct {
		service, uri, cn string
	}{
		{"web", "spiffe://a.test.shoal/svc/web", "web"},
		{"", "spiffe://a.test.shoal/node", "a"},
		{"API_v2.internal", "spiffe://a.test.shoal/svc/API_v2.internal", "API_v2.internal"},
	} {
		l, err := b.IssueLeaf(tt.service, time.Hour, now)
		if err != nil {
			t.Fatalf("IssueLeaf(%q): %v", tt.service, err)
		}
		c := l.Cert.Leaf
		if l.ID.String() != tt.uri || len(c.URIs) != 1 || c.URIs[0].String() != tt.uri {
			t.Errorf("ID %v, URIs %v, want %s", l.ID, c.URIs, tt.uri)
		}
		if c.Subject.CommonName != tt.cn {
			t.Errorf("CN %q, want %q", c.Subject.CommonName, tt.cn)
		}
		if c.IsCA || c.KeyUsage != x509.KeyUsageDigitalSignature {
			t.Errorf("IsCA %v, KeyUsage %v: want a leaf for signatures", c.IsCA, c.KeyUsage)
		}
		if want := now.Add(-time.Minute).Truncate(time.Second); !l.NotBefore.Equal(want) || !c.NotBefore.Equal(want) {
			t.Errorf("NotBefore %v, want %v", l.NotBefore, want)
		}
		if want := now.Add(time.Hour).Truncate(time.Second); !l.NotAfter.Equal(want) {
			t.Errorf("NotAfter %v, want %v", l.NotAfter, want)
		}
		if l.Serial.Cmp(c.SerialNumber) != 0 || l.Serial.BitLen() < 120 {
			t.Errorf("Serial %v, want the certificate's random %v", l.Serial, c.SerialNumber)
		}
		if len(l.Cert.Certificate) != 2 || string(l.Cert.Certificate[1]) != string(b.NodeCert.Raw) {
			t.Error("Cert.Certificate is not [leaf, node CA]")
		}
		// The PEM pair is what a service is handed: it must chain to the
		// root with the root alone, for both ends of a connection.
		pair, err := tls.X509KeyPair(l.CertPEM, l.KeyPEM)
		if err != nil {
			t.Fatalf("CertPEM and KeyPEM are not a pair: %v", err)
		}
		if !strings.HasPrefix(string(l.KeyPEM), "-----BEGIN EC PRIVATE KEY-----") {
			t.Errorf("KeyPEM is not an EC PRIVATE KEY: %.40q", l.KeyPEM)
		}
		if !pair.PrivateKey.(*ecdsa.PrivateKey).Equal(l.Cert.PrivateKey) {
			t.Error("KeyPEM is not Cert.PrivateKey")
		}
		certs, err := ParseCertificates(l.CertPEM)
		if err != nil || len(certs) != 2 || !certs[0].Equal(c) || !certs[1].Equal(b.NodeCert) {
			t.Fatalf("CertPEM is not the leaf then the node CA (%v)", err)
		}
		roots, inter := x509.NewCertPool(), x509.NewCertPool()
		roots.AddCert(ca.cert)
		inter.AddCert(certs[1])
		for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if _, err := c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
				t.Errorf("the leaf does not verify for usage %v: %v", usage, err)
			}
		}
	}
}

func TestIssueLeafFreshKeys(t *testing.T) {
	now := time.Now()
	b := newTestCA(t, testTD, now).bundle(t, "a", now)
	l1, _ := b.IssueLeaf("web", time.Hour, now)
	l2, _ := b.IssueLeaf("web", time.Hour, now)
	if l1.Cert.PrivateKey.(*ecdsa.PrivateKey).Equal(l2.Cert.PrivateKey) || l1.Serial.Cmp(l2.Serial) == 0 {
		t.Error("two leaves share a key or a serial")
	}
}

func TestIssueLeafCappedAtNodeCA(t *testing.T) {
	now := time.Now()
	b := newTestCA(t, testTD, now).bundle(t, "a", now)
	l, err := b.IssueLeaf("web", 10*nodeLife, now)
	if err != nil {
		t.Fatal(err)
	}
	if !l.NotAfter.Equal(b.NodeCert.NotAfter) {
		t.Errorf("NotAfter %v, want the node CA's %v", l.NotAfter, b.NodeCert.NotAfter)
	}
}

func TestIssueLeafRefuses(t *testing.T) {
	now := time.Now()
	b := newTestCA(t, testTD, now).bundle(t, "a", now)
	for _, tt := range []struct {
		service  string
		validFor time.Duration
		now      time.Time
		want     string
	}{
		{"a/b", time.Hour, now, `service name "a/b"`},
		{"..", time.Hour, now, `service name ".."`},
		{".web", time.Hour, now, `service name ".web"`},
		{"we b", time.Hour, now, "service name"},
		{strings.Repeat("s", 129), time.Hour, now, "service name"},
		{"web", 0, now, "not positive"},
		{"web", time.Hour, now.Add(2 * nodeLife), "the node certificate expired on"},
		{"web", time.Hour, now.Add(-time.Hour), "the node certificate is not valid until"},
	} {
		l, err := b.IssueLeaf(tt.service, tt.validFor, tt.now)
		if l != nil {
			t.Errorf("IssueLeaf(%q) returned a leaf with an error", tt.service)
		}
		wantErrText(t, err, tt.want)
	}
	if _, err := b.IssueLeaf(strings.Repeat("s", 128), time.Hour, now); err != nil {
		t.Errorf("a 128-character service name: %v", err)
	}
}

func BenchmarkIssueLeaf(b *testing.B) {
	now := time.Now()
	bundle := newTestCA(b, testTD, now).bundle(b, "a", now)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := bundle.IssueLeaf("web", time.Hour, now); err != nil {
			b.Fatal(err)
		}
	}
}
