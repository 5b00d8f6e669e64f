package gossip

import (
	"sort"
	"sync"
	"sync/atomic"
)

// serviceIndex finds the instances of a service without scanning the
// catalog, and gives every service a generation that moves only when that
// service's instances change, so that a consumer (the proxy) refreshes one
// service's state without being woken by every other change in the cluster.
//
// Its maps are guarded by Catalog.mu; generations are read without it.
type serviceIndex struct {
	// byName holds the records of live instances by service name.
	byName map[string]*serviceEntry
	// gens mirrors byName for lock-free reads of generations.
	gens sync.Map // service name → *serviceEntry
}

// serviceEntry is one service's slice of the index.
type serviceEntry struct {
	// gen is the catalog index at the service's last change; written under
	// Catalog.mu, read atomically.
	gen  atomic.Uint64
	refs map[recordKey]struct{}
}

// recordKey names one record: an owner's service ID.
type recordKey struct{ owner, id string }

func newServiceIndex() serviceIndex {
	return serviceIndex{byName: make(map[string]*serviceEntry)}
}

// generation returns the generation of the named service: 0 when no live
// instance of it is known.
func (x *serviceIndex) generation(name string) uint64 {
	if e, ok := x.gens.Load(name); ok {
		return e.(*serviceEntry).gen.Load()
	}
	return 0
}

// add records that owner's record id is a live instance of service name,
// at generation gen.
func (x *serviceIndex) add(name string, k recordKey, gen uint64) {
	e := x.byName[name]
	if e == nil {
		e = &serviceEntry{refs: make(map[recordKey]struct{})}
		x.byName[name] = e
		x.gens.Store(name, e)
	}
	e.refs[k] = struct{}{}
	e.gen.Store(gen)
}

// remove forgets owner's record id as an instance of service name. A
// service left with no instance leaves the index: its generation reads 0.
func (x *serviceIndex) remove(name string, k recordKey, gen uint64) {
	e := x.byName[name]
	if e == nil {
		return
	}
	delete(e.refs, k)
	e.gen.Store(gen)
	if len(e.refs) == 0 {
		delete(x.byName, name)
		x.gens.Delete(name)
	}
}

// touch moves the generation of the named service on.
func (x *serviceIndex) touch(name string, gen uint64) {
	if e := x.byName[name]; e != nil {
		e.gen.Store(gen)
	}
}

// liveName is the service name of a record, or "" for a tombstone.
func liveName(r Record) string {
	if r.Deleted || r.Service == nil {
		return ""
	}
	return r.Service.Name
}

// ServiceGeneration returns a number that changes whenever the instances of
// the named service change: a record registered, changed or removed, or
// the liveness, address or catalog floor of a node that hosts one. It does
// not move for other services' changes, nor for tag updates that change
// nothing of the service's instances. It never blocks: it is meant for hot
// paths that call Instances only when it moved.
func (c *Catalog) ServiceGeneration(name string) uint64 {
	return c.svcs.generation(name)
}

// applyOwnerLocked applies d to owner's state o and keeps the service index
// in step. Call with mu held.
func (c *Catalog) applyOwnerLocked(owner string, o *ownerState, d *Delta) applyResult {
	// What the delta may change, as it was: a full delta replaces the
	// records map (so the old one stays intact), a partial one edits it.
	before := o.records
	if !d.Full {
		before = make(map[string]Record, len(d.Records))
		for _, r := range d.Records {
			if cur, ok := o.records[r.ID]; ok {
				before[r.ID] = cur
			}
		}
	}
	res := o.apply(d)
	if res != applyApplied {
		return res
	}
	c.bumpLocked()
	reindex := func(id string) {
		old, now := before[id], o.records[id]
		if old.Version == now.Version && old.Deleted == now.Deleted {
			return // not changed by this delta
		}
		k := recordKey{owner, id}
		if name := liveName(old); name != "" {
			c.svcs.remove(name, k, c.index)
		}
		if name := liveName(now); name != "" {
			c.svcs.add(name, k, c.index)
		}
	}
	for id := range before {
		reindex(id)
	}
	for _, r := range d.Records {
		if _, seen := before[r.ID]; !seen {
			reindex(r.ID)
		}
	}
	return res
}

// forgetOwnerLocked takes every instance of owner out of the index. Call
// with mu held, after bumpLocked.
func (c *Catalog) forgetOwnerLocked(owner string, o *ownerState) {
	for id, r := range o.records {
		if name := liveName(r); name != "" {
			c.svcs.remove(name, recordKey{owner, id}, c.index)
		}
	}
}

// reindexLocalLocked keeps the service index in step with a new state of
// the local catalog. Call with mu held, after bumpLocked.
func (c *Catalog) reindexLocalLocked(old, st LocalState) {
	move := func(before, now Record) {
		if before.Version == now.Version && before.Deleted == now.Deleted {
			return
		}
		k := recordKey{c.local, now.ID}
		if name := liveName(before); name != "" {
			c.svcs.remove(name, k, c.index)
		}
		if name := liveName(now); name != "" {
			c.svcs.add(name, k, c.index)
		}
	}
	if st.Floor() > old.Version() {
		// Tombstones were reaped past what the index saw: start over.
		for r := range old.Changes(0) {
			move(r, Record{ID: r.ID})
		}
		for r := range st.Changes(0) {
			move(Record{ID: r.ID}, r)
		}
		return
	}
	for r := range st.Changes(old.Version()) {
		before, _ := old.Record(r.ID)
		move(before, r)
	}
}

// touchOwnerLocked moves on the generation of every service with an
// instance on owner, whose node changed. Call with mu held, after bumpLocked.
func (c *Catalog) touchOwnerLocked(owner string) {
	if owner == c.local {
		for r := range c.localSt.Changes(0) {
			if name := liveName(r); name != "" {
				c.svcs.touch(name, c.index)
			}
		}
		return
	}
	o := c.owners[owner]
	if o == nil {
		return
	}
	for _, r := range o.records {
		if name := liveName(r); name != "" {
			c.svcs.touch(name, c.index)
		}
	}
}

// indexedInstances returns the instances of the named service from the
// index, ordered by node and service ID. Call with mu held for reading.
func (c *Catalog) indexedInstancesLocked(name string) []Instance {
	e := c.svcs.byName[name]
	if e == nil {
		return nil
	}
	out := make([]Instance, 0, len(e.refs))
	for k := range e.refs {
		m := c.members[k.owner]
		if m == nil {
			continue
		}
		var r Record
		if k.owner == c.local {
			r, _ = c.localSt.Record(k.id)
		} else if o := c.owners[k.owner]; o != nil && c.visibleLocked(k.owner, o, m) {
			r = o.records[k.id]
		}
		if liveName(r) != name {
			continue
		}
		out = append(out, Instance{Node: *m, Service: r.Service, Version: r.Version})
	}
	sortInstances(out)
	return out
}

func sortInstances(out []Instance) {
	sort.Slice(out, func(i, j int) bool {
		if out[i].Node.Name != out[j].Node.Name {
			return out[i].Node.Name < out[j].Node.Name
		}
		return out[i].Service.ID < out[j].Service.ID
	})
}
