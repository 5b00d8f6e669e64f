package gossip

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

// live returns a live record of service id at version v.
func live(id string, v uint64) Record {
	return Record{ID: id, Version: v, Service: &Service{ID: id, Name: "svc-" + id, Port: int(v % 65536)}}
}

// tomb returns a tombstone of service id at version v.
func tomb(id string, v uint64) Record {
	return Record{ID: id, Version: v, Deleted: true}
}

// recs builds an ownerState's record map.
func recs(rs ...Record) map[string]Record {
	m := make(map[string]Record, len(rs))
	for _, r := range rs {
		m[r.ID] = r
	}
	return m
}

// summary is a comparable view of records: ID → "live@v" or "dead@v".
func summary(m map[string]Record) map[string]string {
	out := make(map[string]string, len(m))
	for id, r := range m {
		state := "live"
		if r.Deleted {
			state = "dead"
		}
		out[id] = fmt.Sprintf("%s@%d", state, r.Version)
	}
	return out
}

func (r applyResult) String() string {
	switch r {
	case applyStale:
		return "stale"
	case applyApplied:
		return "applied"
	case applyGap:
		return "gap"
	}
	return fmt.Sprintf("applyResult(%d)", int(r))
}

func TestOwnerStateApply(t *testing.T) {
	type step struct {
		d    Delta
		want applyResult
	}
	tests := []struct {
		name        string
		start       *ownerState // nil: empty
		steps       []step
		wantVersion uint64
		wantFloor   uint64
		wantRecords map[string]string
	}{
		{
			name:        "first incremental delta onto an empty state",
			steps:       []step{{Delta{Since: 0, Version: 10, Records: []Record{live("a", 5), live("b", 10)}}, applyApplied}},
			wantVersion: 10,
			wantRecords: map[string]string{"a": "live@5", "b": "live@10"},
		},
		{
			name: "duplicate delta is stale",
			steps: []step{
				{Delta{Since: 0, Version: 10, Records: []Record{live("a", 10)}}, applyApplied},
				{Delta{Since: 0, Version: 10, Records: []Record{live("a", 10)}}, applyStale},
			},
			wantVersion: 10,
			wantRecords: map[string]string{"a": "live@10"},
		},
		{
			name: "duplicate full delta is stale",
			steps: []step{
				{Delta{Since: 0, Version: 10, Full: true, Records: []Record{live("a", 10)}}, applyApplied},
				{Delta{Since: 0, Version: 10, Full: true, Records: []Record{live("a", 10)}}, applyStale},
			},
			wantVersion: 10,
			wantRecords: map[string]string{"a": "live@10"},
		},
		{
			name: "newer delta first, then the older one: no regression",
			steps: []step{
				{Delta{Since: 0, Version: 20, Records: []Record{live("a", 20), live("b", 15)}}, applyApplied},
				{Delta{Since: 0, Version: 10, Records: []Record{live("a", 10)}}, applyStale},
				{Delta{Since: 0, Version: 15, Records: []Record{live("a", 10), live("b", 15)}}, applyStale},
			},
			wantVersion: 20,
			wantRecords: map[string]string{"a": "live@20", "b": "live@15"},
		},
		{
			name:  "older full delta after a newer incremental one is stale",
			start: &ownerState{version: 30, records: recs(live("a", 30))},
			steps: []step{
				{Delta{Since: 0, Version: 25, Full: true, Records: []Record{live("a", 25), live("z", 1)}}, applyStale},
			},
			wantVersion: 30,
			wantRecords: map[string]string{"a": "live@30"},
		},
		{
			name:  "tombstone beats an older live record",
			start: &ownerState{version: 10, records: recs(live("a", 10), live("b", 7))},
			steps: []step{
				{Delta{Since: 10, Version: 20, Records: []Record{tomb("a", 20)}}, applyApplied},
				// A late copy of the registration, alone or in a newer delta.
				{Delta{Since: 0, Version: 10, Records: []Record{live("a", 10)}}, applyStale},
				{Delta{Since: 20, Version: 21, Records: []Record{live("a", 10)}}, applyApplied},
			},
			wantVersion: 21,
			wantRecords: map[string]string{"a": "dead@20", "b": "live@7"},
		},
		{
			name:  "newer live record beats an older tombstone (re-registration)",
			start: &ownerState{version: 20, records: recs(tomb("a", 20))},
			steps: []step{
				{Delta{Since: 20, Version: 30, Records: []Record{live("a", 30)}}, applyApplied},
			},
			wantVersion: 30,
			wantRecords: map[string]string{"a": "live@30"},
		},
		{
			name:  "record at the same version does not replace the held one",
			start: &ownerState{version: 20, records: recs(tomb("a", 20))},
			steps: []step{
				{Delta{Since: 15, Version: 25, Records: []Record{live("a", 20)}}, applyApplied},
			},
			wantVersion: 25,
			wantRecords: map[string]string{"a": "dead@20"},
		},
		{
			name:  "delta starting past our version is a gap and changes nothing",
			start: &ownerState{version: 10, floor: 3, records: recs(live("a", 10))},
			steps: []step{
				{Delta{Since: 15, Version: 20, Records: []Record{tomb("a", 20), live("b", 18)}}, applyGap},
			},
			wantVersion: 10,
			wantFloor:   3,
			wantRecords: map[string]string{"a": "live@10"},
		},
		{
			name: "gap on an empty state",
			steps: []step{
				{Delta{Since: 1, Version: 20, Records: []Record{live("b", 18)}}, applyGap},
			},
			wantRecords: map[string]string{},
		},
		{
			name:  "delta starting exactly at our version applies",
			start: &ownerState{version: 10, records: recs(live("a", 10))},
			steps: []step{
				{Delta{Since: 10, Version: 20, Records: []Record{live("b", 20)}}, applyApplied},
			},
			wantVersion: 20,
			wantRecords: map[string]string{"a": "live@10", "b": "live@20"},
		},
		{
			name:  "full delta replaces everything and sets the floor",
			start: &ownerState{version: 12, floor: 1, records: recs(live("a", 10), live("b", 12), tomb("c", 11))},
			steps: []step{
				{Delta{Since: 5, Version: 20, Full: true, Records: []Record{live("a", 10), live("d", 18)}}, applyApplied},
			},
			wantVersion: 20,
			wantFloor:   5,
			wantRecords: map[string]string{"a": "live@10", "d": "live@18"},
		},
		{
			name:  "full delta needs no contiguity",
			start: &ownerState{version: 12, records: recs(live("a", 10))},
			steps: []step{
				{Delta{Since: 50, Version: 60, Full: true, Records: []Record{live("x", 55)}}, applyApplied},
			},
			wantVersion: 60,
			wantFloor:   50,
			wantRecords: map[string]string{"x": "live@55"},
		},
		{
			name:  "empty full delta empties the state",
			start: &ownerState{version: 12, records: recs(live("a", 10), live("b", 12))},
			steps: []step{
				{Delta{Since: 13, Version: 13, Full: true}, applyApplied},
			},
			wantVersion: 13,
			wantFloor:   13,
			wantRecords: map[string]string{},
		},
		{
			name: "records newer than their delta are dropped",
			steps: []step{
				{Delta{Since: 0, Version: 10, Records: []Record{live("a", 10), live("bad", 11)}}, applyApplied},
				{Delta{Since: 0, Version: 20, Full: true, Records: []Record{live("a", 10), live("bad", 21)}}, applyApplied},
			},
			wantVersion: 20,
			wantRecords: map[string]string{"a": "live@10"},
		},
		{
			name: "version zero delta is stale on an empty state",
			steps: []step{
				{Delta{Since: 0, Version: 0, Records: []Record{live("a", 0)}}, applyStale},
			},
			wantRecords: map[string]string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.start
			if o == nil {
				o = newOwnerState()
			}
			for i, s := range tt.steps {
				if got := o.apply(&s.d); got != s.want {
					t.Fatalf("step %d: apply(%+v) = %v, want %v", i, s.d, got, s.want)
				}
			}
			if o.version != tt.wantVersion {
				t.Errorf("version = %d, want %d", o.version, tt.wantVersion)
			}
			if o.floor != tt.wantFloor {
				t.Errorf("floor = %d, want %d", o.floor, tt.wantFloor)
			}
			if got := summary(o.records); !reflect.DeepEqual(got, tt.wantRecords) {
				t.Errorf("records = %v, want %v", got, tt.wantRecords)
			}
		})
	}
}

func TestOwnerStateDeltaSince(t *testing.T) {
	src := func() *ownerState {
		return &ownerState{
			version: 50,
			floor:   10,
			records: recs(live("old", 5), live("a", 20), tomb("b", 30), live("c", 50)),
		}
	}
	tests := []struct {
		name      string
		since     uint64
		wantFull  bool
		wantSince uint64
		wantIDs   []string // in version order
	}{
		{"caught up", 50, false, 50, nil},
		{"ahead of the source", 70, false, 70, nil},
		{"incremental from the middle", 30, false, 30, []string{"c"}},
		{"incremental includes tombstones", 29, false, 29, []string{"b", "c"}},
		{"incremental exactly at the floor", 10, false, 10, []string{"a", "b", "c"}},
		{"below the floor gets everything", 9, true, 10, []string{"old", "a", "b", "c"}},
		{"from zero below the floor", 0, true, 10, []string{"old", "a", "b", "c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := src().deltaSince("n1", tt.since)
			if d.Owner != "n1" || d.Version != 50 {
				t.Errorf("owner, version = %q, %d; want n1, 50", d.Owner, d.Version)
			}
			if d.Full != tt.wantFull || d.Since != tt.wantSince {
				t.Errorf("full, since = %v, %d; want %v, %d", d.Full, d.Since, tt.wantFull, tt.wantSince)
			}
			var ids []string
			for _, r := range d.Records {
				ids = append(ids, r.ID)
			}
			if !reflect.DeepEqual(ids, tt.wantIDs) {
				t.Errorf("records = %v, want %v", ids, tt.wantIDs)
			}
		})
	}

	t.Run("floor zero never sends a full delta", func(t *testing.T) {
		o := &ownerState{version: 5, records: recs(live("a", 3), tomb("b", 5))}
		d := o.deltaSince("n1", 0)
		if d.Full || d.Since != 0 || len(d.Records) != 2 {
			t.Errorf("deltaSince(0) = %+v, want incremental with both records", d)
		}
	})
}

// TestOwnerStateDeltaSinceConverges checks the contract between deltaSince
// and apply: a replica holding any earlier version of an owner's history, fed
// deltaSince(its version) from any holder that is at least as new, ends up with
// exactly the source's records.
func TestOwnerStateDeltaSinceConverges(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 50 {
		// An owner's history, snapshotted after every change.
		owner := newOwnerState()
		var snaps []*ownerState
		ids := []string{"a", "b", "c", "d", "e"}
		v := uint64(rng.IntN(5))
		for range 30 {
			v += 1 + uint64(rng.IntN(3))
			id := ids[rng.IntN(len(ids))]
			r := live(id, v)
			if rng.IntN(3) == 0 {
				r = tomb(id, v)
			}
			d := Delta{Since: owner.version, Version: v, Records: []Record{r}}
			if owner.apply(&d) != applyApplied {
				t.Fatalf("round %d: owner rejected its own change", round)
			}
			if rng.IntN(8) == 0 {
				// Reap every tombstone so far: the floor rises past them.
				owner.reapTombstones(versionTime(v).Add(time.Hour), 0)
			}
			snaps = append(snaps, clone(owner))
		}
		for i, from := range snaps {
			for _, to := range snaps[i:] {
				replica := clone(from)
				d := to.deltaSince("n1", replica.version)
				if res := replica.apply(&d); res == applyGap {
					t.Fatalf("round %d: gap applying %+v onto version %d", round, d, from.version)
				}
				if replica.version != to.version {
					t.Fatalf("round %d: replica at %d, source at %d", round, replica.version, to.version)
				}
				if got, want := liveIDs(replica), liveIDs(to); !reflect.DeepEqual(got, want) {
					t.Fatalf("round %d: replica from %d to %d holds %v, source %v (delta %+v)",
						round, from.version, to.version, got, want, d)
				}
			}
		}
	}
}

func clone(o *ownerState) *ownerState {
	return &ownerState{version: o.version, floor: o.floor, records: maps.Clone(o.records)}
}

func liveIDs(o *ownerState) map[string]uint64 {
	out := make(map[string]uint64)
	for _, s := range o.services() {
		out[s.ID] = o.records[s.ID].Version
	}
	return out
}

func TestOwnerStateReapTombstones(t *testing.T) {
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) uint64 { return uint64(base.Add(d).UnixMicro()) }
	o := &ownerState{
		version: at(90 * time.Minute),
		records: recs(
			tomb("old-tomb", at(0)),
			tomb("older-tomb", at(-time.Minute)),
			live("old-live", at(0)),
			tomb("young-tomb", at(90*time.Minute)),
		),
	}
	now := base.Add(2 * time.Hour)
	if n := o.reapTombstones(now, time.Hour); n != 2 {
		t.Fatalf("reaped %d tombstones, want 2", n)
	}
	want := map[string]string{
		"old-live":   fmt.Sprintf("live@%d", at(0)),
		"young-tomb": fmt.Sprintf("dead@%d", at(90*time.Minute)),
	}
	if got := summary(o.records); !reflect.DeepEqual(got, want) {
		t.Errorf("records = %v, want %v", got, want)
	}
	if o.floor != at(0) {
		t.Errorf("floor = %d, want the newest reaped tombstone's version %d", o.floor, at(0))
	}
	if o.version != at(90*time.Minute) {
		t.Errorf("version changed to %d", o.version)
	}

	// Anyone who might have missed the reaped tombstones now gets everything.
	if d := o.deltaSince("n1", at(-2*time.Minute)); !d.Full || d.Since != at(0) || len(d.Records) != 2 {
		t.Errorf("deltaSince below the new floor = %+v, want a full delta of 2 records from the floor", d)
	}
	if d := o.deltaSince("n1", at(0)); d.Full || len(d.Records) != 1 {
		t.Errorf("deltaSince at the new floor = %+v, want the young tombstone only", d)
	}

	// Nothing left to reap; the floor never goes down.
	o.floor = at(80 * time.Minute)
	if n := o.reapTombstones(now, time.Hour); n != 0 {
		t.Errorf("second reap removed %d", n)
	}
	if n := o.reapTombstones(now.Add(time.Hour), time.Hour); n != 1 {
		t.Errorf("reap after the TTL of the young tombstone removed %d, want 1", n)
	}
	if o.floor != at(90*time.Minute) {
		t.Errorf("floor = %d, want %d", o.floor, at(90*time.Minute))
	}
	o.records["ancient"] = tomb("ancient", at(-time.Hour))
	o.reapTombstones(now.Add(time.Hour), time.Hour)
	if o.floor != at(90*time.Minute) {
		t.Errorf("reaping an old tombstone lowered the floor to %d", o.floor)
	}
}

func TestOwnerStateServices(t *testing.T) {
	o := &ownerState{version: 9, records: recs(live("c", 3), tomb("b", 4), live("a", 9), Record{ID: "nil", Version: 2})}
	var ids []string
	for _, s := range o.services() {
		ids = append(ids, s.ID)
	}
	if want := []string{"a", "c"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("services = %v, want %v", ids, want)
	}
}
