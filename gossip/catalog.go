package gossip

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Instance is one service instance in the converged view.
type Instance struct {
	// Node is the owner agent, with its current membership status.
	Node Member
	// Service is shared with the catalog: treat it as read-only.
	Service *Service
	// Version is the owner's catalog version at which the instance last changed.
	Version uint64
}

// Status is the instance's health: critical when its owner is not alive,
// otherwise the aggregate of its checks.
func (i *Instance) Status() string {
	if i.Node.Status != StatusAlive {
		return StatusCritical
	}
	return i.Service.Status()
}

// Catalog is the replicated catalog: every owner's records as this agent
// knows them, plus the membership they are attached to. It is safe for
// concurrent use; readers get copies or shared read-only values.
type Catalog struct {
	local string
	now   func() time.Time
	// signed makes apply take a peer's delta only when the records lead to
	// the digest its owner signed (see attest.go); set before any apply.
	signed bool

	mu sync.RWMutex // guards the fields below
	// localSt is the local catalog as its owner last committed it (see
	// LocalCatalog), shared, never copied; localAtt is its signature.
	localSt  LocalState
	localAtt *Attestation
	// owners are the replicas of every other owner's catalog.
	owners  map[string]*ownerState
	members map[string]*Member
	// left remembers the last version of owners that left, so that a late
	// delta from before the leave cannot bring their services back.
	left    map[string]uint64
	index   uint64
	changed chan struct{}
	svcs    serviceIndex // instances by service, with per-service generations

	// indexNow mirrors index for lock-free reads on hot paths (the proxy
	// checks it on every request).
	indexNow atomic.Uint64
}

func newCatalog(local string, now func() time.Time) *Catalog {
	c := &Catalog{
		local:   local,
		now:     now,
		localSt: emptyLocal{},
		owners:  make(map[string]*ownerState),
		members: make(map[string]*Member),
		left:    make(map[string]uint64),
		changed: make(chan struct{}),
		svcs:    newServiceIndex(),
	}
	c.index = NextVersion(0, now())
	c.indexNow.Store(c.index)
	return c
}

// Index is the catalog's change index (Consul's X-Consul-Index): it grows on
// every change of records or membership, also across restarts.
func (c *Catalog) Index() uint64 {
	return c.indexNow.Load()
}

// Changed returns a channel that is closed at the next change after the call.
func (c *Catalog) Changed() <-chan struct{} {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.changed
}

// bumpLocked records a change and wakes the waiters. Call with mu held.
func (c *Catalog) bumpLocked() {
	c.index = NextVersion(c.index, c.now())
	c.indexNow.Store(c.index)
	close(c.changed)
	c.changed = make(chan struct{})
}

// Version returns the version of owner's catalog held here (0: none).
func (c *Catalog) Version(owner string) uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if owner == c.local {
		return c.localSt.Version()
	}
	if o := c.owners[owner]; o != nil {
		return o.version
	}
	return 0
}

// floor returns the floor of owner's catalog held here (0: none).
func (c *Catalog) floor(owner string) uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if owner == c.local {
		return c.localSt.Floor()
	}
	if o := c.owners[owner]; o != nil {
		return o.floor
	}
	return 0
}

// apply merges a delta received from a peer. Deltas about the local agent
// are ignored: it is the only writer of its own services.
func (c *Catalog) apply(d *Delta) applyResult {
	res, _ := c.applyFrom(d)
	return res
}

// applyFrom is apply that also reports the owner's version held before, the
// base from which to forward what was new.
func (c *Catalog) applyFrom(d *Delta) (applyResult, uint64) {
	if d.Owner == c.local || d.Owner == "" {
		return applyStale, 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.left[d.Owner]; ok && d.Version <= v {
		return applyStale, 0
	}
	if m, ok := c.members[d.Owner]; ok && m.Status == StatusLeft {
		// A member that left owns nothing until it rejoins (alive again),
		// whatever a late push or a peer that missed the leave says.
		return applyStale, 0
	}
	o := c.owners[d.Owner]
	if o == nil {
		o = newOwnerState()
		c.owners[d.Owner] = o
	}
	prev := o.version
	if c.signed && d.Version > o.version && (d.Full || d.Since <= o.version) {
		if d.Att == nil || string(o.digestAfter(d)) != string(d.Att.Digest) {
			return applyRefused, prev
		}
	}
	return c.applyOwnerLocked(d.Owner, o, d), prev
}

// setLocal serves a newer committed state of the local catalog, with its
// signature. It reports the version served before, from which peers need
// a delta, and whether st was newer.
func (c *Catalog) setLocal(st LocalState, att *Attestation) (prev uint64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.localSt
	prev = old.Version()
	if st.Version() <= prev {
		return prev, false
	}
	c.localSt, c.localAtt = st, att
	c.bumpLocked()
	c.reindexLocalLocked(old, st)
	return prev, true
}

// deltaSince returns what a holder of owner's version since is missing.
// ok is false when this agent knows nothing newer than since.
func (c *Catalog) deltaSince(owner string, since uint64) (Delta, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if owner == c.local {
		if c.localSt.Version() <= since {
			return Delta{}, false
		}
		return localDelta(owner, c.localSt, c.localAtt, since), true
	}
	o := c.owners[owner]
	if o == nil || o.version <= since {
		return Delta{}, false
	}
	return o.deltaSince(owner, since), true
}

// versions returns the catalog version held for every owner.
func (c *Catalog) versions() map[string]uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make(map[string]uint64, len(c.owners)+1)
	for name, o := range c.owners {
		out[name] = o.version
	}
	if v := c.localSt.Version(); v > 0 {
		out[c.local] = v
	}
	return out
}

// setMember records a member's latest state. A member that left takes its
// services with it.
func (c *Catalog) setMember(m Member) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur, known := c.members[m.Name]
	if known && sameMember(cur, &m) {
		return
	}
	if known && onlyVersionMoved(cur, &m) {
		// The owner advertises the version it just published: the change
		// itself bumped the index when it was published or applied here,
		// and a gap is repaired by a pull that bumps it then. Bumping
		// again would wake every blocking query twice per change.
		m.Index = cur.Index
		c.members[m.Name] = &m
		return
	}
	c.bumpLocked()
	m.Index = c.index
	c.members[m.Name] = &m
	if m.Status == StatusLeft && m.Name != c.local {
		if o := c.owners[m.Name]; o != nil {
			c.left[m.Name] = o.version
			c.forgetOwnerLocked(m.Name, o)
			delete(c.owners, m.Name)
		}
		return
	}
	if m.Status == StatusAlive {
		delete(c.left, m.Name)
	}
	if !known || cur.Status != m.Status || cur.Port != m.Port || !cur.Addr.Equal(m.Addr) || cur.CatalogFloor() != m.CatalogFloor() {
		c.touchOwnerLocked(m.Name) // what its instances show changed
	}
}

// removeMember forgets a member that serf reaped, with its services.
func (c *Catalog) removeMember(name string) {
	if name == c.local {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bumpLocked()
	if o := c.owners[name]; o != nil {
		c.left[name] = o.version
		c.forgetOwnerLocked(name, o)
	}
	delete(c.owners, name)
	delete(c.members, name)
}

// onlyVersionMoved reports whether b differs from a in its advertised
// catalog version alone.
func onlyVersionMoved(a, b *Member) bool {
	if a.Status != b.Status || a.Port != b.Port || !a.Addr.Equal(b.Addr) || len(a.Tags) != len(b.Tags) {
		return false
	}
	for k, v := range a.Tags {
		if w, ok := b.Tags[k]; !ok || (w != v && k != TagVersion) {
			return false
		}
	}
	return true
}

func sameMember(a, b *Member) bool {
	if a.Status != b.Status || a.Port != b.Port || !a.Addr.Equal(b.Addr) || len(a.Tags) != len(b.Tags) {
		return false
	}
	for k, v := range a.Tags {
		if b.Tags[k] != v {
			return false
		}
	}
	return true
}

// reapTombstones drops tombstones older than ttl from every replica. The
// local catalog's are its owner's to reap (see LocalCatalog).
func (c *Catalog) reapTombstones(ttl time.Duration) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, o := range c.owners {
		n += o.reapTombstones(c.now(), ttl)
	}
	return n
}

// Members returns every known member, ordered by name.
func (c *Catalog) Members() []Member {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]Member, 0, len(c.members))
	for _, m := range c.members {
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Member returns the named member.
func (c *Catalog) Member(name string) (Member, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	m, ok := c.members[name]
	if !ok {
		return Member{}, false
	}
	return *m, true
}

// Services returns every service name with the union of its instances' tags.
func (c *Catalog) Services() map[string][]string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	seen := make(map[string]map[string]bool)
	add := func(s *Service) {
		tags := seen[s.Name]
		if tags == nil {
			tags = make(map[string]bool)
			seen[s.Name] = tags
		}
		for _, t := range s.Tags {
			tags[t] = true
		}
	}
	for owner, o := range c.owners {
		if m, ok := c.members[owner]; !ok || m.CatalogFloor() > o.version {
			continue // not a member, or a previous life of one (see instances)
		}
		for _, s := range o.services() {
			add(s)
		}
	}
	if _, ok := c.members[c.local]; ok {
		for r := range c.localSt.Changes(0) {
			if liveName(r) != "" {
				add(r.Service)
			}
		}
	}
	out := make(map[string][]string, len(seen))
	for name, tags := range seen {
		list := make([]string, 0, len(tags))
		for t := range tags {
			list = append(list, t)
		}
		sort.Strings(list)
		out[name] = list
	}
	return out
}

// Instances returns the instances of the named service, ordered by node and
// service ID. It reads the service index: its cost grows with the service's
// instances, not with the catalog.
func (c *Catalog) Instances(name string) []Instance {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.indexedInstancesLocked(name)
}

// NodeInstances returns the instances owned by the named node.
func (c *Catalog) NodeInstances(node string) []Instance {
	return c.instances(func(owner string, _ *Service) bool { return owner == node })
}

// AllInstances returns every instance in the catalog.
func (c *Catalog) AllInstances() []Instance {
	return c.instances(func(string, *Service) bool { return true })
}

func (c *Catalog) instances(keep func(owner string, s *Service) bool) []Instance {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []Instance
	for owner, o := range c.owners {
		m, ok := c.members[owner]
		if !ok || !c.visibleLocked(owner, o, m) {
			continue
		}
		for _, r := range o.records {
			if r.Deleted || r.Service == nil || !keep(owner, r.Service) {
				continue
			}
			out = append(out, Instance{Node: *m, Service: r.Service, Version: r.Version})
		}
	}
	if m, ok := c.members[c.local]; ok {
		for r := range c.localSt.Changes(0) {
			if liveName(r) != "" && keep(c.local, r.Service) {
				out = append(out, Instance{Node: *m, Service: r.Service, Version: r.Version})
			}
		}
	}
	sortInstances(out)
	return out
}

// visibleLocked reports whether a replica of owner's records is shown. A
// replica older than the owner's floor is a previous life of an owner that
// came back with a wiped data dir, never to be shown as alive; the pull
// that its tags started replaces it in a moment. Call with mu held.
func (c *Catalog) visibleLocked(_ string, o *ownerState, m *Member) bool {
	return m.CatalogFloor() <= o.version
}
