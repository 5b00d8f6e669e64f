package node

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-mesh/shoal/node/pki"
)

// identities holds the node's PKI material and the leaf certificates the
// agent signs with it: one for the node itself and one for every service
// name it hosts. Leaves are short-lived and renewed at half-life; a reload
// of the node certificate reissues them all. Reads are lock-free.
type identities struct {
	ttl time.Duration
	log *slog.Logger
	now func() time.Time

	bundle atomic.Pointer[pki.Bundle]

	mu      sync.Mutex
	leaves  map[string]*issued // by service name; "" is the node
	index   uint64             // bumped by every issue, for blocking queries
	changed chan struct{}      // closed and replaced at every issue
	// byName is leaves as a copy-on-write map, for the TLS callbacks.
	byName atomic.Pointer[map[string]*issued]
}

// issued is one leaf and when it was issued (for blocking queries).
type issued struct {
	leaf        *pki.Leaf
	createIndex uint64
	modifyIndex uint64
}

func newIdentities(b *pki.Bundle, ttl time.Duration, log *slog.Logger) (*identities, error) {
	ids := &identities{ttl: ttl, log: log, now: time.Now, leaves: map[string]*issued{}, changed: make(chan struct{})}
	ids.bundle.Store(b)
	empty := map[string]*issued{}
	ids.byName.Store(&empty)
	if err := ids.ensure(""); err != nil {
		return nil, err
	}
	return ids, nil
}

// Bundle is the node's current PKI material.
func (ids *identities) Bundle() *pki.Bundle { return ids.bundle.Load() }

// leaf returns the current leaf of a service ("" for the node), or nil.
func (ids *identities) leaf(service string) *pki.Leaf {
	if is := (*ids.byName.Load())[service]; is != nil {
		return is.leaf
	}
	return nil
}

// get returns the issued leaf of a service with its indexes, and the
// channel closed at the next issue.
func (ids *identities) get(service string) (*issued, <-chan struct{}) {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	return ids.leaves[service], ids.changed
}

// ensure issues a leaf for service unless it has a fresh one.
func (ids *identities) ensure(service string) error {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	if is := ids.leaves[service]; is != nil && !ids.dueLocked(is.leaf) {
		return nil
	}
	if err := ids.issueLocked(service); err != nil {
		return err
	}
	ids.publishLocked()
	return nil
}

// dueLocked reports whether a leaf is past its half-life (or was signed by
// a node certificate that is no longer the current one).
func (ids *identities) dueLocked(l *pki.Leaf) bool {
	half := l.NotBefore.Add(l.NotAfter.Sub(l.NotBefore) / 2)
	return !ids.now().Before(half) || l.Cert.Leaf.CheckSignatureFrom(ids.bundle.Load().NodeCert) != nil
}

// issueLocked signs a new leaf for service; publishLocked makes it seen.
func (ids *identities) issueLocked(service string) error {
	l, err := ids.bundle.Load().IssueLeaf(service, ids.ttl, ids.now())
	if err != nil {
		return fmt.Errorf("issue the leaf certificate of %s: %w", describeIdentity(service), err)
	}
	ids.index++
	is := &issued{leaf: l, createIndex: ids.index, modifyIndex: ids.index}
	if old := ids.leaves[service]; old != nil {
		is.createIndex = old.createIndex
	}
	ids.leaves[service] = is
	return nil
}

func (ids *identities) publishLocked() {
	m := make(map[string]*issued, len(ids.leaves))
	for k, v := range ids.leaves {
		m[k] = v
	}
	ids.byName.Store(&m)
	close(ids.changed)
	ids.changed = make(chan struct{})
}

// sync makes the leaves match the services the agent hosts: new names get a
// leaf, names no longer hosted lose theirs.
func (ids *identities) sync(names map[string]bool) {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	changed := false
	for name := range ids.leaves {
		if name != "" && !names[name] {
			delete(ids.leaves, name)
			changed = true
		}
	}
	for name := range names {
		if ids.leaves[name] != nil {
			continue
		}
		if err := ids.issueLocked(name); err != nil {
			ids.log.Error("cannot issue a service identity", "service", name, "err", err)
			continue
		}
		changed = true
	}
	if changed {
		ids.publishLocked()
	}
}

// renewDue reissues every leaf past its half-life and reports how many.
func (ids *identities) renewDue() int {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	n := 0
	for name, is := range ids.leaves {
		if !ids.dueLocked(is.leaf) {
			continue
		}
		if err := ids.issueLocked(name); err != nil {
			ids.log.Error("cannot renew an identity", "identity", describeIdentity(name), "err", err)
			continue
		}
		n++
	}
	if n > 0 {
		ids.publishLocked()
	}
	return n
}

// nextRenewal is when the earliest leaf reaches its half-life.
func (ids *identities) nextRenewal() time.Time {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	var next time.Time
	for _, is := range ids.leaves {
		l := is.leaf
		half := l.NotBefore.Add(l.NotAfter.Sub(l.NotBefore) / 2)
		if next.IsZero() || half.Before(next) {
			next = half
		}
	}
	return next
}

// reload installs new PKI material and reissues every leaf under it. On
// error nothing changes.
func (ids *identities) reload(b *pki.Bundle) error {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	next := make(map[string]*pki.Leaf, len(ids.leaves))
	for name := range ids.leaves {
		l, err := b.IssueLeaf(name, ids.ttl, ids.now())
		if err != nil {
			return fmt.Errorf("issue the leaf certificate of %s: %w", describeIdentity(name), err)
		}
		next[name] = l
	}
	ids.bundle.Store(b)
	for name, l := range next {
		ids.index++
		ids.leaves[name] = &issued{leaf: l, createIndex: ids.leaves[name].createIndex, modifyIndex: ids.index}
	}
	ids.publishLocked()
	return nil
}

// catalogAttestor signs the local catalog with the node's key and checks
// other owners' signatures against the configured roots (gossip.Attestor).
type catalogAttestor struct{ ids *identities }

func (a catalogAttestor) Sign(head []byte) ([]byte, []byte, error) { return a.ids.Bundle().Sign(head) }

func (a catalogAttestor) Verify(owner string, head, sig, cert []byte) error {
	return a.ids.Bundle().VerifySigned(owner, head, sig, cert, time.Now())
}

func describeIdentity(service string) string {
	if service == "" {
		return "the node"
	}
	return fmt.Sprintf("service %q", service)
}
