package node

import (
	"errors"
	"fmt"
	"iter"
	"maps"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-mesh/shoal/gossip"
)

// errNotFound is returned for an unknown service or check ID.
var errNotFound = errors.New("not found")

// localService is a service this agent owns, as registered, with the state
// of its checks. Committed values are never modified: a change builds a new
// localService.
type localService struct {
	Def     ServiceDefinition `json:"def"`
	Version uint64            `json:"version"`
	Checks  []*checkState     `json:"checks,omitempty"`

	// replicated is the service as gossip replicates it, made once, on
	// first use: a localService never changes, and node checks that
	// change replace every localService (touchAll).
	replicated atomic.Pointer[gossip.Service]
}

// checkState is a check of a local service (or of the node) and its latest
// result.
type checkState struct {
	Def    CheckDefinition `json:"def"`
	Status string          `json:"status"`
	Output string          `json:"output,omitempty"`
	// CriticalSince is when the check last turned critical (Unix µs); 0
	// while it is not critical. DeregisterCriticalServiceAfter counts from it.
	CriticalSince int64 `json:"critical_since,omitempty"`
}

// registryState is one committed version of everything this agent owns.
// It is immutable once committed.
type registryState struct {
	Version    uint64                   `json:"version"`
	Floor      uint64                   `json:"floor"`
	Services   map[string]*localService `json:"services"`
	Tombstones map[string]uint64        `json:"tombstones"`
	// NodeChecks are checks of the node itself (node maintenance, checks
	// registered without a ServiceID). As in Consul they count against
	// every service of the node, so they are published inside each one.
	NodeChecks map[string]*checkState `json:"node_checks,omitempty"`
}

func (s *registryState) clone() *registryState {
	return &registryState{
		Version:    s.Version,
		Floor:      s.Floor,
		Services:   maps.Clone(s.Services),
		Tombstones: maps.Clone(s.Tombstones),
		NodeChecks: maps.Clone(s.NodeChecks),
	}
}

// replicaView is a committed registryState as gossip reads it: this node's
// gossip.LocalState, so that the version, the floor and the tombstones
// exist here only.
type replicaView struct{ st *registryState }

// Version implements gossip.LocalState.
func (v replicaView) Version() uint64 { return v.st.Version }

// Floor implements gossip.LocalState.
func (v replicaView) Floor() uint64 { return v.st.Floor }

// Changes implements gossip.LocalState: the services and tombstones that
// changed after since.
func (v replicaView) Changes(since uint64) iter.Seq[gossip.Record] {
	return func(yield func(gossip.Record) bool) {
		for id, ls := range v.st.Services {
			if ls.Version > since && !yield(v.record(id, ls)) {
				return
			}
		}
		for id, ver := range v.st.Tombstones {
			if ver > since && !yield(gossip.Record{ID: id, Version: ver, Deleted: true}) {
				return
			}
		}
	}
}

// Record implements gossip.LocalState.
func (v replicaView) Record(id string) (gossip.Record, bool) {
	if ls, ok := v.st.Services[id]; ok {
		return v.record(id, ls), true
	}
	if ver, ok := v.st.Tombstones[id]; ok {
		return gossip.Record{ID: id, Version: ver, Deleted: true}, true
	}
	return gossip.Record{}, false
}

func (v replicaView) record(id string, ls *localService) gossip.Record {
	svc := ls.replicated.Load()
	if svc == nil {
		svc = ls.gossipService(v.st.NodeChecks)
		ls.replicated.Store(svc)
	}
	return gossip.Record{ID: id, Version: ls.Version, Service: svc}
}

var _ gossip.LocalState = replicaView{}

// gossipService is the service as replicated: its checks, then the node's.
func (ls *localService) gossipService(nodeChecks map[string]*checkState) *gossip.Service {
	d := &ls.Def
	s := &gossip.Service{
		ID:                d.ID,
		Name:              d.Name,
		Tags:              d.Tags,
		Address:           d.Address,
		Meta:              d.Meta,
		Weights:           gossip.Weights{Passing: d.Weights.Passing, Warning: d.Weights.Warning},
		EnableTagOverride: d.EnableTagOverride,
	}
	if d.Port != nil {
		s.Port = *d.Port
	}
	for _, c := range ls.Checks {
		s.Checks = append(s.Checks, c.gossipCheck())
	}
	for _, id := range sortedKeys(nodeChecks) {
		s.Checks = append(s.Checks, nodeChecks[id].gossipCheck())
	}
	return s
}

func (c *checkState) gossipCheck() gossip.Check {
	return gossip.Check{
		ID: c.Def.CheckID, Name: c.Def.Name, Status: c.Status, Output: c.Output,
		Notes: c.Def.Notes, Type: c.Def.Type(),
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// registry holds the services this agent owns, and is the one owner of
// their version, floor and tombstones: gossip reads them through it (it is
// the cluster's gossip.LocalCatalog) and keeps no copy. Every change is
// committed as a new version: persisted (fsynced) first, then announced to
// gossip, so an answered change survives a crash and peers never see a
// version the disk does not have.
type registry struct {
	store *store // nil: in memory only (--dev)
	// published tells gossip that a new state is committed
	// (gossip.Cluster.LocalChanged); called under commitMu, in order.
	published func() error
	now       func() time.Time
	// committed, if set, is called after each commit, outside the lock, with
	// the new state; calls can arrive out of order (compare Version).
	committed func(*registryState)

	// commitMu serializes commits. It is held across the disk write on
	// purpose: versions reach the disk and gossip in the order they were made.
	commitMu sync.Mutex
	state    atomic.Pointer[registryState]
}

func newRegistry(st *store, now func() time.Time) (*registry, error) {
	r := &registry{store: st, now: now, published: func() error { return nil }}
	state := &registryState{Services: map[string]*localService{}, Tombstones: map[string]uint64{}, NodeChecks: map[string]*checkState{}}
	if st != nil {
		loaded, err := st.load()
		if err != nil {
			return nil, err
		}
		if loaded != nil {
			state = loaded
		}
	}
	r.state.Store(state)
	return r, nil
}

// current returns the committed state; callers must not modify it.
func (r *registry) current() *registryState { return r.state.Load() }

// LocalState implements gossip.LocalCatalog: the committed state.
func (r *registry) LocalState() gossip.LocalState { return replicaView{r.current()} }

var _ gossip.LocalCatalog = (*registry)(nil)

// commit applies change to a copy of the state at a new version, persists
// it and publishes it. A change that fails, or a failed write, leaves the
// committed state untouched.
func (r *registry) commit(change func(next *registryState, version uint64) error) error {
	next, err := r.commitLocked(change)
	if next != nil && r.committed != nil {
		r.committed(next)
	}
	return err
}

func (r *registry) commitLocked(change func(next *registryState, version uint64) error) (*registryState, error) {
	r.commitMu.Lock()
	defer r.commitMu.Unlock()
	cur := r.current()
	next := cur.clone()
	next.Version = gossip.NextVersion(cur.Version, r.now())
	if cur.Version == 0 {
		// A new catalog (first start, or a wiped data dir) has no history:
		// anyone holding an older version of this owner, such as a replica
		// of a previous life under the same name, must take it whole.
		next.Floor = next.Version
	}
	if err := change(next, next.Version); err != nil {
		return nil, err
	}
	if r.store != nil {
		if err := r.store.save(next); err != nil {
			return nil, fmt.Errorf("persist catalog: %w", err)
		}
	}
	r.state.Store(next)
	return next, r.published()
}

// bump commits the current services at a new version. At start it makes the
// restarted agent's catalog outrank anything it published before.
func (r *registry) bump() error {
	return r.commit(func(*registryState, uint64) error { return nil })
}

// register adds or replaces a service. def must be validated and normalized.
// Re-registering keeps the results of checks whose definition is unchanged,
// so an idempotent registration does not reset health.
func (r *registry) register(def ServiceDefinition, checks []*checkState) error {
	return r.commit(func(next *registryState, v uint64) error {
		if old := next.Services[def.ID]; old != nil {
			for i, c := range checks {
				if prev := old.check(c.Def.CheckID); prev != nil && sameCheckDef(&prev.Def, &c.Def) {
					checks[i] = prev
				}
			}
			// Maintenance outlives a re-registration, as in Consul.
			if m := old.check(serviceMaintID(def.ID)); m != nil {
				checks = append(checks, m)
			}
		}
		next.Services[def.ID] = &localService{Def: def, Version: v, Checks: checks}
		delete(next.Tombstones, def.ID)
		return nil
	})
}

// deregister removes a service, leaving a tombstone.
func (r *registry) deregister(id string) error {
	return r.commit(func(next *registryState, v uint64) error {
		if _, ok := next.Services[id]; !ok {
			return fmt.Errorf("unknown service ID %q: %w", id, errNotFound)
		}
		delete(next.Services, id)
		next.Tombstones[id] = v
		return nil
	})
}

// outputUpdateInterval is how often a check whose status did not change may
// still publish new output, so that checks with ever-changing output (a
// timestamp in a health page) do not flood gossip. Consul does the same.
const outputUpdateInterval = 5 * time.Minute

// updateCheck records a check result. An unchanged status costs no version,
// no disk write and no gossip, unless its output changed and was last
// published more than outputUpdateInterval ago.
func (r *registry) updateCheck(checkID, status, output string) error {
	if len(output) > maxCheckOutput {
		output = output[:maxCheckOutput]
	}
	st := r.current()
	c, svcVersion := st.findCheck(checkID)
	if c == nil {
		return fmt.Errorf("unknown check ID %q: %w", checkID, errNotFound)
	}
	// The first output of a check is never held back (it would hide why a
	// check registered critical fails), nor is the first critical result of
	// a check registered critical: DeregisterCriticalServiceAfter counts
	// from the CriticalSince it sets.
	firstOutput := c.Output == "" && output != ""
	unclocked := status == gossip.StatusCritical && c.CriticalSince == 0
	recent := r.now().Sub(time.UnixMicro(int64(svcVersion))) < outputUpdateInterval
	if c.Status == status && !unclocked && (c.Output == output || (recent && !firstOutput)) {
		return nil
	}
	return r.commit(func(next *registryState, v uint64) error {
		cur, _ := next.findCheck(checkID)
		if cur == nil {
			return fmt.Errorf("unknown check ID %q: %w", checkID, errNotFound)
		}
		updated := &checkState{Def: cur.Def, Status: status, Output: output}
		if status == gossip.StatusCritical {
			updated.CriticalSince = cur.CriticalSince
			if cur.Status != gossip.StatusCritical || updated.CriticalSince == 0 {
				updated.CriticalSince = r.now().UnixMicro()
			}
		}
		next.replaceCheck(updated, v)
		return nil
	})
}

// findCheck returns a check and the version of the record publishing it.
func (s *registryState) findCheck(id string) (*checkState, uint64) {
	if c, ok := s.NodeChecks[id]; ok {
		return c, s.Version
	}
	for _, ls := range s.Services {
		if c := ls.check(id); c != nil {
			return c, ls.Version
		}
	}
	return nil, 0
}

// replaceCheck stores c in place of the check with the same ID, marking the
// records that publish it as changed at version v. Call on an uncommitted
// state only.
func (s *registryState) replaceCheck(c *checkState, v uint64) {
	id := c.Def.CheckID
	if _, ok := s.NodeChecks[id]; ok || c.Def.ServiceID == "" {
		if s.NodeChecks == nil {
			s.NodeChecks = make(map[string]*checkState)
		}
		s.NodeChecks[id] = c
		s.touchAll(v)
		return
	}
	ls := s.Services[c.Def.ServiceID]
	if ls == nil {
		return
	}
	updated := &localService{Def: ls.Def, Version: v, Checks: make([]*checkState, 0, len(ls.Checks)+1)}
	found := false
	for _, old := range ls.Checks {
		if old.Def.CheckID == id {
			old, found = c, true
		}
		updated.Checks = append(updated.Checks, old)
	}
	if !found {
		updated.Checks = append(updated.Checks, c)
	}
	s.Services[ls.Def.ID] = updated
}

// removeCheck drops a check; it reports whether there was one.
func (s *registryState) removeCheck(id string, v uint64) bool {
	if _, ok := s.NodeChecks[id]; ok {
		delete(s.NodeChecks, id)
		s.touchAll(v)
		return true
	}
	for sid, ls := range s.Services {
		if ls.check(id) == nil {
			continue
		}
		updated := &localService{Def: ls.Def, Version: v}
		for _, c := range ls.Checks {
			if c.Def.CheckID != id {
				updated.Checks = append(updated.Checks, c)
			}
		}
		s.Services[sid] = updated
		return true
	}
	return false
}

// touchAll marks every service as changed at v: node checks are published
// inside each of them.
func (s *registryState) touchAll(v uint64) {
	for id, ls := range s.Services {
		s.Services[id] = &localService{Def: ls.Def, Version: v, Checks: ls.Checks}
	}
}

// registerCheck adds or replaces a check; def must be validated and its
// ServiceID, if any, must name a local service.
func (r *registry) registerCheck(def CheckDefinition) error {
	return r.commit(func(next *registryState, v uint64) error {
		if def.ServiceID != "" && next.Services[def.ServiceID] == nil {
			return fmt.Errorf("unknown service ID %q: %w", def.ServiceID, errNotFound)
		}
		next.replaceCheck(&checkState{Def: def, Status: def.Status}, v)
		return nil
	})
}

// Maintenance checks, as Consul names them.
const nodeMaintID = "_node_maintenance"

func serviceMaintID(serviceID string) string { return "_service_maintenance:" + serviceID }

const defaultMaintReason = "Maintenance mode is enabled for this service, but no reason was provided. This is a default message."

// setMaintenance puts a service (or, with serviceID "", the whole node) in or
// out of maintenance: a critical check that takes it out of every healthy
// pool while keeping its registration.
func (r *registry) setMaintenance(serviceID string, enable bool, reason string) error {
	id, name := nodeMaintID, "Node Maintenance Mode"
	if serviceID != "" {
		id, name = serviceMaintID(serviceID), "Service Maintenance Mode"
	}
	if reason == "" {
		reason = defaultMaintReason
	}
	st := r.current()
	if serviceID != "" && st.Services[serviceID] == nil {
		return fmt.Errorf("unknown service ID %q: %w", serviceID, errNotFound)
	}
	if cur, _ := st.findCheck(id); (cur != nil) == enable && (!enable || cur.Def.Notes == reason) {
		return nil // already so
	}
	return r.commit(func(next *registryState, v uint64) error {
		if serviceID != "" && next.Services[serviceID] == nil {
			return fmt.Errorf("unknown service ID %q: %w", serviceID, errNotFound)
		}
		if !enable {
			next.removeCheck(id, v)
			return nil
		}
		def := CheckDefinition{CheckID: id, Name: name, Notes: reason, ServiceID: serviceID, Status: gossip.StatusCritical}
		next.replaceCheck(&checkState{Def: def, Status: gossip.StatusCritical, Output: reason}, v)
		return nil
	})
}

// deregisterCheck removes a check.
func (r *registry) deregisterCheck(id string) error {
	return r.commit(func(next *registryState, v uint64) error {
		if !next.removeCheck(id, v) {
			return fmt.Errorf("unknown check ID %q: %w", id, errNotFound)
		}
		return nil
	})
}

// reapTombstones drops tombstones older than ttl and raises the floor, so
// that peers that could have missed them get a full catalog instead.
func (r *registry) reapTombstones(ttl time.Duration) error {
	cur := r.current()
	old := false
	for _, v := range cur.Tombstones {
		if r.now().Sub(time.UnixMicro(int64(v))) > ttl {
			old = true
		}
	}
	if !old {
		return nil
	}
	return r.commit(func(next *registryState, _ uint64) error {
		for id, v := range next.Tombstones {
			if r.now().Sub(time.UnixMicro(int64(v))) > ttl {
				delete(next.Tombstones, id)
				next.Floor = max(next.Floor, v)
			}
		}
		return nil
	})
}

func (ls *localService) check(id string) *checkState {
	for _, c := range ls.Checks {
		if c.Def.CheckID == id {
			return c
		}
	}
	return nil
}

// services returns the local services ordered by ID.
func (r *registry) services() []*localService {
	st := r.current()
	out := make([]*localService, 0, len(st.Services))
	for _, ls := range st.Services {
		out = append(out, ls)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Def.ID < out[j].Def.ID })
	return out
}
