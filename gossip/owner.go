package gossip

import (
	"sort"
	"time"
)

// ownerState is one owner's catalog as held by any agent: the owner itself
// or a replica. It is not safe for concurrent use; Catalog guards it.
type ownerState struct {
	// version is the owner's catalog version this state reflects.
	version uint64
	// floor is the oldest version v for which deltaSince(v) is complete:
	// tombstones older than floor were reaped or never seen.
	floor uint64
	// records holds live services and tombstones by service ID.
	records map[string]Record
	// att is the owner's signature of this state, when catalogs are signed.
	att *Attestation
}

func newOwnerState() *ownerState {
	return &ownerState{records: make(map[string]Record)}
}

// applyResult says what applying a delta did.
type applyResult int

const (
	applyStale   applyResult = iota // nothing new: duplicate or older
	applyApplied                    // the state moved forward
	applyGap                        // the delta starts past our version: pull first
	applyRefused                    // the records do not lead to the state the owner signed
)

// apply merges d into the state. Records only ever replace older records, and
// the state's version only grows, so duplicates and reordering are harmless.
func (o *ownerState) apply(d *Delta) applyResult {
	if d.Version <= o.version {
		return applyStale
	}
	if d.Full {
		o.records = make(map[string]Record, len(d.Records))
		for _, r := range d.Records {
			if r.Version <= d.Version {
				o.records[r.ID] = r
			}
		}
		o.version, o.floor, o.att = d.Version, d.Since, d.Att
		return applyApplied
	}
	if d.Since > o.version {
		return applyGap
	}
	for _, r := range d.Records {
		if r.Version > d.Version {
			continue // malformed: a record newer than its delta
		}
		if cur, ok := o.records[r.ID]; ok && cur.Version >= r.Version {
			continue
		}
		o.records[r.ID] = r
	}
	o.version, o.att = d.Version, d.Att
	return applyApplied
}

// deltaSince returns what a holder of version since needs to catch up: the
// records changed after since, or the full state when since is older than
// the floor.
func (o *ownerState) deltaSince(owner string, since uint64) Delta {
	d := Delta{Owner: owner, Since: since, Version: o.version, Att: o.att}
	if since >= o.version {
		return d
	}
	full := since < o.floor
	if full {
		d.Full, d.Since = true, o.floor
	}
	for _, r := range o.records {
		if full || r.Version > since {
			d.Records = append(d.Records, r)
		}
	}
	sortRecords(d.Records)
	return d
}

// sortRecords orders records by version, oldest first.
func sortRecords(rs []Record) {
	sort.Slice(rs, func(i, j int) bool { return rs[i].Version < rs[j].Version })
}

// reapTombstones drops tombstones older than ttl and raises the floor past
// them, so that anyone who could have missed them gets a full state instead.
func (o *ownerState) reapTombstones(now time.Time, ttl time.Duration) int {
	n := 0
	for id, r := range o.records {
		if r.Deleted && now.Sub(versionTime(r.Version)) > ttl {
			delete(o.records, id)
			if r.Version > o.floor {
				o.floor = r.Version
			}
			n++
		}
	}
	return n
}

// services returns the live services, ordered by ID.
func (o *ownerState) services() []*Service {
	out := make([]*Service, 0, len(o.records))
	for _, r := range o.records {
		if !r.Deleted && r.Service != nil {
			out = append(out, r.Service)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
