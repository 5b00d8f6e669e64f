package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// PEM block types. Keys are written in SEC1 form, as Consul writes them.
const (
	blockCertificate = "CERTIFICATE"
	blockECKey       = "EC PRIVATE KEY"
	blockPKCS8Key    = "PRIVATE KEY"
)

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: blockCertificate, Bytes: der})
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: blockECKey, Bytes: der}), nil
}

// ParseCertificates returns every CERTIFICATE block of data, in order; other
// blocks are skipped.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != blockCertificate {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return certs, nil
}

// parseKey returns the first private key of data, SEC1 ("EC PRIVATE KEY")
// or PKCS#8 ("PRIVATE KEY"); it must be ECDSA P-256. An "EC PARAMETERS"
// block, which openssl writes before the key, is skipped.
func parseKey(data []byte) (*ecdsa.PrivateKey, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no PEM \"EC PRIVATE KEY\" or \"PRIVATE KEY\" block")
		}
		if _, enc := b.Headers["Proc-Type"]; enc {
			return nil, errors.New("the key is encrypted; Shoal needs it unencrypted")
		}
		var key any
		var err error
		switch b.Type {
		case blockECKey:
			key, err = x509.ParseECPrivateKey(b.Bytes)
		case blockPKCS8Key:
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("the key is encrypted; Shoal needs it unencrypted")
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.Type, err)
		}
		ec, ok := key.(*ecdsa.PrivateKey)
		if !ok || ec.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%s is a %s, want an ECDSA P-256 key", b.Type, keyKind(key))
		}
		return ec, nil
	}
}

func keyKind(key any) string {
	if ec, ok := key.(*ecdsa.PrivateKey); ok {
		return "ECDSA " + ec.Curve.Params().Name + " key"
	}
	return fmt.Sprintf("%T", key)
}
