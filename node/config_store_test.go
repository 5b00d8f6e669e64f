package node

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestConfigEntriesPersisted: an agent alone, restarted on its data dir,
// answers the entries it had with the same indexes and keeps its
// tombstones; a saved file older than the tombstone TTL is not trusted
// (deletes made meanwhile may be forgotten everywhere) and loads nothing.
func TestConfigEntriesPersisted(t *testing.T) {
	dir := t.TempDir()
	a := startAgent(t, "n0", func(c *Config) { c.DataDir = dir })
	putDefaults(t, a, "web", "1")
	putDefaults(t, a, "gone", "1")
	if code, body := do(t, a, "DELETE", "/v1/config/service-defaults/gone", nil); code != 200 {
		t.Fatalf("delete: %d %s", code, body)
	}
	seq, modify, _ := configMeta(t, a, kindServiceDefaults, "web")
	a.Shutdown()

	b := startAgent(t, "n0", func(c *Config) { c.DataDir = dir })
	if got, m, ok := configMeta(t, b, kindServiceDefaults, "web"); !ok || got != seq || m != modify {
		t.Errorf("after the restart: web seq %q ModifyIndex %d (%v), want %q %d", got, m, ok, seq, modify)
	}
	if _, _, ok := configMeta(t, b, kindServiceDefaults, "gone"); ok {
		t.Error("the deleted entry came back from the data dir")
	}
	if _, ok := tombstone(b, "gone"); !ok {
		t.Error("the tombstone was not kept across the restart")
	}
	b.Shutdown()

	// Age the file past the tombstone TTL.
	path := filepath.Join(dir, entriesFile)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var snap entriesSnapshot
	if err := json.Unmarshal(raw, &snap); err != nil {
		t.Fatal(err)
	}
	snap.SavedAt = time.Now().Add(-b.cfg.Gossip.EntryTombstoneTTL - time.Hour)
	raw, _ = json.Marshal(snap)
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	c := startAgent(t, "n0", func(c *Config) { c.DataDir = dir })
	if n := len(c.Cluster().EntriesSnapshot()); n != 0 {
		t.Errorf("a file saved longer ago than the tombstone TTL loaded %d entries", n)
	}
}
