package pki

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestVerifySigned(t *testing.T) {
	m := newMesh(t)
	msg := []byte("shoal catalog head v1\nb\n7\nabcd")
	sig, cert, err := m.b.Sign(msg)
	if err != nil {
		t.Fatal(err)
	}
	if string(cert) != string(m.b.NodeCert.Raw) {
		t.Error("Sign does not return the node CA certificate")
	}
	for _, owner := range []string{"b", "B"} {
		if err := m.a.VerifySigned(owner, msg, sig, cert, m.now); err != nil {
			t.Errorf("VerifySigned(%q): %v", owner, err)
		}
	}
	// A node checks its own signatures too.
	if err := m.b.VerifySigned("b", msg, sig, cert, m.now); err != nil {
		t.Errorf("VerifySigned by the signer: %v", err)
	}
	if n := m.a.signers.len(); n != 1 {
		t.Errorf("%d cached signers, want 1", n)
	}
}

func TestVerifySignedRefuses(t *testing.T) {
	m := newMesh(t)
	msg := []byte("head")
	sig, cert, err := m.b.Sign(msg)
	if err != nil {
		t.Fatal(err)
	}
	stranger := newTestCA(t, testTD, m.now).bundle(t, "b", m.now)
	strangerSig, strangerCert, _ := stranger.Sign(msg)
	leaf, _ := m.b.IssueLeaf("", time.Hour, m.now)
	rootSig, _ := ecdsa.SignASN1(rand.Reader, m.ca.key, sha(msg))
	tampered := append([]byte{}, sig...)
	tampered[len(tampered)-1] ^= 1

	for _, tt := range []struct {
		name           string
		owner          string
		msg, sig, cert []byte
		now            time.Time
		reason, want   string
	}{
		{"wrong owner", "a", msg, sig, cert, m.now, ReasonWrongOwner, `signed by node "b", not by the owner "a"`},
		{"tampered message", "b", []byte("heaD"), sig, cert, m.now, ReasonBadSignature, "does not verify"},
		{"tampered signature", "b", msg, tampered, cert, m.now, ReasonBadSignature, "does not verify"},
		{"no signature", "b", msg, nil, cert, m.now, ReasonBadSignature, "does not verify"},
		{"another CA", "b", msg, strangerSig, strangerCert, m.now, ReasonBadChain, "unknown authority"},
		{"a leaf", "b", msg, sig, leaf.Cert.Certificate[0], m.now, ReasonBadChain, "is not a CA certificate"},
		{"the root", "b", msg, rootSig, m.ca.cert.Raw, m.now, ReasonBadChain, "not a node CA signed by a root"},
		{"no certificate", "b", msg, sig, nil, m.now, ReasonNoCertificate, "no signing certificate"},
		{"garbage", "b", msg, sig, []byte("junk"), m.now, ReasonBadCertificate, "signing certificate"},
		{"expired", "b", msg, sig, cert, m.now.Add(2 * nodeLife), ReasonExpired, "expired on"},
		{"not yet valid", "b", msg, sig, cert, m.now.Add(-time.Hour), ReasonNotYetValid, "not valid until"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			wantRefused(t, m.a.VerifySigned(tt.owner, tt.msg, tt.sig, tt.cert, tt.now), tt.reason, tt.want)
		})
	}
}

// TestVerifySignedCacheExpires checks that a cached chain is not trusted
// past its validity.
func TestVerifySignedCacheExpires(t *testing.T) {
	m := newMesh(t)
	sig, cert, _ := m.b.Sign([]byte("head"))
	if err := m.a.VerifySigned("b", []byte("head"), sig, cert, m.now); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, m.a.VerifySigned("b", []byte("head"), sig, cert, m.now.Add(2*nodeLife)), ReasonExpired)
	if n := m.a.signers.len(); n != 0 {
		t.Errorf("%d cached signers after expiry, want 0", n)
	}
	if err := m.a.VerifySigned("b", []byte("head"), sig, cert, m.now); err != nil {
		t.Errorf("verified again within the validity: %v", err)
	}
}

func TestVerifySignedConcurrent(t *testing.T) {
	m := newMesh(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			b := []*Bundle{m.a, m.b}[i%2]
			msg := fmt.Appendf(nil, "head %d", i)
			sig, cert, err := b.Sign(msg)
			if err != nil {
				t.Error(err)
				return
			}
			for range 20 {
				if err := m.a.VerifySigned(b.Node, msg, sig, cert, m.now); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := m.a.signers.len(); n != 2 {
		t.Errorf("%d cached signers, want 2", n)
	}
}

func TestChainCacheBounded(t *testing.T) {
	c := newChainCache(3)
	for i := range 10 {
		c.put(sha256.Sum256([]byte{byte(i)}), signer{node: fmt.Sprint(i)})
	}
	if n := c.len(); n != 3 {
		t.Errorf("%d entries, want the bound of 3", n)
	}
	last := sha256.Sum256([]byte{9})
	if s, ok := c.get(last); !ok || s.node != "9" {
		t.Error("the entry put last is gone")
	}
}

func sha(msg []byte) []byte {
	h := sha256.Sum256(msg)
	return h[:]
}

func BenchmarkVerifySigned(b *testing.B) {
	m := newMesh(b)
	msg := []byte("shoal catalog head v1\nb\n7\nabcd")
	sig, cert, err := m.b.Sign(msg)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := m.a.VerifySigned("b", msg, sig, cert, m.now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifySignedUncached(b *testing.B) {
	m := newMesh(b)
	msg := []byte("head")
	sig, cert, _ := m.b.Sign(msg)
	b.ReportAllocs()
	for b.Loop() {
		m.a.signers.remove(sha256.Sum256(cert))
		if err := m.a.VerifySigned("b", msg, sig, cert, m.now); err != nil {
			b.Fatal(err)
		}
	}
}
