package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"
)

// clockSkew backdates every certificate, so that a peer whose clock is a
// little behind accepts it at once.
const clockSkew = time.Minute

// CreateCA creates a root CA for trustDomain, valid for validFor from now,
// and returns its certificate and key in PEM. An empty trustDomain gets a
// random one, "<uuid>.shoal". The key is what every node CA is signed
// with: keep it offline.
func CreateCA(trustDomain string, validFor time.Duration, now time.Time) (certPEM, keyPEM []byte, err error) {
	if trustDomain == "" {
		trustDomain = randomTrustDomain()
	}
	if err := validateTrustDomain(trustDomain); err != nil {
		return nil, nil, fmt.Errorf("create CA: %w", err)
	}
	if validFor <= 0 {
		return nil, nil, fmt.Errorf("create CA: validity %v is not positive", validFor)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("create CA: %w", err)
	}
	serial, short := newSerial()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "Shoal CA " + short},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validFor),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// root → node CA → leaf: one CA below the root.
		MaxPathLen: 1,
		URIs:       []*url.URL{{Scheme: "spiffe", Host: trustDomain}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("create CA: %w", err)
	}
	if keyPEM, err = encodeKey(key); err != nil {
		return nil, nil, fmt.Errorf("create CA: %w", err)
	}
	return encodeCert(der), keyPEM, nil
}

// CreateNodeCA signs, with the root CA in caCertPEM and caKeyPEM, the
// intermediate CA of node, valid for validFor from now but never past the
// root. caCertPEM may hold several roots (during a rotation): the one the
// key belongs to signs.
//
// The node CA can sign only identities of its node: it carries the name
// constraint "URIs in NODE.TRUSTDOMAIN", which standard X.509 verification
// enforces on everything below it, and a path length of 0, so it cannot
// delegate to another CA.
func CreateNodeCA(caCertPEM, caKeyPEM []byte, node string, validFor time.Duration, now time.Time) (certPEM, keyPEM []byte, err error) {
	fail := func(err error) ([]byte, []byte, error) {
		return nil, nil, fmt.Errorf("create node CA: %w", err)
	}
	if err := validateNodeName(node); err != nil {
		return fail(err)
	}
	if validFor <= 0 {
		return fail(fmt.Errorf("validity %v is not positive", validFor))
	}
	roots, err := ParseCertificates(caCertPEM)
	if err != nil {
		return fail(fmt.Errorf("CA certificate: %w", err))
	}
	caKey, err := parseKey(caKeyPEM)
	if err != nil {
		return fail(fmt.Errorf("CA key: %w", err))
	}
	var root *x509.Certificate
	for _, c := range roots {
		if caKey.PublicKey.Equal(c.PublicKey) {
			root = c
			break
		}
	}
	if root == nil {
		return fail(errors.New("the CA key does not match the CA certificate"))
	}
	if err := checkCA(root); err != nil {
		return fail(fmt.Errorf("CA certificate: %w", err))
	}
	if !selfSigned(root) {
		return fail(errors.New("the CA certificate is not a root: it is not self-signed"))
	}
	td, err := rootTrustDomain(root)
	if err != nil {
		return fail(fmt.Errorf("CA certificate: %w", err))
	}
	if err := checkValidity(root, now); err != nil {
		return fail(fmt.Errorf("CA certificate: %w", err))
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fail(err)
	}
	serial, _ := newSerial()
	host := nodeHost(node, td)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: node},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              capTime(now.Add(validFor), root.NotAfter),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: host}},
		PermittedURIDomains:   []string{host},
		// Marks the whole name constraints extension critical, so that a
		// verifier that does not understand it must refuse the chain.
		PermittedDNSDomainsCritical: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root, key.Public(), caKey)
	if err != nil {
		return fail(err)
	}
	// Prove the result chains before handing it out: a root made elsewhere
	// might forbid what is asked of it (a path length of 0, say).
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fail(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fail(fmt.Errorf("the new certificate does not verify against the CA: %w", err))
	}
	if keyPEM, err = encodeKey(key); err != nil {
		return fail(err)
	}
	return encodeCert(der), keyPEM, nil
}

// newSerial returns a random positive 128-bit serial number, and its first
// 8 hex digits to tell certificates apart by eye.
func newSerial() (*big.Int, string) {
	var b [16]byte
	rand.Read(b[:]) // never fails
	b[0] |= 0x01    // never zero: serials are positive
	return new(big.Int).SetBytes(b[:]), fmt.Sprintf("%x", b[:4])
}

// randomTrustDomain returns "<uuid v4>.shoal".
func randomTrustDomain() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 9562 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x.shoal", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// capTime returns t, or limit if t is later.
func capTime(t, limit time.Time) time.Time {
	if t.After(limit) {
		return limit
	}
	return t
}
