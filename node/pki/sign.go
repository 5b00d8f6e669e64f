package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Sign signs msg with the node CA key: ECDSA over SHA-256(msg), ASN.1
// encoded. It returns the signature and the node CA certificate (DER),
// which travels with it so that any node can check it (VerifySigned).
// Safe for concurrent use.
func (b *Bundle) Sign(msg []byte) (sig, certDER []byte, err error) {
	digest := sha256.Sum256(msg)
	sig, err = b.NodeKey.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return nil, nil, fmt.Errorf("sign with the node key: %w", err)
	}
	return sig, slices.Clone(b.NodeCert.Raw), nil
}

// VerifySigned checks that sig over msg was made by the node owner, as
// Sign makes it: certDER must be the node CA of owner, chain to one of b's
// roots at now, and its key must verify sig. Errors are *RefusedError.
//
// It is called for every gossiped change, so a chain that verified is
// remembered until the chain expires; what remains per call is one
// signature check. Safe for concurrent use.
func (b *Bundle) VerifySigned(owner string, msg, sig, certDER []byte, now time.Time) error {
	sum := sha256.Sum256(certDER)
	s, ok := b.signers.get(sum)
	if !ok || !s.validAt(now) {
		var r *RefusedError
		if s, r = b.verifySigner(certDER, now); r != nil {
			if ok {
				b.signers.remove(sum)
			}
			return r
		}
		b.signers.put(sum, s)
	}
	if !strings.EqualFold(owner, s.node) {
		return refuse(ReasonWrongOwner, fmt.Errorf("signed by node %q, not by the owner %q", s.node, owner))
	}
	digest := sha256.Sum256(msg)
	if !ecdsa.VerifyASN1(s.pub, digest[:], sig) {
		return refuse(ReasonBadSignature, fmt.Errorf("the signature of %q does not verify", owner))
	}
	return nil
}

// verifySigner verifies a node CA certificate from the wire.
func (b *Bundle) verifySigner(certDER []byte, now time.Time) (signer, *RefusedError) {
	if len(certDER) == 0 {
		return signer{}, refuse(ReasonNoCertificate, errors.New("no signing certificate"))
	}
	c, err := x509.ParseCertificate(certDER)
	if err != nil {
		return signer{}, refuse(ReasonBadCertificate, fmt.Errorf("signing certificate: %w", err))
	}
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return signer{}, refuse(ReasonBadCertificate, fmt.Errorf("signing certificate %q has a %T key, want ECDSA", c.Subject.CommonName, c.PublicKey))
	}
	if err := checkCA(c); err != nil {
		return signer{}, refuse(ReasonBadChain, fmt.Errorf("signing certificate %q %w: want a node CA", c.Subject.CommonName, err))
	}
	if r := refuseValidity(fmt.Sprintf("signing certificate %q", c.Subject.CommonName), c, now); r != nil {
		return signer{}, r
	}
	chains, err := c.Verify(b.verifyOptions(nil, now))
	if err != nil {
		return signer{}, refuseChain(fmt.Errorf("signing certificate %q: %w", c.Subject.CommonName, err), now)
	}
	// A node CA is signed by a root itself; a root is no node's CA. The
	// node CA's name constraints bind what it signs, not its own name:
	// that comes from its URI SAN, which the root vouches for.
	var chain []*x509.Certificate
	for _, ch := range chains {
		if len(ch) == 2 {
			chain = ch
			break
		}
	}
	if chain == nil {
		return signer{}, refuse(ReasonBadChain, fmt.Errorf("signing certificate %q is not a node CA signed by a root", c.Subject.CommonName))
	}
	node, err := nodeCAName(c, b.TrustDomain)
	if err != nil {
		return signer{}, refuse(ReasonBadID, fmt.Errorf("signing certificate %q %w", c.Subject.CommonName, err))
	}
	s := signer{node: node, pub: pub, notBefore: c.NotBefore, notAfter: c.NotAfter}
	for _, p := range chain[1:] {
		if p.NotBefore.After(s.notBefore) {
			s.notBefore = p.NotBefore
		}
		if p.NotAfter.Before(s.notAfter) {
			s.notAfter = p.NotAfter
		}
	}
	return s, nil
}
