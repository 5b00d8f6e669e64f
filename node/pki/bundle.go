package pki

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

// Bundle is a node's loaded key material: the roots of the mesh and the
// node's own CA with its key. LoadBundle makes it; it is read-only from
// then on and safe for concurrent use, and none of its fields may be
// modified.
type Bundle struct {
	// TrustDomain is the mesh's trust domain, named by every root.
	TrustDomain string
	// Node is the node the bundle is for, lowercased (see ID).
	Node string
	// Roots are every root of the CA file; several during a rotation.
	Roots []*x509.Certificate
	// NodeCert is the node's intermediate CA, signed by one of Roots.
	NodeCert *x509.Certificate
	// NodeKey is NodeCert's key, an *ecdsa.PrivateKey.
	NodeKey crypto.Signer

	roots    *x509.CertPool
	rootsPEM []byte
	signers  *chainCache // node CAs VerifySigned has verified
}

// LoadBundle loads the key material of the agent named node: the roots
// from caFile (PEM, one or more CA certificates of one trust domain), the
// node CA from certFile and its key (SEC1 or PKCS#8 PEM) from keyFile. It
// refuses, with a one-line error that names the file, anything that would
// not work: a file that cannot be read or parsed, a root or node CA not
// valid at now, a node certificate that is not a node CA of node in the
// roots' trust domain or does not chain to them, a key that is not the
// certificate's.
func LoadBundle(caFile, certFile, keyFile, node string, now time.Time) (*Bundle, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("node certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("node key: %w", err)
	}
	return newBundle(files{caFile, certFile, keyFile}, caPEM, certPEM, keyPEM, node, now)
}

// files names the files a bundle is loaded from, for errors.
type files struct{ ca, cert, key string }

func newBundle(f files, caPEM, certPEM, keyPEM []byte, node string, now time.Time) (*Bundle, error) {
	if err := validateNodeName(node); err != nil {
		return nil, fmt.Errorf("this agent's %w", err)
	}
	roots, td, err := loadRoots(caPEM, now)
	if err != nil {
		return nil, fmt.Errorf("CA file %s: %w", f.ca, err)
	}
	b := &Bundle{
		TrustDomain: td,
		Node:        strings.ToLower(node),
		Roots:       roots,
		roots:       x509.NewCertPool(),
		signers:     newChainCache(maxCachedSigners),
	}
	for _, r := range roots {
		b.roots.AddCert(r)
		b.rootsPEM = append(b.rootsPEM, encodeCert(r.Raw)...)
	}

	certs, err := ParseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("node certificate %s: %w", f.cert, err)
	}
	b.NodeCert = certs[0]
	if err := b.checkNodeCert(node, now); err != nil {
		return nil, fmt.Errorf("node certificate %s: %w", f.cert, err)
	}
	if _, err := b.NodeCert.Verify(b.verifyOptions(nil, now)); err != nil {
		return nil, fmt.Errorf("node certificate %s does not chain to any root in CA file %s: %w", f.cert, f.ca, err)
	}

	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("node key %s: %w", f.key, err)
	}
	if !key.PublicKey.Equal(b.NodeCert.PublicKey) {
		return nil, fmt.Errorf("node key %s does not match node certificate %s", f.key, f.cert)
	}
	b.NodeKey = key
	return b, nil
}

// loadRoots parses the CA file: root CAs (self-signed) valid at now that
// all name the same trust domain.
func loadRoots(caPEM []byte, now time.Time) ([]*x509.Certificate, string, error) {
	roots, err := ParseCertificates(caPEM)
	if err != nil {
		return nil, "", err
	}
	var td string
	for i, r := range roots {
		what := fmt.Sprintf("certificate %d (%q)", i+1, r.Subject.CommonName)
		if err := checkCA(r); err != nil {
			return nil, "", fmt.Errorf("%s %w", what, err)
		}
		if !selfSigned(r) {
			return nil, "", fmt.Errorf("%s is not a root: it is not self-signed (is it a node certificate?)", what)
		}
		rtd, err := rootTrustDomain(r)
		if err != nil {
			return nil, "", fmt.Errorf("%s %w", what, err)
		}
		if i == 0 {
			td = rtd
		} else if rtd != td {
			return nil, "", fmt.Errorf("%s is for trust domain %q, but certificate 1 is for %q: all roots must share one", what, rtd, td)
		}
		if err := checkValidity(r, now); err != nil {
			return nil, "", fmt.Errorf("%s %w", what, err)
		}
	}
	return roots, td, nil
}

// checkNodeCert checks that b.NodeCert is a node CA for node, made the way
// CreateNodeCA makes them, and valid at now.
func (b *Bundle) checkNodeCert(node string, now time.Time) error {
	c := b.NodeCert
	if selfSigned(c) {
		return errors.New("is self-signed: it is a root, not a node CA signed by one (see \"shoal tls node create\")")
	}
	if err := checkCA(c); err != nil {
		return fmt.Errorf("%w: want a node CA (see \"shoal tls node create\")", err)
	}
	certNode, err := nodeCAName(c, b.TrustDomain)
	if err != nil {
		return err
	}
	if !strings.EqualFold(certNode, node) {
		return fmt.Errorf("is for %q, but this agent is %q", certNode, node)
	}
	// Peers rely on these to keep this node's identities its own.
	host := nodeHost(node, b.TrustDomain)
	if !slices.Equal(c.PermittedURIDomains, []string{host}) {
		return fmt.Errorf("is not limited to the identities of its node: it permits URIs in %q, want exactly [%q]", c.PermittedURIDomains, host)
	}
	if c.MaxPathLen != 0 || !c.MaxPathLenZero {
		return errors.New("may sign further CAs: want a path length of 0")
	}
	return checkValidity(c, now)
}

// verifyOptions are the options of every chain verification against the
// roots. Any extended key usage is accepted: leaves are both clients and
// servers, and node CAs sign gossip.
func (b *Bundle) verifyOptions(intermediates *x509.CertPool, now time.Time) x509.VerifyOptions {
	roots := b.roots
	if roots == nil {
		// Never the system's roots, which x509 would use for nil.
		roots = x509.NewCertPool()
	}
	return x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}
}

// RootsPEM returns the roots in PEM, for the API.
func (b *Bundle) RootsPEM() []byte { return slices.Clone(b.rootsPEM) }

// Pool returns the roots as a pool, for a tls.Config. It is a copy: adding
// to it does not change b.
func (b *Bundle) Pool() *x509.CertPool {
	if b.roots == nil {
		return x509.NewCertPool()
	}
	return b.roots.Clone()
}
