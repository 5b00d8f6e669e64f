package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// meshTLS is how two agents talk: each presents its leaf and checks the
// other's with VerifyPeer. Go's own verification is off on the client
// because identities are URIs, not host names; VerifyPeerCertificate
// replaces it on both ends.
func meshTLS(b *Bundle, leaf *Leaf, server bool, peer *ID) *tls.Config {
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{leaf.Cert},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			id, err := b.VerifyPeer(raw, time.Now())
			*peer = id
			return err
		},
	}
	if server {
		cfg.ClientAuth = tls.RequireAnyClientCert
	} else {
		cfg.InsecureSkipVerify = true
	}
	return cfg
}

// handshake connects a client of node a to a server of node b over an
// in-memory pipe and returns what each end saw of the other.
func handshake(t *testing.T, a, b *Bundle, aLeaf, bLeaf *Leaf) (clientSaw, serverSaw ID, clientErr, serverErr error) {
	t.Helper()
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := tls.Client(c, meshTLS(a, aLeaf, false, &clientSaw))
	server := tls.Server(s, meshTLS(b, bLeaf, true, &serverSaw))
	done := make(chan error, 1)
	go func() {
		err := server.HandshakeContext(ctx)
		if err == nil {
			_, err = server.Write([]byte("ok"))
		}
		s.Close() // unblock the client
		done <- err
	}()
	// In TLS 1.3 the client is done before the server has checked its
	// certificate: it learns of a refusal when it reads.
	clientErr = client.HandshakeContext(ctx)
	if clientErr == nil {
		if v := client.ConnectionState().Version; v != tls.VersionTLS13 {
			t.Errorf("negotiated %s, want TLS 1.3", tls.VersionName(v))
		}
		_, clientErr = io.ReadFull(client, make([]byte, 2))
	}
	c.Close()
	serverErr = <-done
	return clientSaw, serverSaw, clientErr, serverErr
}

func TestTLSHandshake(t *testing.T) {
	m := newMesh(t)
	aLeaf, err := m.a.IssueLeaf("web", time.Hour, m.now)
	if err != nil {
		t.Fatal(err)
	}
	bLeaf, err := m.b.IssueLeaf("", time.Hour, m.now)
	if err != nil {
		t.Fatal(err)
	}
	clientSaw, serverSaw, cerr, serr := handshake(t, m.a, m.b, aLeaf, bLeaf)
	if cerr != nil || serr != nil {
		t.Fatalf("handshake: client %v, server %v", cerr, serr)
	}
	if clientSaw != bLeaf.ID || serverSaw != aLeaf.ID {
		t.Errorf("client saw %v, server saw %v; want %v and %v", clientSaw, serverSaw, bLeaf.ID, aLeaf.ID)
	}
}

func TestTLSHandshakeRefusesAnotherCA(t *testing.T) {
	m := newMesh(t)
	stranger := newTestCA(t, testTD, m.now).bundle(t, "a", m.now)
	strangerLeaf, _ := stranger.IssueLeaf("web", time.Hour, m.now)
	bLeaf, _ := m.b.IssueLeaf("", time.Hour, m.now)

	// A client that trusts b but presents the stranger's leaf: b refuses
	// it.
	_, _, cerr, serr := handshake(t, m.a, m.b, strangerLeaf, bLeaf)
	if serr == nil {
		t.Fatal("the server accepted a client of another CA")
	}
	wantRefused(t, serr, ReasonBadChain, "unknown authority")
	if cerr == nil {
		t.Error("the client's handshake succeeded although the server refused it")
	}

	// b dials a server that trusts b but presents the stranger's leaf: b
	// refuses it.
	_, _, cerr, _ = handshake(t, m.b, m.a, bLeaf, strangerLeaf)
	var r *RefusedError
	if !errors.As(cerr, &r) || r.Reason != ReasonBadChain {
		t.Errorf("client of b dialing a stranger: %v, want a bad_chain refusal", cerr)
	}
}

func TestTLSHandshakeRequiresTLS13(t *testing.T) {
	m := newMesh(t)
	aLeaf, _ := m.a.IssueLeaf("web", time.Hour, m.now)
	bLeaf, _ := m.b.IssueLeaf("", time.Hour, m.now)
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	var saw ID
	old := meshTLS(m.a, aLeaf, false, &saw)
	old.MinVersion, old.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	done := make(chan error, 1)
	go func() {
		err := tls.Server(s, meshTLS(m.b, bLeaf, true, &saw)).Handshake()
		s.Close()
		done <- err
	}()
	if err := tls.Client(c, old).Handshake(); err == nil {
		t.Error("a TLS 1.2 client got through")
	}
	c.Close()
	if err := <-done; err == nil {
		t.Error("the server accepted a TLS 1.2 client")
	}
}
