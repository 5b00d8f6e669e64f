package gossip

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
)

// Signed catalogs. The gossip key keeps outsiders out of the cluster, but
// any holder of it could publish records for any owner. With an Attestor,
// an owner signs a statement of its whole catalog at each version, its
// head, and every agent applies an owner's delta only when the state it
// leads to is the one the owner signed:
//
//	head = "shoal catalog head v1\n" owner "\n" version "\n" hex(digest)
//	digest = SHA-256 over the live records, ordered by ID, of
//	         uvarint(len(id)) id SHA-256(JSON of the record)
//
// A relay forwards the owner's Attestation unchanged with whatever records
// a peer is missing; the receiver merges them into what it holds, hashes
// the result and compares. Forged, altered, replayed-into-the-future or
// withheld records (a tombstone left out, a service dropped from a full
// delta) all change the digest, so no relay, honest or not, can make a
// receiver hold anything the owner did not sign. Tombstones are not in the
// digest: each agent reaps them on its own clock.

// Attestor signs the local owner's catalog heads and checks other owners'.
// Implementations must be safe for concurrent use.
type Attestor interface {
	// Sign signs head with the local node's key and returns the signature
	// and the certificate that proves the key is the node's.
	Sign(head []byte) (sig, cert []byte, err error)
	// Verify checks that sig over head was made by owner's key, as cert
	// proves it. The error says why not, in one line.
	Verify(owner string, head, sig, cert []byte) error
}

// Attestation is an owner's signed head, carried with its deltas.
type Attestation struct {
	Version uint64 `json:"v"`
	Digest  []byte `json:"d"`
	Sig     []byte `json:"sig"`
	Cert    []byte `json:"cert"`
}

// Reasons a delta is refused, the label of the refusal counter.
const (
	RefusedUnsigned  = "unsigned"  // no attestation, or one for another version
	RefusedSignature = "signature" // the attestation does not verify as the owner's
	RefusedDigest    = "digest"    // the records do not lead to the signed state
)

// headMessage is the byte string an owner signs.
func headMessage(owner string, version uint64, digest []byte) []byte {
	b := make([]byte, 0, 32+len(owner)+2*len(digest))
	b = append(b, "shoal catalog head v1\n"...)
	b = append(b, owner...)
	b = append(b, '\n')
	b = strconv.AppendUint(b, version, 10)
	b = append(b, '\n')
	return hex.AppendEncode(b, digest)
}

// recordSum is the hash of one record as it travels. Go's JSON encoding of
// a Record is canonical (fields in order, map keys sorted), so every agent
// computes the same sum from the same record.
func recordSum(r *Record) [32]byte {
	b, err := json.Marshal(r)
	if err != nil {
		// A Record holds only strings, numbers and string maps.
		panic(fmt.Sprintf("gossip: encode record %q: %v", r.ID, err))
	}
	return sha256.Sum256(b)
}

// digestOf hashes a set of live records.
func digestOf(live map[string]*Record) []byte {
	ids := make([]string, 0, len(live))
	for id := range live {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	for _, id := range ids {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(id)))])
		h.Write([]byte(id))
		sum := recordSum(live[id])
		h.Write(sum[:])
	}
	return h.Sum(nil)
}

// digestAfter is the digest of o's live records once d is applied, by the
// rules of apply. Call only for a delta apply would take.
func (o *ownerState) digestAfter(d *Delta) []byte {
	live := make(map[string]*Record, len(o.records)+len(d.Records))
	if !d.Full {
		for id, r := range o.records {
			live[id] = &r
		}
	}
	for i := range d.Records {
		r := &d.Records[i]
		if r.Version > d.Version {
			continue
		}
		if !d.Full {
			if cur, ok := o.records[r.ID]; ok && cur.Version >= r.Version {
				continue
			}
		}
		live[r.ID] = r
	}
	for id, r := range live {
		if r.Deleted || r.Service == nil {
			delete(live, id)
		}
	}
	return digestOf(live)
}

// attest signs the local catalog st.
func (c *Cluster) attest(st LocalState) (*Attestation, error) {
	live := make(map[string]*Record)
	for r := range st.Changes(0) {
		if !r.Deleted && r.Service != nil && r.Version <= st.Version() {
			live[r.ID] = &r
		}
	}
	digest := digestOf(live)
	sig, cert, err := c.cfg.Attestor.Sign(headMessage(c.cfg.NodeName, st.Version(), digest))
	if err != nil {
		return nil, fmt.Errorf("gossip: sign catalog version %d: %w", st.Version(), err)
	}
	return &Attestation{Version: st.Version(), Digest: digest, Sig: sig, Cert: cert}, nil
}

// errRefused is a delta refused on its attestation.
type errRefused struct {
	reason string
	err    error
}

func (e *errRefused) Error() string { return e.err.Error() }

// verifyDelta checks a peer's delta against its owner's signature before
// it is applied. A delta that would change nothing passes unchecked, so
// duplicates cost no signature check; apply ignores them anyway.
func (c *Cluster) verifyDelta(d *Delta) error {
	if c.cfg.Attestor == nil || d.Owner == c.cfg.NodeName || d.Version <= c.catalog.Version(d.Owner) {
		return nil
	}
	if d.Att == nil {
		return &errRefused{RefusedUnsigned, errors.New("delta is not signed")}
	}
	if d.Att.Version != d.Version {
		return &errRefused{RefusedUnsigned, fmt.Errorf("delta of version %d carries the signature of version %d", d.Version, d.Att.Version)}
	}
	head := headMessage(d.Owner, d.Att.Version, d.Att.Digest)
	if err := c.cfg.Attestor.Verify(d.Owner, head, d.Att.Sig, d.Att.Cert); err != nil {
		return &errRefused{RefusedSignature, err}
	}
	return nil
}

// refusals counts refused deltas by reason and logs each (owner, reason)
// once, so that a misbehaving peer cannot flood the log.
type refusals struct {
	mu     sync.Mutex
	counts map[string]uint64
	logged map[[2]string]bool
}

// maxLoggedRefusals bounds the (owner, reason) pairs remembered as logged.
const maxLoggedRefusals = 4096

// add counts a refusal and reports whether it is the first of its kind.
func (r *refusals) add(owner, reason string) (first bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.counts == nil {
		r.counts = make(map[string]uint64)
		r.logged = make(map[[2]string]bool)
	}
	r.counts[reason]++
	k := [2]string{owner, reason}
	if r.logged[k] {
		return false
	}
	if len(r.logged) >= maxLoggedRefusals {
		clear(r.logged)
	}
	r.logged[k] = true
	return true
}

// snapshot returns the counts by reason, every one of reasons included.
func (r *refusals) snapshot(reasons ...string) map[string]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]uint64, len(reasons))
	for _, reason := range reasons {
		out[reason] = 0
	}
	for reason, n := range r.counts {
		out[reason] = n
	}
	return out
}

// refuse counts and logs (once per owner and reason) a refused delta.
func (c *Cluster) refuse(d *Delta, from string, reason string, err error) {
	if c.refused.add(d.Owner, reason) {
		c.log.Warn("refused catalog delta", "owner", d.Owner, "version", d.Version, "from", from,
			"reason", reason, "err", err)
	}
}
