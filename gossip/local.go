package gossip

import "iter"

// LocalCatalog is this node's own catalog, kept by its owner: the layer
// above the Cluster (the agent's registry) is the only writer of it, and
// keeps its version, floor and tombstones, persists them and reaps the
// tombstones. The Cluster keeps no copy of any of it. It reads the
// committed state here when it starts and whenever the owner calls
// LocalChanged, and holds on to that state (immutable and shared, not
// copied) to advertise its version, answer pulls, push deltas and list the
// local instances.
//
// LocalState must be safe for concurrent use, return from memory without
// blocking, and never call into the Cluster. It returns nil while the node
// owns nothing.
type LocalCatalog interface {
	LocalState() LocalState
}

// LocalState is one committed version of the local catalog. It never
// changes once committed: the owner builds a new one for every change. Its
// methods must be safe for concurrent use and must not block.
type LocalState interface {
	// Version is the catalog's version, which only grows, also across
	// restarts (see NextVersion).
	Version() uint64
	// Floor is the oldest version from which Changes is complete:
	// tombstones older than it were reaped. An owner with no history (a
	// first start, a wiped data dir) sets it to its first version, so that
	// peers holding a previous life of the same name replace it whole.
	Floor() uint64
	// Changes yields every record, live service or tombstone, that
	// changed after since, in no particular order. A record's Version is
	// the version at which it last changed, never above Version.
	Changes(since uint64) iter.Seq[Record]
	// Record returns the record of a service ID, live or tombstone.
	Record(id string) (Record, bool)
}

// LocalChanged tells the Cluster that the owner committed a new version of
// the local catalog: the Cluster reads it, signs it (with an Attestor),
// serves it from then on, pushes what changed to peers and advertises the
// new version in its tags once changes pause. The owner calls it after
// every commit, in commit order; a call that finds nothing newer than what
// the Cluster serves does nothing. It may be called before Start. The
// error is the signature's.
func (c *Cluster) LocalChanged() error {
	if c.cfg.Local == nil {
		return nil
	}
	c.installMu.Lock() // one install at a time, in order
	defer c.installMu.Unlock()
	return c.installLocalLocked(true)
}

// installLocalLocked reads the owner's state and serves it if it is newer;
// with push, peers are told. Call with installMu held.
func (c *Cluster) installLocalLocked(push bool) error {
	st := c.cfg.Local.LocalState()
	if st == nil || st.Version() <= c.catalog.Version(c.cfg.NodeName) {
		return nil
	}
	var att *Attestation
	if c.cfg.Attestor != nil {
		var err error
		if att, err = c.attest(st); err != nil {
			return err
		}
	}
	prev, ok := c.catalog.setLocal(st, att)
	if !ok || !push {
		return nil
	}
	c.push.enqueue(c.cfg.NodeName, prev)
	select {
	case c.tagKick <- struct{}{}:
	default:
	}
	return nil
}

// emptyLocal is the catalog of a node that owns nothing.
type emptyLocal struct{}

func (emptyLocal) Version() uint64                 { return 0 }
func (emptyLocal) Floor() uint64                   { return 0 }
func (emptyLocal) Changes(uint64) iter.Seq[Record] { return func(func(Record) bool) {} }
func (emptyLocal) Record(string) (Record, bool)    { return Record{}, false }

var _ LocalState = emptyLocal{}

// localDelta is what a holder of version since of the local catalog st
// needs: the records changed after since, or everything (Full, Since the
// floor) when since is older than the floor.
func localDelta(owner string, st LocalState, att *Attestation, since uint64) Delta {
	d := Delta{Owner: owner, Since: since, Version: st.Version(), Att: att}
	if since >= d.Version {
		return d
	}
	if since < st.Floor() {
		d.Full, d.Since, since = true, st.Floor(), 0
	}
	for r := range st.Changes(since) {
		d.Records = append(d.Records, r)
	}
	sortRecords(d.Records)
	return d
}
