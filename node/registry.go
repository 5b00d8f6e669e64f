package node

import (
	"errors"
	"fmt"
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
}

// checkState is a check of a local service and its latest result.
type checkState struct {
	Def    CheckDefinition `json:"def"`
	Status string          `json:"status"`
	Output string          `json:"output,omitempty"`
}

// registryState is one committed version of everything this agent owns.
// It is immutable once committed.
type registryState struct {
	Version    uint64                   `json:"version"`
	Floor      uint64                   `json:"floor"`
	Services   map[string]*localService `json:"services"`
	Tombstones map[string]uint64        `json:"tombstones"`
}

func (s *registryState) clone() *registryState {
	return &registryState{
		Version:    s.Version,
		Floor:      s.Floor,
		Services:   maps.Clone(s.Services),
		Tombstones: maps.Clone(s.Tombstones),
	}
}

// delta is the full catalog of this owner as gossip replicates it.
func (s *registryState) delta() gossip.Delta {
	d := gossip.Delta{Version: s.Version, Since: s.Floor, Full: true}
	for id, ls := range s.Services {
		d.Records = append(d.Records, gossip.Record{ID: id, Version: ls.Version, Service: ls.gossipService()})
	}
	for id, v := range s.Tombstones {
		d.Records = append(d.Records, gossip.Record{ID: id, Version: v, Deleted: true})
	}
	return d
}

func (ls *localService) gossipService() *gossip.Service {
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
		s.Checks = append(s.Checks, gossip.Check{
			ID: c.Def.CheckID, Name: c.Def.Name, Status: c.Status, Output: c.Output,
			Notes: c.Def.Notes, Type: c.Def.Type(),
		})
	}
	return s
}

// registry holds the services this agent owns. Every change is committed as
// a new version: persisted (fsynced) first, then published to gossip, so an
// answered change survives a crash and peers never see a version the disk
// does not have.
type registry struct {
	store   *store // nil: in memory only (--dev)
	publish func(gossip.Delta) error
	now     func() time.Time

	// commitMu serializes commits. It is held across the disk write on
	// purpose: versions reach the disk and gossip in the order they were made.
	commitMu sync.Mutex
	state    atomic.Pointer[registryState]
}

func newRegistry(st *store, now func() time.Time) (*registry, error) {
	r := &registry{store: st, now: now, publish: func(gossip.Delta) error { return nil }}
	state := &registryState{Services: map[string]*localService{}, Tombstones: map[string]uint64{}}
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

// commit applies change to a copy of the state at a new version, persists
// it and publishes it. A change that fails, or a failed write, leaves the
// committed state untouched.
func (r *registry) commit(change func(next *registryState, version uint64) error) error {
	r.commitMu.Lock()
	defer r.commitMu.Unlock()
	cur := r.current()
	next := cur.clone()
	next.Version = gossip.NextVersion(cur.Version, r.now())
	if err := change(next, next.Version); err != nil {
		return err
	}
	if r.store != nil {
		if err := r.store.save(next); err != nil {
			return fmt.Errorf("persist catalog: %w", err)
		}
	}
	r.state.Store(next)
	return r.publish(next.delta())
}

// bump commits the current services at a new version. At start it makes the
// restarted agent's catalog outrank anything it published before.
func (r *registry) bump() error {
	return r.commit(func(*registryState, uint64) error { return nil })
}

// register adds or replaces a service. def must be validated and normalized.
func (r *registry) register(def ServiceDefinition, checks []*checkState) error {
	return r.commit(func(next *registryState, v uint64) error {
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

// updateCheck records a check result. An unchanged status and output is not
// a change: it costs no version, no disk write and no gossip.
func (r *registry) updateCheck(checkID, status, output string) error {
	svc, _ := r.findCheck(checkID)
	if svc == nil {
		return fmt.Errorf("unknown check ID %q: %w", checkID, errNotFound)
	}
	if c := svc.check(checkID); c != nil && c.Status == status && c.Output == output {
		return nil
	}
	return r.commit(func(next *registryState, v uint64) error {
		ls := next.Services[svc.Def.ID]
		if ls == nil || ls.check(checkID) == nil {
			return fmt.Errorf("unknown check ID %q: %w", checkID, errNotFound)
		}
		updated := &localService{Def: ls.Def, Version: v, Checks: make([]*checkState, len(ls.Checks))}
		for i, c := range ls.Checks {
			if c.Def.CheckID == checkID {
				c = &checkState{Def: c.Def, Status: status, Output: output}
			}
			updated.Checks[i] = c
		}
		next.Services[ls.Def.ID] = updated
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

// findCheck returns the service owning a check, and the check.
func (r *registry) findCheck(id string) (*localService, *checkState) {
	for _, ls := range r.current().Services {
		if c := ls.check(id); c != nil {
			return ls, c
		}
	}
	return nil, nil
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
