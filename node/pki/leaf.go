package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/url"
	"time"
)

// Leaf is a certificate for one identity, signed by the node CA, and its
// key. It is read-only.
type Leaf struct {
	ID ID
	// Cert is ready for a tls.Config: the leaf then the node CA, the key
	// and the parsed leaf.
	Cert tls.Certificate
	// CertPEM is the leaf then the node CA: with the roots alone, it
	// chains.
	CertPEM []byte
	// KeyPEM is the leaf's key, SEC1 "EC PRIVATE KEY" as Consul hands out.
	KeyPEM              []byte
	Serial              *big.Int
	NotBefore, NotAfter time.Time
}

// IssueLeaf signs a new leaf, with a new key, for service, or for the node
// itself if service is empty. It is valid for validFor from now but never
// past the node CA, for both TLS servers and clients. Safe for concurrent
// use.
func (b *Bundle) IssueLeaf(service string, validFor time.Duration, now time.Time) (*Leaf, error) {
	id := ID{TrustDomain: b.TrustDomain, Node: b.Node, Service: service}
	cn := b.NodeCert.Subject.CommonName
	if service != "" {
		if err := validateServiceName(service); err != nil {
			return nil, err
		}
		cn = service
	}
	if validFor <= 0 {
		return nil, fmt.Errorf("leaf validity %v is not positive", validFor)
	}
	if err := checkValidity(b.NodeCert, now); err != nil {
		return nil, fmt.Errorf("the node certificate %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, _ := newSerial()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              capTime(now.Add(validFor), b.NodeCert.NotAfter),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URI()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, b.NodeCert, key.Public(), b.NodeKey)
	if err != nil {
		return nil, fmt.Errorf("sign the leaf of %s: %w", id, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &Leaf{
		ID: id,
		Cert: tls.Certificate{
			Certificate: [][]byte{der, b.NodeCert.Raw},
			PrivateKey:  key,
			Leaf:        cert,
		},
		CertPEM:   append(encodeCert(der), encodeCert(b.NodeCert.Raw)...),
		KeyPEM:    keyPEM,
		Serial:    cert.SerialNumber,
		NotBefore: cert.NotBefore,
		NotAfter:  cert.NotAfter,
	}, nil
}
