package gossip

import (
	"fmt"
	"iter"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testState is a LocalState for tests: a snapshot of an ownerState, never
// modified once built.
type testState struct{ o ownerState }

func (s *testState) Version() uint64 { return s.o.version }
func (s *testState) Floor() uint64   { return s.o.floor }

func (s *testState) Changes(since uint64) iter.Seq[Record] {
	return func(yield func(Record) bool) {
		for _, r := range s.o.records {
			if r.Version > since && !yield(r) {
				return
			}
		}
	}
}

func (s *testState) Record(id string) (Record, bool) {
	r, ok := s.o.records[id]
	return r, ok
}

// nextState is what an owner holding cur commits for d: d applied by the
// replicas' rules (a full delta replaces everything), the floor never
// lowered, and a first commit without a floor taking its version, as
// node's registry does. ok is false when d does not apply.
func nextState(cur LocalState, d *Delta) (*testState, bool) {
	next := &testState{o: ownerState{records: make(map[string]Record)}}
	if s, isTest := cur.(*testState); isTest {
		next.o = s.o
		next.o.records = maps.Clone(s.o.records)
	}
	d.Since = max(d.Since, cur.Floor())
	if cur.Version() == 0 && d.Since == 0 {
		d.Since = d.Version
	}
	if next.o.apply(d) != applyApplied {
		return nil, false
	}
	return next, true
}

// publishLocal commits d as the local owner's next state of c and serves
// it, as LocalChanged does.
func publishLocal(c *Catalog, d *Delta) (prev uint64, ok bool) {
	c.mu.RLock()
	cur := c.localSt
	c.mu.RUnlock()
	next, ok := nextState(cur, d)
	if !ok {
		return cur.Version(), false
	}
	return c.setLocal(next, nil)
}

// testOwner is a LocalCatalog for test clusters: it commits full deltas
// of the local records and tells the cluster, as node's registry does.
type testOwner struct {
	mu    sync.Mutex // serializes commits, as the registry's commitMu
	state atomic.Pointer[testState]
}

func (o *testOwner) LocalState() LocalState {
	if st := o.state.Load(); st != nil {
		return st
	}
	return nil
}

// publish commits d, the owner's full catalog at a newer version, and
// tells c.
func (o *testOwner) publish(c *Cluster, d Delta) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	d.Owner, d.Full = c.cfg.NodeName, true
	var cur LocalState = emptyLocal{}
	if st := o.state.Load(); st != nil {
		cur = st
	}
	next, ok := nextState(cur, &d)
	if !ok {
		return fmt.Errorf("publish version %d: not above %d", d.Version, cur.Version())
	}
	o.state.Store(next)
	return c.LocalChanged()
}

// ownerOf returns the testOwner that startNode gave c.
func ownerOf(c *Cluster) *testOwner { return c.cfg.Local.(*testOwner) }

func TestLocalChangedServesOnlyNewerStates(t *testing.T) {
	c := newIdleCluster(t, "me")
	o := ownerOf(c)
	if err := o.publish(c, Delta{Version: 10, Records: []Record{live("a", 10)}}); err != nil {
		t.Fatal(err)
	}
	idx := c.Catalog().Index()
	// Told again with nothing new: nothing moves.
	if err := c.LocalChanged(); err != nil {
		t.Fatal(err)
	}
	if c.Catalog().Index() != idx {
		t.Errorf("LocalChanged without a new state moved the index")
	}
	if err := o.publish(c, Delta{Version: 11}); err != nil {
		t.Fatal(err)
	}
	if v := c.Catalog().Version("me"); v != 11 {
		t.Errorf("Version(me) = %d, want 11", v)
	}
	if d, _ := c.Catalog().deltaSince("me", 0); len(d.Records) != 0 {
		t.Errorf("a state without records still serves %v", d.Records)
	}
	c.push.mu.Lock()
	since, ok := c.push.pending["me"]
	c.push.mu.Unlock()
	if !ok || since != 0 {
		t.Errorf("the change is not queued for peers from version 0: %v, %v", since, ok)
	}
}

// TestLocalCatalogIsReadNotCopied: the cluster serves the owner's state
// itself, tombstones and floor included, and the owner alone reaps them.
func TestLocalCatalogIsReadNotCopied(t *testing.T) {
	clock := newFakeClock()
	c := newCatalog("me", clock.Now)
	c.setMember(member("me", StatusAlive))
	v := func() uint64 { clock.Advance(time.Second); return uint64(clock.Now().UnixMicro()) }
	v1 := v()
	st := &testState{o: ownerState{version: v1, floor: v1, records: recs(live("a", v1), tomb("b", v1))}}
	c.setLocal(st, nil)
	clock.Advance(100 * time.Hour)
	if n := c.reapTombstones(time.Hour); n != 0 {
		t.Errorf("the replica reaper reaped %d of the owner's tombstones", n)
	}
	d, ok := c.deltaSince("me", 0)
	if !ok || !d.Full || d.Since != v1 || len(d.Records) != 2 {
		t.Errorf("deltaSince(me, 0) = %+v, want the owner's full state from its floor", d)
	}
	if r, _ := c.localSt.Record("b"); !r.Deleted {
		t.Errorf("the served state is not the owner's")
	}
	if got := catalogIDs(c.Instances("svc-a")); len(got) != 1 || got[0] != "me/a" {
		t.Errorf("Instances(svc-a) = %v", got)
	}
}
