package gossip

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Cluster-wide configuration entries. Any agent may write any entry; every
// agent converges on the same value for each (kind, name) without servers:
//
//   - Last writer wins. A write is stamped with a hybrid logical clock (the
//     writer's clock, never behind the highest stamp it has seen) and the
//     writer's node name; the greater (Stamp, Writer) wins on every agent,
//     whatever the order of arrival, so two agents that wrote the same
//     entry at once, apart, agree on one winner when they meet.
//   - A delete is a write too: a tombstone with its own stamp, kept for
//     Config.EntryTombstoneTTL, so that a stale copy met later loses to it.
//   - Entries spread as catalog deltas do: each change is pushed to the
//     two ring neighbours and Fanout-2 random peers at once, and whoever
//     learns something new pushes it on; every SyncInterval (and when a member
//     joins) an agent compares a digest of all its entries with a random
//     peer's and exchanges what differs, which repairs any missed push.
//   - With an Attestor, the writer signs each entry (see entryMessage) and
//     an agent takes only entries whose signature verifies; after a root
//     rotation, an agent signs again what no longer verifies (ResignEntries).
//
// The bodies are opaque here: node validates them before writing.

// Entry is one configuration entry, or its tombstone, as replicated.
type Entry struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
	// Body is the entry as the writer stored it (JSON); nil for a tombstone.
	Body    json.RawMessage `json:"body,omitempty"`
	Deleted bool            `json:"del,omitempty"`
	// Stamp orders writes of the entry (a hybrid logical clock, see
	// NextVersion); it is the entry's ModifyIndex.
	Stamp uint64 `json:"stamp"`
	// Created is the stamp of the write that created the entry after it
	// last did not exist (its CreateIndex).
	Created uint64 `json:"created"`
	// Writer is the node that wrote it; it breaks ties between equal stamps.
	Writer string `json:"writer"`
	// Signer, Sig and Cert: the signature of entryMessage, by Signer (the
	// writer, or an agent that signed again after a root rotation).
	Signer string `json:"signer,omitempty"`
	Sig    []byte `json:"sig,omitempty"`
	Cert   []byte `json:"cert,omitempty"`
}

// EntryKey names an entry.
type EntryKey struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

// Key returns the entry's key.
func (e *Entry) Key() EntryKey { return EntryKey{e.Kind, e.Name} }

// beats reports whether e wins over o under last-writer-wins.
func (e *Entry) beats(o *Entry) bool {
	if e.Stamp != o.Stamp {
		return e.Stamp > o.Stamp
	}
	return e.Writer > o.Writer
}

// entryStamp is what the anti-entropy exchange compares: an entry's key and
// version, without its body.
type entryStamp struct {
	Kind   string `json:"kind"`
	Name   string `json:"name"`
	Stamp  uint64 `json:"stamp"`
	Writer string `json:"writer"`
}

func (s entryStamp) entry() *Entry {
	return &Entry{Kind: s.Kind, Name: s.Name, Stamp: s.Stamp, Writer: s.Writer}
}

// Limits on entries, for local writes and for what peers send.
const (
	// MaxEntryBody bounds the bytes of one entry's body.
	MaxEntryBody = 64 << 10
	// MaxEntries bounds the entries an agent holds, tombstones included.
	MaxEntries = 10_000
)

// ErrEntryLimit is returned by PutEntry when the store is full.
var ErrEntryLimit = fmt.Errorf("gossip: %d config entries (tombstones included) are the most an agent holds", MaxEntries)

// entryStore holds the entries. Its changed channel is closed and replaced
// at every change, for blocking readers.
type entryStore struct {
	mu      sync.RWMutex
	entries map[EntryKey]*Entry
	clock   uint64 // the highest stamp written or seen
	index   uint64 // local change counter
	digest  []byte // of every entry's stamp; nil: to be computed
	changed chan struct{}
}

func newEntryStore() *entryStore {
	return &entryStore{entries: make(map[EntryKey]*Entry), changed: make(chan struct{})}
}

// setLocked stores e and wakes the readers. Call with mu held.
func (s *entryStore) setLocked(e *Entry) {
	s.entries[e.Key()] = e
	s.clock = max(s.clock, e.Stamp)
	s.index++
	s.digest = nil
	close(s.changed)
	s.changed = make(chan struct{})
}

// digestLocked hashes every entry's key and stamp, in key order. Call with
// mu held for writing.
func (s *entryStore) digestLocked() []byte {
	if s.digest != nil {
		return s.digest
	}
	keys := make([]EntryKey, 0, len(s.entries))
	for k := range s.entries {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareKeys)
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	for _, k := range keys {
		e := s.entries[k]
		for _, f := range []string{e.Kind, e.Name, e.Writer} {
			h.Write(n[:binary.PutUvarint(n[:], uint64(len(f)))])
			h.Write([]byte(f))
		}
		h.Write(binary.BigEndian.AppendUint64(nil, e.Stamp))
	}
	s.digest = h.Sum(nil)
	return s.digest
}

func compareKeys(a, b EntryKey) int {
	return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Name, b.Name))
}

// entryMessage is the byte string a signer signs: everything about the
// entry that replication reads, its body by hash.
func entryMessage(e *Entry) []byte {
	sum := sha256.Sum256(e.Body)
	b := make([]byte, 0, 128+len(e.Kind)+len(e.Name)+len(e.Writer)+len(e.Signer))
	b = append(b, "shoal config entry v1\n"...)
	for _, f := range []string{e.Kind, e.Name, e.Writer, e.Signer} {
		b = append(b, f...)
		b = append(b, '\n')
	}
	b = strconv.AppendUint(b, e.Stamp, 10)
	b = append(b, '\n')
	b = strconv.AppendUint(b, e.Created, 10)
	b = append(b, '\n')
	b = strconv.AppendBool(b, e.Deleted)
	b = append(b, '\n')
	return hex.AppendEncode(b, sum[:])
}

// signEntry signs e as the local node, when the cluster has an Attestor.
func (c *Cluster) signEntry(e *Entry) error {
	if c.cfg.Attestor == nil {
		return nil
	}
	e.Signer = c.cfg.NodeName
	sig, cert, err := c.cfg.Attestor.Sign(entryMessage(e))
	if err != nil {
		return fmt.Errorf("gossip: sign config entry %s/%s: %w", e.Kind, e.Name, err)
	}
	e.Sig, e.Cert = sig, cert
	return nil
}

// verifyEntry checks a peer's entry against its signer's signature.
func (c *Cluster) verifyEntry(e *Entry) error {
	if c.cfg.Attestor == nil {
		return nil
	}
	if e.Signer == "" || len(e.Sig) == 0 {
		return &errRefused{RefusedUnsigned, errors.New("config entry is not signed")}
	}
	if err := c.cfg.Attestor.Verify(e.Signer, entryMessage(e), e.Sig, e.Cert); err != nil {
		return &errRefused{RefusedSignature, err}
	}
	return nil
}

// validateEntry checks the shape of an entry from a peer.
func validateEntry(e *Entry) error {
	if e.Kind == "" || e.Name == "" || e.Writer == "" {
		return fmt.Errorf("config entry %q/%q without kind, name or writer", e.Kind, e.Name)
	}
	for what, v := range map[string]string{"kind": e.Kind, "name": e.Name, "writer": e.Writer} {
		if err := checkPeerName("config entry "+what, v, false); err != nil {
			return err
		}
	}
	if e.Signer != "" {
		if err := checkPeerName("config entry signer", e.Signer, false); err != nil {
			return err
		}
	}
	switch {
	case e.Deleted && e.Body != nil:
		return fmt.Errorf("config entry %s/%s: a tombstone with a body", e.Kind, e.Name)
	case !e.Deleted && !json.Valid(e.Body):
		return fmt.Errorf("config entry %s/%s: body is not JSON", e.Kind, e.Name)
	case len(e.Body) > MaxEntryBody:
		return fmt.Errorf("config entry %s/%s: body of %d bytes exceeds %d", e.Kind, e.Name, len(e.Body), MaxEntryBody)
	case e.Stamp == 0 || e.Created > e.Stamp:
		return fmt.Errorf("config entry %s/%s: stamp %d, created %d", e.Kind, e.Name, e.Stamp, e.Created)
	}
	return nil
}

// PutEntry writes an entry (body is its JSON, already validated) as the
// local node and starts spreading it. With cas set, it writes only if the
// entry's current ModifyIndex (Stamp) is *cas, or if it does not exist when
// *cas is 0; ok reports whether it wrote.
func (c *Cluster) PutEntry(kind, name string, body json.RawMessage, cas *uint64) (e Entry, ok bool, err error) {
	return c.writeEntry(kind, name, body, cas)
}

// DeleteEntry deletes an entry (cas as for PutEntry). Deleting an entry that
// does not exist succeeds and writes nothing.
func (c *Cluster) DeleteEntry(kind, name string, cas *uint64) (ok bool, err error) {
	_, ok, err = c.writeEntry(kind, name, nil, cas)
	return ok, err
}

func (c *Cluster) writeEntry(kind, name string, body json.RawMessage, cas *uint64) (Entry, bool, error) {
	s := c.entries
	s.mu.Lock()
	defer s.mu.Unlock()
	key := EntryKey{kind, name}
	cur := s.entries[key]
	live := cur != nil && !cur.Deleted
	if cas != nil {
		if (*cas == 0 && live) || (*cas != 0 && (!live || cur.Stamp != *cas)) {
			return Entry{}, false, nil
		}
	}
	if body == nil && !live {
		return Entry{}, true, nil
	}
	if cur == nil && len(s.entries) >= MaxEntries {
		return Entry{}, false, ErrEntryLimit
	}
	e := &Entry{Kind: kind, Name: name, Body: body, Deleted: body == nil, Writer: c.cfg.NodeName}
	e.Stamp = NextVersion(s.clock, time.Now())
	e.Created = e.Stamp
	if live && !e.Deleted {
		e.Created = cur.Created
	}
	if err := c.signEntry(e); err != nil {
		return Entry{}, false, err
	}
	s.setLocked(e)
	c.push.enqueueEntries(key)
	return *e, true, nil
}

// Entry returns the live entry kind/name.
func (c *Cluster) Entry(kind, name string) (Entry, bool) {
	s := c.entries
	s.mu.RLock()
	defer s.mu.RUnlock()
	e := s.entries[EntryKey{kind, name}]
	if e == nil || e.Deleted {
		return Entry{}, false
	}
	return *e, true
}

// Entries returns the live entries of kind ("" for every kind), ordered by
// kind and name.
func (c *Cluster) Entries(kind string) []Entry {
	s := c.entries
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []Entry
	for _, e := range s.entries {
		if !e.Deleted && (kind == "" || e.Kind == kind) {
			out = append(out, *e)
		}
	}
	slices.SortFunc(out, func(a, b Entry) int { return compareKeys(a.Key(), b.Key()) })
	return out
}

// EntriesState returns the local change counter of the entries and a
// channel closed at the next change.
func (c *Cluster) EntriesState() (index uint64, changed <-chan struct{}) {
	s := c.entries
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.index, s.changed
}

// EntriesSnapshot returns every entry held, tombstones included, for
// persisting.
func (c *Cluster) EntriesSnapshot() []Entry {
	s := c.entries
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Entry, 0, len(s.entries))
	for _, e := range s.entries {
		out = append(out, *e)
	}
	slices.SortFunc(out, func(a, b Entry) int { return compareKeys(a.Key(), b.Key()) })
	return out
}

// LoadEntries restores persisted entries, before Start. They are this
// agent's own record and are not verified again.
func (c *Cluster) LoadEntries(entries []Entry) error {
	s := c.entries
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range entries {
		e := entries[i]
		if err := validateEntry(&e); err != nil {
			return fmt.Errorf("gossip: load config entries: %w", err)
		}
		if cur := s.entries[e.Key()]; cur == nil || e.beats(cur) {
			s.setLocked(&e)
		}
	}
	return nil
}

// ResignEntries signs again, as the local node, every held entry whose
// signature no longer verifies (its signer's certificate left the trusted
// roots), so that agents that trust only the new roots take it. It returns
// how many it signed. The checks run outside the lock: an entry that changed
// meanwhile is left as it now is.
func (c *Cluster) ResignEntries() (int, error) {
	if c.cfg.Attestor == nil {
		return 0, nil
	}
	var stale []Entry
	for _, e := range c.EntriesSnapshot() {
		if c.verifyEntry(&e) != nil {
			if err := c.signEntry(&e); err != nil {
				return 0, err
			}
			stale = append(stale, e)
		}
	}
	s := c.entries
	var keys []EntryKey
	s.mu.Lock()
	for i := range stale {
		e := &stale[i]
		if cur := s.entries[e.Key()]; cur != nil && cur.Stamp == e.Stamp && cur.Writer == e.Writer {
			s.entries[e.Key()] = e // same stamp: a change of signature, not of value
			keys = append(keys, e.Key())
		}
	}
	s.mu.Unlock()
	if len(keys) > 0 {
		c.push.enqueueEntries(keys...)
	}
	return len(keys), nil
}

// admitEntries applies entries from a peer: each that beats what is held
// and passes its signature is stored; it returns the keys that changed.
func (c *Cluster) admitEntries(entries []Entry, from string) []EntryKey {
	s := c.entries
	var changed []EntryKey
	for i := range entries {
		e := entries[i]
		s.mu.RLock()
		cur := s.entries[e.Key()]
		full := cur == nil && len(s.entries) >= MaxEntries
		s.mu.RUnlock()
		if cur != nil && !e.beats(cur) {
			continue // old news: no signature check needed
		}
		if full {
			c.refuseEntry(&e, from, RefusedLimit, ErrEntryLimit)
			continue
		}
		if err := c.verifyEntry(&e); err != nil {
			var r *errRefused
			errors.As(err, &r)
			c.refuseEntry(&e, from, r.reason, err)
			continue
		}
		s.mu.Lock()
		if cur := s.entries[e.Key()]; cur == nil || e.beats(cur) {
			s.setLocked(&e)
			changed = append(changed, e.Key())
		}
		s.mu.Unlock()
	}
	return changed
}

// RefusedLimit is the reason of an entry refused because the store is full.
const RefusedLimit = "limit"

// refuseEntry counts and logs (once per signer and reason) a refused entry.
func (c *Cluster) refuseEntry(e *Entry, from, reason string, err error) {
	if c.entryRefused.add(e.Signer+"\x00"+e.Writer, reason) {
		c.log.Warn("refused config entry", "kind", e.Kind, "name", e.Name, "writer", e.Writer,
			"signer", e.Signer, "from", from, "reason", reason, "err", err)
	}
}

// reapEntryTombstones drops tombstones older than ttl.
func (c *Cluster) reapEntryTombstones(ttl time.Duration, now time.Time) int {
	s := c.entries
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, e := range s.entries {
		if e.Deleted && now.Sub(versionTime(e.Stamp)) > ttl {
			delete(s.entries, k)
			n++
		}
	}
	if n > 0 {
		s.digest = nil
	}
	return n
}

// entriesFor returns the held entries (tombstones too) of keys.
func (c *Cluster) entriesFor(keys []EntryKey) []Entry {
	s := c.entries
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Entry, 0, len(keys))
	for _, k := range keys {
		if e := s.entries[k]; e != nil {
			out = append(out, *e)
		}
	}
	return out
}

// entryDigest returns the digest of every held entry's stamp.
func (c *Cluster) entryDigest() []byte {
	s := c.entries
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.digestLocked()
}

// entryStamps returns every held entry's key and stamp.
func (c *Cluster) entryStamps() []entryStamp {
	s := c.entries
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]entryStamp, 0, len(s.entries))
	for _, e := range s.entries {
		out = append(out, entryStamp{e.Kind, e.Name, e.Stamp, e.Writer})
	}
	return out
}

// answerEntrySync answers a peer's digest: nothing when the digests agree,
// else every stamp held here.
func (c *Cluster) answerEntrySync(m *message, reply *message) {
	if bytes.Equal(m.EntryDigest, c.entryDigest()) {
		reply.EntrySame = true
		return
	}
	reply.EntryStamps = c.entryStamps()
}

// syncEntries runs one anti-entropy exchange with the peer at addr: if the
// digests differ, it pulls the entries the peer has newer and pushes the
// ones it lacks.
func (c *Cluster) syncEntries(addr string) error {
	reply, err := c.call(addr, &message{Type: msgEntrySync, From: c.cfg.NodeName, EntryDigest: c.entryDigest()})
	if err != nil {
		return err
	}
	if reply.EntrySame {
		return nil
	}
	theirs := make(map[EntryKey]entryStamp, len(reply.EntryStamps))
	var want []EntryKey
	s := c.entries
	s.mu.RLock()
	for _, st := range reply.EntryStamps {
		k := EntryKey{st.Kind, st.Name}
		theirs[k] = st
		if cur := s.entries[k]; cur == nil || st.entry().beats(cur) {
			want = append(want, k)
		}
	}
	var give []EntryKey
	for k, e := range s.entries {
		if st, ok := theirs[k]; !ok || e.beats(st.entry()) {
			give = append(give, k)
		}
	}
	s.mu.RUnlock()
	c.stats.entrySyncs.Add(1)
	if len(want) > 0 {
		r, err := c.call(addr, &message{Type: msgPull, From: c.cfg.NodeName, EntryWants: want})
		if err != nil {
			return err
		}
		if changed := c.admitEntries(r.Entries, addr); len(changed) > 0 {
			c.push.enqueueEntries(changed...)
		}
	}
	if len(give) > 0 {
		if _, err := c.call(addr, &message{Type: msgPush, From: c.cfg.NodeName, Entries: c.entriesFor(give)}); err != nil {
			return err
		}
	}
	return nil
}

// entryLoop runs the anti-entropy exchanges: with a random peer every
// SyncInterval, and with a member as soon as it joins, so that a healed
// partition or a restarted agent converges without waiting for the tick.
func (c *Cluster) entryLoop() {
	defer c.wg.Done()
	tick := time.NewTicker(c.cfg.SyncInterval)
	defer tick.Stop()
	for {
		var addr string
		select {
		case <-c.stop:
			return
		case addr = <-c.entrySyncKick:
		case <-tick.C:
			if peers := c.randomPeers(1, ""); len(peers) > 0 {
				addr = peers[0]
			}
		}
		if addr == "" {
			continue
		}
		if err := c.syncEntries(addr); err != nil {
			c.log.Debug("config entry sync failed", "peer", addr, "err", err)
		}
	}
}

// kickEntrySync asks entryLoop for an exchange with addr, soon.
func (c *Cluster) kickEntrySync(addr string) {
	select {
	case c.entrySyncKick <- addr:
	default:
	}
}
