package gossip

import (
	"errors"
	"fmt"
	"unicode"
)

// Bounds on what a peer may send over the catalog path. They are far above
// what an agent publishes (node's registration limits are much tighter) and
// only keep a buggy or hostile peer from making us hold unbounded state:
// maxFrame bounds the bytes of one message, these bound what the bytes
// decode to.
const (
	maxDeltas        = 100_000   // deltas in one message
	maxRecords       = 100_000   // records in one delta
	maxPeerName      = 512       // bytes of a node name, record/service/check ID or service name
	maxPeerText      = 64 << 10  // bytes of a tag, meta value, check output or notes
	maxPeerListItems = 1024      // tags, meta pairs or checks of one service
	maxPeerWeight    = 1 << 16   // a service weight
	maxPeerPort      = 1<<16 - 1 // a service port

	// maxItems bounds the array elements and object members of one message
	// before it is decoded: what json.Unmarshal allocates grows with them,
	// up to ~100 bytes each (a Check from "{}," is 96), so a frame of tiny
	// elements would otherwise cost ~30 times its size. A service record
	// has about 20 items: this allows ~100k records per message.
	maxItems = 1 << 21
)

// countItems counts the opening brackets and commas outside strings of a
// JSON text: an upper bound on its array elements and object members. It
// does not allocate.
func countItems(b []byte) int {
	n, inString, escaped := 0, false, false
	for _, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{', c == '[', c == ',':
			n++
		}
	}
	return n
}

// validateMessage checks a decoded message from a peer against the bounds
// above, so that nothing malformed reaches the replica. It reports the first
// problem.
func validateMessage(m *message) error {
	if err := checkPeerName("sender", m.From, true); err != nil {
		return err
	}
	if len(m.Deltas) > maxDeltas {
		return fmt.Errorf("%d deltas exceed %d", len(m.Deltas), maxDeltas)
	}
	if len(m.Wants) > maxWants {
		return fmt.Errorf("%d wants exceed %d", len(m.Wants), maxWants)
	}
	for i := range m.Wants {
		if err := checkPeerName("wanted owner", m.Wants[i].Owner, true); err != nil {
			return err
		}
	}
	if n := max(len(m.Entries), len(m.EntryWants), len(m.EntryStamps)); n > MaxEntries {
		return fmt.Errorf("%d config entries exceed %d", n, MaxEntries)
	}
	for i := range m.Entries {
		if err := validateEntry(&m.Entries[i]); err != nil {
			return err
		}
	}
	for i := range m.Deltas {
		d := &m.Deltas[i]
		if d.Owner == "" {
			return errors.New("delta without owner")
		}
		if err := checkPeerName("owner", d.Owner, false); err != nil {
			return err
		}
		if len(d.Records) > maxRecords {
			return fmt.Errorf("delta of %q: %d records exceed %d", d.Owner, len(d.Records), maxRecords)
		}
		for j := range d.Records {
			if err := validateRecord(&d.Records[j]); err != nil {
				return fmt.Errorf("delta of %q: %w", d.Owner, err)
			}
		}
	}
	return nil
}

// validateRecord checks one record from a peer. A tombstone needs only its
// ID; a live record needs a service that carries the same ID and a name.
func validateRecord(r *Record) error {
	if r.ID == "" || (!r.Deleted && r.Service == nil) {
		return fmt.Errorf("malformed record %q", r.ID)
	}
	if err := checkPeerName("record ID", r.ID, false); err != nil {
		return fmt.Errorf("malformed record: %w", err)
	}
	if r.Deleted {
		// A tombstone's service, if any, is never read: drop it rather than
		// validate it.
		r.Service = nil
		return nil
	}
	if err := validateService(r.Service); err != nil {
		return fmt.Errorf("malformed record %q: %w", r.ID, err)
	}
	if r.Service.ID != r.ID {
		return fmt.Errorf("malformed record %q: carries service ID %q", r.ID, r.Service.ID)
	}
	return nil
}

// validateService checks a service from a peer.
func validateService(s *Service) error {
	if s.Name == "" {
		return errors.New("service without name")
	}
	for what, v := range map[string]string{"service ID": s.ID, "service name": s.Name} {
		if err := checkPeerName(what, v, false); err != nil {
			return err
		}
	}
	if err := checkPeerText("address", s.Address); err != nil {
		return err
	}
	if s.Port < 0 || s.Port > maxPeerPort {
		return fmt.Errorf("port %d out of range", s.Port)
	}
	if w := s.Weights; w.Passing < 0 || w.Passing > maxPeerWeight || w.Warning < 0 || w.Warning > maxPeerWeight {
		return fmt.Errorf("weights %d/%d out of range", w.Passing, w.Warning)
	}
	if len(s.Tags) > maxPeerListItems || len(s.Meta) > maxPeerListItems || len(s.Checks) > maxPeerListItems {
		return fmt.Errorf("%d tags, %d meta pairs, %d checks: at most %d each", len(s.Tags), len(s.Meta), len(s.Checks), maxPeerListItems)
	}
	for _, t := range s.Tags {
		if err := checkPeerText("tag", t); err != nil {
			return err
		}
	}
	for k, v := range s.Meta {
		if err := checkPeerName("meta key", k, false); err != nil {
			return err
		}
		if err := checkPeerText("meta value", v); err != nil {
			return err
		}
	}
	for i := range s.Checks {
		c := &s.Checks[i]
		if err := checkPeerName("check ID", c.ID, false); err != nil {
			return err
		}
		for what, v := range map[string]string{"check name": c.Name, "check status": c.Status,
			"check output": c.Output, "check notes": c.Notes, "check type": c.Type} {
			if err := checkPeerText(what, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkPeerName checks an identifier from a peer: bounded, no control
// characters, non-empty unless emptyOK.
func checkPeerName(what, s string, emptyOK bool) error {
	if s == "" && !emptyOK {
		return fmt.Errorf("empty %s", what)
	}
	if len(s) > maxPeerName {
		return fmt.Errorf("%s of %d bytes exceeds %d", what, len(s), maxPeerName)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fmt.Errorf("%s %q contains the control character %U", what, s, r)
		}
	}
	return nil
}

// checkPeerText checks free text from a peer: only its size is bounded.
func checkPeerText(what, s string) error {
	if len(s) > maxPeerText {
		return fmt.Errorf("%s of %d bytes exceeds %d", what, len(s), maxPeerText)
	}
	return nil
}
