package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/shoal-mesh/shoal/gossip"
)

// entriesFile holds the config entries inside the data dir.
const entriesFile = "config-entries.json"

// configStore writes config entries through gossip and keeps them on disk.
// A write made here is saved before it is answered, so an answered write
// survives a crash; entries learned from peers are saved soon after, and a
// crash before that loses only what peers still hold.
type configStore struct {
	cluster *gossip.Cluster
	dir     string // "": not persisted (no data dir)
	log     *slog.Logger

	mu    sync.Mutex // serializes saves
	saved uint64     // the entries index last saved
}

// entriesSnapshot is the file's content.
type entriesSnapshot struct {
	// SavedAt tells how stale the file is at the next start.
	SavedAt time.Time
	Entries []gossip.Entry
}

func (s *configStore) path() string { return filepath.Join(s.dir, entriesFile) }

// load restores the entries saved in the data dir into the cluster, before
// it starts. A file older than the tombstone TTL is dropped: tombstones of
// entries deleted meanwhile may be gone from every peer, so its entries could
// come back from the dead; the agent takes the cluster's entries instead.
func (s *configStore) load(tombstoneTTL time.Duration, now time.Time) error {
	if s.dir == "" {
		return nil
	}
	b, err := os.ReadFile(s.path())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var snap entriesSnapshot
	if err := json.Unmarshal(b, &snap); err != nil {
		return fmt.Errorf("%s is corrupt: %w", s.path(), err)
	}
	if age := now.Sub(snap.SavedAt); age > tombstoneTTL {
		s.log.Warn("config entries saved too long ago to be trusted: taking the cluster's instead",
			"file", s.path(), "saved", snap.SavedAt, "tombstone_ttl", tombstoneTTL, "entries", len(snap.Entries))
		return nil
	}
	return s.cluster.LoadEntries(snap.Entries)
}

// errEntryTooLarge refuses an entry whose stored form is over gossip's bound.
type errEntryTooLarge struct{ size int }

func (e *errEntryTooLarge) Error() string {
	return fmt.Sprintf("%d bytes, over the limit of %d", e.size, gossip.MaxEntryBody)
}

// write stores a normalized entry as this agent (see put).
func (s *configStore) write(e configEntry, cas *uint64) (bool, error) {
	body, err := json.Marshal(e)
	if err != nil {
		return false, err
	}
	if len(body) > gossip.MaxEntryBody {
		return false, &errEntryTooLarge{len(body)}
	}
	return s.put(e.header().Kind, e.header().Name, body, cas)
}

// delete deletes an entry as this agent (see put).
func (s *configStore) delete(kind, name string, cas *uint64) (bool, error) {
	return s.put(kind, name, nil, cas)
}

// put writes (body nil: deletes) an entry and saves the store before
// returning; ok is false when cas did not match.
func (s *configStore) put(kind, name string, body json.RawMessage, cas *uint64) (bool, error) {
	var ok bool
	var err error
	if body == nil {
		ok, err = s.cluster.DeleteEntry(kind, name, cas)
	} else {
		_, ok, err = s.cluster.PutEntry(kind, name, body, cas)
	}
	if err != nil || !ok {
		return ok, err
	}
	return true, s.save()
}

// save writes every entry, tombstones included, if anything changed since
// the last save.
func (s *configStore) save() error {
	if s.dir == "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	index, _ := s.cluster.EntriesState()
	if index == s.saved {
		return nil
	}
	b, err := json.Marshal(entriesSnapshot{SavedAt: time.Now().UTC(), Entries: s.cluster.EntriesSnapshot()})
	if err != nil {
		return err
	}
	if err := writeFileAtomic(s.path(), b); err != nil {
		return fmt.Errorf("save config entries: %w", err)
	}
	s.saved = index
	return nil
}

// watch runs until stop: at every change of the entries it calls each of
// changed, then saves what peers sent.
func (s *configStore) watch(stop <-chan struct{}, changed ...func()) {
	for {
		_, ch := s.cluster.EntriesState()
		select {
		case <-stop:
			if err := s.save(); err != nil {
				s.log.Error("config entries not saved", "err", err)
			}
			return
		case <-ch:
		}
		for _, f := range changed {
			f()
		}
		if err := s.save(); err != nil {
			s.log.Error("config entries not saved", "err", err)
		}
	}
}
