package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// catalogFile holds the local registry inside the data dir.
const catalogFile = "catalog.json"

// store persists the local registry in the data dir. Every save is atomic:
// the new state is written to a temporary file, fsynced, renamed over the
// old one and the directory fsynced, so a crash leaves either the old or the
// new state, never a torn one.
//
// A registration is answered only once its save is done, so a slow disk
// is a slow API: saves are counted and timed for /metrics, and one that
// takes longer than slowSave is logged.
type store struct {
	dir string
	log *slog.Logger

	saves     atomic.Uint64
	saveNanos atomic.Uint64
}

// slowSave is how long a save may take before it is logged.
const slowSave = time.Second

func (s *store) path() string { return filepath.Join(s.dir, catalogFile) }

func (s *store) save(st *registryState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	start := time.Now()
	err = writeFileAtomic(s.path(), b)
	took := time.Since(start)
	s.saves.Add(1)
	s.saveNanos.Add(uint64(took))
	if took >= slowSave && s.log != nil {
		s.log.Warn("slow disk: saving the local catalog took long, and API writes wait for it",
			"took", took.Round(time.Millisecond), "path", s.path(), "bytes", len(b))
	}
	return err
}

// load returns the persisted state, or nil when there is none yet.
func (s *store) load() (*registryState, error) {
	b, err := os.ReadFile(s.path())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st registryState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s is corrupt: %w", s.path(), err)
	}
	if st.Services == nil {
		st.Services = map[string]*localService{}
	}
	if st.NodeChecks == nil {
		st.NodeChecks = map[string]*checkState{}
	}
	if st.Tombstones == nil {
		st.Tombstones = map[string]uint64{}
	}
	return &st, nil
}

// writeFileAtomic replaces path with data, durably.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
