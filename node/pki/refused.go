package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"
)

// RefusedError is why a peer's certificate or signature was refused.
type RefusedError struct {
	// Reason is a short label for metrics, one of the Reason constants.
	Reason string
	// Err says what is wrong.
	Err error
}

// Reasons of a RefusedError.
const (
	ReasonNoCertificate  = "no_certificate"  // nothing presented
	ReasonBadCertificate = "bad_certificate" // does not parse, or an unusable key
	ReasonBadChain       = "bad_chain"       // does not chain to a root, or breaks a constraint
	ReasonExpired        = "expired"         // a certificate of the chain has expired
	ReasonNotYetValid    = "not_yet_valid"   // a certificate of the chain is not valid yet
	ReasonBadID          = "bad_id"          // no valid identity of the trust domain
	ReasonWrongNode      = "wrong_node"      // the leaf is not signed by its own node's CA
	ReasonWrongOwner     = "wrong_owner"     // signed by another node than the claimed owner
	ReasonBadSignature   = "bad_signature"   // the signature does not verify
)

// Error returns the message of Err, on one line.
func (e *RefusedError) Error() string {
	return strings.ReplaceAll(e.Err.Error(), "\n", "; ")
}

// Unwrap returns Err.
func (e *RefusedError) Unwrap() error { return e.Err }

func refuse(reason string, err error) *RefusedError {
	return &RefusedError{Reason: reason, Err: err}
}

// refuseChain classifies an error of x509's Verify at now: a certificate
// out of its validity is expired or not yet valid, anything else is a bad
// chain.
func refuseChain(err error, now time.Time) *RefusedError {
	var invalid x509.CertificateInvalidError
	if errors.As(err, &invalid) && invalid.Reason == x509.Expired && invalid.Cert != nil {
		// x509 reports both ends of the validity as Expired.
		if now.Before(invalid.Cert.NotBefore) {
			return refuse(ReasonNotYetValid, err)
		}
		return refuse(ReasonExpired, err)
	}
	return refuse(ReasonBadChain, err)
}

// refuseValidity refuses a certificate that is not valid at now, if so.
func refuseValidity(what string, c *x509.Certificate, now time.Time) *RefusedError {
	err := checkValidity(c, now)
	switch {
	case err == nil:
		return nil
	case now.Before(c.NotBefore):
		return refuse(ReasonNotYetValid, fmt.Errorf("%s %w", what, err))
	default:
		return refuse(ReasonExpired, fmt.Errorf("%s %w", what, err))
	}
}
