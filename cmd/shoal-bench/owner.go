package main

import (
	"iter"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-mesh/shoal/gossip"
)

// benchOwner is the catalog of one benchmark agent, in place of node's
// registry: the agent's gossip.LocalCatalog. It keeps every record,
// tombstones included; each change commits a new immutable state.
type benchOwner struct {
	mu    sync.Mutex // serializes changes
	state atomic.Pointer[benchState]
}

// benchState is one committed version of a benchOwner's catalog.
type benchState struct {
	version, floor uint64
	records        map[string]gossip.Record
}

func (o *benchOwner) LocalState() gossip.LocalState {
	if st := o.state.Load(); st != nil {
		return st
	}
	return nil
}

// change registers service id or, with gone, deregisters it, and returns
// the new version. The caller tells the cluster (LocalChanged).
func (o *benchOwner) change(id string, gone bool) uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	next := &benchState{records: make(map[string]gossip.Record)}
	if cur := o.state.Load(); cur != nil {
		next.version, next.floor, next.records = cur.version, cur.floor, maps.Clone(cur.records)
	}
	first := next.version == 0
	next.version = gossip.NextVersion(next.version, time.Now())
	if first {
		next.floor = next.version
	}
	r := gossip.Record{ID: id, Version: next.version, Deleted: gone}
	if !gone {
		r.Service = &gossip.Service{ID: id, Name: "bench", Address: "127.0.0.1", Port: 8080,
			Tags: []string{"v1"}, Weights: gossip.Weights{Passing: 1, Warning: 1}}
	}
	next.records[id] = r
	o.state.Store(next)
	return next.version
}

// live reports whether service id is registered.
func (o *benchOwner) live(id string) bool {
	if st := o.state.Load(); st != nil {
		r, ok := st.records[id]
		return ok && !r.Deleted
	}
	return false
}

func (s *benchState) Version() uint64 { return s.version }
func (s *benchState) Floor() uint64   { return s.floor }

func (s *benchState) Changes(since uint64) iter.Seq[gossip.Record] {
	return func(yield func(gossip.Record) bool) {
		for _, r := range s.records {
			if r.Version > since && !yield(r) {
				return
			}
		}
	}
}

func (s *benchState) Record(id string) (gossip.Record, bool) {
	r, ok := s.records[id]
	return r, ok
}

var (
	_ gossip.LocalCatalog = (*benchOwner)(nil)
	_ gossip.LocalState   = (*benchState)(nil)
)
