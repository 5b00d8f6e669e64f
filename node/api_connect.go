package node

import (
	"crypto/sha256"
	"encoding/pem"
	"net/http"
	"strings"
	"time"
)

// The identity endpoints, in the shapes of Consul's Connect CA API, so
// that applications that speak TLS themselves (and Consul's clients) can
// fetch the roots to trust and their own service's certificate. Shoal's
// "CA" is the operator's offline root and this node's intermediate: the
// agent signs leaves itself and no request leaves the node.

// CARoots is the answer of GET /v1/agent/connect/ca/roots.
type CARoots struct {
	ActiveRootID string
	TrustDomain  string
	Roots        []CARoot
}

// CARoot is one trusted root, as Consul's structs.CARoot.
type CARoot struct {
	ID                  string
	Name                string
	SerialNumber        uint64
	SigningKeyID        string
	ExternalTrustDomain string
	NotBefore           time.Time
	NotAfter            time.Time
	RootCert            string
	IntermediateCerts   []string
	Active              bool
	PrivateKeyType      string
	PrivateKeyBits      int
	CreateIndex         uint64
	ModifyIndex         uint64
}

// LeafCert is the answer of GET /v1/agent/connect/ca/leaf/:service, as
// Consul's structs.IssuedCert. CertPEM holds the leaf and then this node's
// intermediate, so that it chains to a root with the roots alone.
type LeafCert struct {
	SerialNumber  string
	CertPEM       string
	PrivateKeyPEM string
	Service       string
	ServiceURI    string
	ValidAfter    time.Time
	ValidBefore   time.Time
	CreateIndex   uint64
	ModifyIndex   uint64
}

func (s *api) connectRoots(w http.ResponseWriter, r *http.Request) {
	ids := s.a.ids
	if ids == nil {
		writeError(w, http.StatusNotImplemented, "%v", errNoPKI)
		return
	}
	b := ids.Bundle()
	out := CARoots{TrustDomain: b.TrustDomain, Roots: []CARoot{}}
	for _, c := range b.Roots {
		sum := sha256.Sum256(c.Raw)
		root := CARoot{
			ID:                  colonHex(sum[:20]),
			Name:                c.Subject.CommonName,
			SerialNumber:        c.SerialNumber.Uint64(),
			SigningKeyID:        colonHex(c.SubjectKeyId),
			ExternalTrustDomain: b.TrustDomain,
			NotBefore:           c.NotBefore.UTC(),
			NotAfter:            c.NotAfter.UTC(),
			RootCert:            string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})),
			IntermediateCerts:   []string{},
			Active:              b.NodeCert.CheckSignatureFrom(c) == nil,
			PrivateKeyType:      "ec",
			PrivateKeyBits:      256,
			CreateIndex:         1,
			ModifyIndex:         1,
		}
		if root.Active {
			out.ActiveRootID = root.ID
		}
		out.Roots = append(out.Roots, root)
	}
	setMeta(w, 1)
	writeJSON(w, r, out)
}

// connectLeaf answers the leaf certificate of a service this agent hosts,
// as a blocking query on ?index: it returns when the leaf is renewed.
func (s *api) connectLeaf(w http.ResponseWriter, r *http.Request) {
	ids := s.a.ids
	if ids == nil {
		writeError(w, http.StatusNotImplemented, "%v", errNoPKI)
		return
	}
	service := r.PathValue("service")
	if service == "" || len(service) > maxNameLen || !nameRe.MatchString(service) {
		writeError(w, http.StatusBadRequest, "invalid service name %q", service)
		return
	}
	after, wait, _, ok := blockingParams(w, r)
	if !ok {
		return
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		is, changed := ids.get(service)
		if is == nil {
			writeError(w, http.StatusNotFound, "service %q is not registered on this agent: it issues identities only for the services it hosts", service)
			return
		}
		if is.modifyIndex > after || after == 0 {
			setMeta(w, is.modifyIndex)
			writeJSON(w, r, leafCert(is))
			return
		}
		select {
		case <-changed:
		case <-timer.C:
			setMeta(w, is.modifyIndex)
			writeJSON(w, r, leafCert(is))
			return
		case <-r.Context().Done():
			return
		}
	}
}

func leafCert(is *issued) LeafCert {
	l := is.leaf
	return LeafCert{
		SerialNumber:  colonHex(l.Serial.Bytes()),
		CertPEM:       string(l.CertPEM),
		PrivateKeyPEM: string(l.KeyPEM),
		Service:       l.ID.Service,
		ServiceURI:    l.ID.String(),
		ValidAfter:    l.NotBefore.UTC(),
		ValidBefore:   l.NotAfter.UTC(),
		CreateIndex:   is.createIndex,
		ModifyIndex:   is.modifyIndex,
	}
}

// agentReload re-reads the node PKI's files (see Agent.Reload).
func (s *api) agentReload(w http.ResponseWriter, _ *http.Request) {
	if err := s.a.Reload(); err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// colonHex writes bytes as Consul writes key IDs and serials: "ab:cd:…".
func colonHex(b []byte) string {
	const digits = "0123456789abcdef"
	var sb strings.Builder
	for i, c := range b {
		if i > 0 {
			sb.WriteByte(':')
		}
		sb.WriteByte(digits[c>>4])
		sb.WriteByte(digits[c&0xf])
	}
	return sb.String()
}
