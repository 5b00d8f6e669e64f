package pki

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"
)

// checkCA reports whether c may sign certificates.
func checkCA(c *x509.Certificate) error {
	if !c.BasicConstraintsValid || !c.IsCA {
		return errors.New("is not a CA certificate")
	}
	if c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return errors.New("is a CA certificate whose key usage forbids signing certificates")
	}
	return nil
}

// selfSigned reports whether c is signed by its own key, as a root is.
func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

// checkValidity reports whether now is within c's validity, naming the
// dates if not.
func checkValidity(c *x509.Certificate, now time.Time) error {
	if now.Before(c.NotBefore) {
		return fmt.Errorf("is not valid until %s (it is now %s)", stamp(c.NotBefore), stamp(now))
	}
	if now.After(c.NotAfter) {
		return fmt.Errorf("expired on %s (it is now %s)", stamp(c.NotAfter), stamp(now))
	}
	return nil
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// rootTrustDomain returns the trust domain a root CA names with its one
// URI SAN, spiffe://TRUSTDOMAIN.
func rootTrustDomain(c *x509.Certificate) (string, error) {
	if len(c.URIs) != 1 {
		return "", fmt.Errorf("has %d URI SANs, want one spiffe://TRUSTDOMAIN", len(c.URIs))
	}
	u := c.URIs[0]
	td, err := spiffeHost(u)
	if err == nil && u.Path != "" {
		err = errors.New("has a path")
	}
	if err == nil {
		err = validateTrustDomain(td)
	}
	if err != nil {
		return "", fmt.Errorf("URI SAN %q is not spiffe://TRUSTDOMAIN: %w", u, err)
	}
	return td, nil
}

// nodeCAName returns the node a node CA is for, from its one URI SAN,
// spiffe://NODE.TRUSTDOMAIN, which must be in trustDomain.
func nodeCAName(c *x509.Certificate, trustDomain string) (string, error) {
	if len(c.URIs) != 1 {
		return "", fmt.Errorf("has %d URI SANs, want one spiffe://NODE.%s", len(c.URIs), trustDomain)
	}
	u := c.URIs[0]
	host, err := spiffeHost(u)
	if err == nil && u.Path != "" {
		err = errors.New("has a path")
	}
	if err != nil {
		return "", fmt.Errorf("URI SAN %q is not spiffe://NODE.%s: %w", u, trustDomain, err)
	}
	node, td, _ := strings.Cut(host, ".")
	if td != trustDomain {
		return "", fmt.Errorf("is in trust domain %q, not %q (URI SAN %q)", td, trustDomain, u)
	}
	if err := validateNodeName(node); err != nil {
		return "", fmt.Errorf("URI SAN %q: %w", u, err)
	}
	return node, nil
}
