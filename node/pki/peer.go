package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// maxPeerChain bounds the certificates a peer may present: its leaf, its
// node CA and, needlessly, a root. It keeps a peer from making us parse
// many.
const maxPeerChain = 4

// VerifyPeer checks the certificates a TLS peer presented, as handed to
// tls.Config.VerifyPeerCertificate (leaf first, then intermediates), and
// returns the peer's identity. The leaf must chain to one of b's roots
// through the CA of the node it names, and be valid at now. Errors are
// *RefusedError. Safe for concurrent use.
func (b *Bundle) VerifyPeer(rawCerts [][]byte, now time.Time) (ID, error) {
	if len(rawCerts) == 0 {
		return ID{}, refuse(ReasonNoCertificate, errors.New("the peer presented no certificate"))
	}
	if len(rawCerts) > maxPeerChain {
		return ID{}, refuse(ReasonBadChain, fmt.Errorf("the peer presented %d certificates, more than %d", len(rawCerts), maxPeerChain))
	}
	leaf, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return ID{}, refuse(ReasonBadCertificate, fmt.Errorf("peer certificate: %w", err))
	}
	var intermediates *x509.CertPool
	if len(rawCerts) > 1 {
		intermediates = x509.NewCertPool()
		for _, raw := range rawCerts[1:] {
			c, err := x509.ParseCertificate(raw)
			if err != nil {
				return ID{}, refuse(ReasonBadCertificate, fmt.Errorf("peer intermediate certificate: %w", err))
			}
			intermediates.AddCert(c)
		}
	}
	if leaf.IsCA {
		return ID{}, refuse(ReasonBadChain, fmt.Errorf("peer certificate %q is a CA, not a leaf", leaf.Subject.CommonName))
	}
	if r := refuseValidity("peer certificate", leaf, now); r != nil {
		return ID{}, r
	}
	chains, err := leaf.Verify(b.verifyOptions(intermediates, now))
	if err != nil {
		return ID{}, refuseChain(fmt.Errorf("peer certificate: %w", err), now)
	}
	if len(leaf.URIs) != 1 {
		return ID{}, refuse(ReasonBadID, fmt.Errorf("peer certificate has %d URI SANs, want one identity", len(leaf.URIs)))
	}
	id, err := ParseID(leaf.URIs[0], b.TrustDomain)
	if err != nil {
		return ID{}, refuse(ReasonBadID, fmt.Errorf("peer certificate: %w", err))
	}
	// The name constraint of the node CA already ties the leaf to its
	// node; this says so plainly, and refuses a leaf a root signed.
	for _, chain := range chains {
		if len(chain) == 3 {
			if node, err := nodeCAName(chain[1], b.TrustDomain); err == nil && node == id.Node {
				return id, nil
			}
		}
	}
	return ID{}, refuse(ReasonWrongNode, fmt.Errorf("peer certificate for %s is not signed by the CA of node %q", id, id.Node))
}
