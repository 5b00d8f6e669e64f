package gossip

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// entryOn returns node p's live entry kind/name body, or "" when it has none.
func entryOn(p *Cluster, kind, name string) string {
	e, ok := p.Entry(kind, name)
	if !ok {
		return ""
	}
	return string(e.Body)
}

// everywhere reports whether every node holds body for kind/name ("" for
// none).
func everywhere(nodes []*pNode, kind, name, body string) bool {
	for _, p := range nodes {
		if entryOn(p.Cluster, kind, name) != body {
			return false
		}
	}
	return true
}

func putEntry(t *testing.T, p *Cluster, kind, name, body string) Entry {
	t.Helper()
	e, ok, err := p.PutEntry(kind, name, json.RawMessage(body), nil)
	if err != nil || !ok {
		t.Fatalf("%s: put %s/%s: ok=%v err=%v", p.cfg.NodeName, kind, name, ok, err)
	}
	return e
}

// TestEntriesSpreadAndDelete: an entry written on one agent reaches all five
// by the eager push, an update replaces it and a delete removes it
// everywhere.
func TestEntriesSpreadAndDelete(t *testing.T) {
	n := NewFaultNetwork()
	nodes := pStartCluster(t, n, 5)
	putEntry(t, nodes[2].Cluster, "service-defaults", "web", `{"Protocol":"http"}`)
	took := testutil.Wait(t, 5*time.Second, "the entry on every agent", func() bool {
		return everywhere(nodes, "service-defaults", "web", `{"Protocol":"http"}`)
	})
	t.Logf("entry on 5 agents after %v", took)
	putEntry(t, nodes[4].Cluster, "service-defaults", "web", `{"Protocol":"tcp"}`)
	testutil.Wait(t, 5*time.Second, "the update on every agent", func() bool {
		return everywhere(nodes, "service-defaults", "web", `{"Protocol":"tcp"}`)
	})
	e, _ := nodes[0].Entry("service-defaults", "web")
	if e.Writer != "p4" || e.Created >= e.Stamp {
		t.Errorf("after the update: writer %q, created %d, stamp %d; want p4 and the first write's creation", e.Writer, e.Created, e.Stamp)
	}
	if ok, err := nodes[1].DeleteEntry("service-defaults", "web", nil); !ok || err != nil {
		t.Fatalf("delete: %v %v", ok, err)
	}
	testutil.Wait(t, 5*time.Second, "the delete on every agent", func() bool {
		return everywhere(nodes, "service-defaults", "web", "")
	})
	for _, p := range nodes {
		if got := len(p.Entries("")); got != 0 {
			t.Errorf("%s lists %d entries after the delete", p.name, got)
		}
	}
}

// TestEntriesCAS: a write with cas succeeds only against the current
// ModifyIndex, cas=0 only when the entry does not exist.
func TestEntriesCAS(t *testing.T) {
	c := startCluster(t, 1)[0]
	zero := uint64(0)
	e, ok, err := c.PutEntry("service-defaults", "db", json.RawMessage(`{}`), &zero)
	if !ok || err != nil {
		t.Fatalf("create with cas=0: %v %v", ok, err)
	}
	if _, ok, _ := c.PutEntry("service-defaults", "db", json.RawMessage(`{"a":1}`), &zero); ok {
		t.Error("cas=0 overwrote an existing entry")
	}
	stale := e.Stamp - 1
	if _, ok, _ := c.PutEntry("service-defaults", "db", json.RawMessage(`{"a":1}`), &stale); ok {
		t.Error("a stale cas index was accepted")
	}
	if ok, _ := c.DeleteEntry("service-defaults", "db", &stale); ok {
		t.Error("a delete with a stale cas index was accepted")
	}
	if got := entryOn(c, "service-defaults", "db"); got != `{}` {
		t.Errorf("refused writes changed the entry to %q", got)
	}
	cur := e.Stamp
	if ok, _ := c.DeleteEntry("service-defaults", "db", &cur); !ok {
		t.Error("a delete with the current index was refused")
	}
}

// TestEntriesConcurrentWritesConverge: during a partition both sides write
// the same entry at once; after the heal every agent holds the same winner,
// the greater (stamp, writer). An entry deleted on one side stays deleted
// although the other side still held it.
func TestEntriesConcurrentWritesConverge(t *testing.T) {
	n := NewFaultNetwork()
	nodes := pStartCluster(t, n, 5)
	putEntry(t, nodes[0].Cluster, "service-intentions", "db", `{"v":"before"}`)
	putEntry(t, nodes[0].Cluster, "service-defaults", "gone", `{"v":"doomed"}`)
	testutil.Wait(t, 5*time.Second, "both entries everywhere", func() bool {
		return everywhere(nodes, "service-intentions", "db", `{"v":"before"}`) &&
			everywhere(nodes, "service-defaults", "gone", `{"v":"doomed"}`)
	})
	left, right := nodes[:2], nodes[2:]
	n.Partition(pNames(left), pNames(right))
	a := putEntry(t, left[0].Cluster, "service-intentions", "db", `{"v":"left"}`)
	b := putEntry(t, right[0].Cluster, "service-intentions", "db", `{"v":"right"}`)
	if ok, _ := right[1].DeleteEntry("service-defaults", "gone", nil); !ok {
		t.Fatal("delete refused")
	}
	testutil.Wait(t, 5*time.Second, "each side to hold its own write", func() bool {
		return everywhere(left, "service-intentions", "db", `{"v":"left"}`) &&
			everywhere(right, "service-intentions", "db", `{"v":"right"}`) &&
			everywhere(right, "service-defaults", "gone", "")
	})
	want := `{"v":"left"}`
	if b.beats(&a) {
		want = `{"v":"right"}`
	}
	n.Heal()
	took := testutil.Wait(t, 30*time.Second, "one winner everywhere after the heal", func() bool {
		return everywhere(nodes, "service-intentions", "db", want) && everywhere(nodes, "service-defaults", "gone", "")
	})
	t.Logf("after the heal, %s on every agent and the deleted entry gone in %v", want, took)
	testutil.Holds(t, 2*time.Second, "the winner to stay and the deleted entry not to come back", func() bool {
		return everywhere(nodes, "service-intentions", "db", want) && everywhere(nodes, "service-defaults", "gone", "")
	})
}

// TestEntriesAntiEntropyRepairsAMissedPush: an agent cut off while entries
// are written (pushes to it fail and are not retried) gets them from the
// digest exchange once it is reachable again.
func TestEntriesAntiEntropyRepairsAMissedPush(t *testing.T) {
	n := NewFaultNetwork()
	nodes := pStartCluster(t, n, 3)
	n.Partition(pNames(nodes[:2]), pNames(nodes[2:]))
	for i := range 20 {
		putEntry(t, nodes[0].Cluster, "service-defaults", fmt.Sprintf("s%02d", i), fmt.Sprintf(`{"i":%d}`, i))
	}
	testutil.Wait(t, 5*time.Second, "the entries on p1", func() bool { return len(nodes[1].Entries("")) == 20 })
	if got := len(nodes[2].Entries("")); got == 20 {
		t.Fatalf("p2 got the entries although pushes to it were dropped")
	}
	n.Heal()
	took := testutil.Wait(t, 10*time.Second, "the entries on p2", func() bool { return len(nodes[2].Entries("")) == 20 })
	t.Logf("p2 repaired by the exchange in %v (sync interval %v); %d exchanges found a difference",
		took, nodes[2].cfg.SyncInterval, nodes[2].Stats().EntrySyncs+nodes[0].Stats().EntrySyncs+nodes[1].Stats().EntrySyncs)
}

// TestEntriesLoadKeepsTheNewer: persisted entries load under the rules of
// replication: the greater stamp wins, tombstones included.
func TestEntriesLoadKeepsTheNewer(t *testing.T) {
	c := startCluster(t, 1)[0]
	old := Entry{Kind: "k", Name: "n", Body: json.RawMessage(`1`), Stamp: 10, Created: 10, Writer: "a"}
	tomb := Entry{Kind: "k", Name: "n", Deleted: true, Stamp: 20, Created: 10, Writer: "b"}
	if err := c.LoadEntries([]Entry{tomb, old}); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Entry("k", "n"); ok {
		t.Error("an older entry loaded over its tombstone")
	}
	bad := Entry{Kind: "k", Name: "m", Deleted: true, Body: json.RawMessage(`1`), Stamp: 5, Writer: "a"}
	if err := c.LoadEntries([]Entry{bad}); err == nil {
		t.Error("a tombstone with a body loaded")
	}
}

// TestEntriesRefusedWhenUnsigned: with an Attestor, an entry without a
// valid signature from a peer is refused and counted, and nothing changes.
func TestEntriesRefusedWhenUnsigned(t *testing.T) {
	cs, dir := startSignedCluster(t, 2)
	c := cs[0]
	forged := []Entry{
		{Kind: "k", Name: "unsigned", Body: json.RawMessage(`1`), Stamp: 10, Created: 10, Writer: "x"},
		{Kind: "k", Name: "badsig", Body: json.RawMessage(`1`), Stamp: 10, Created: 10, Writer: "x", Signer: "x", Sig: []byte("no")},
	}
	if changed := c.admitEntries(forged, "peer"); len(changed) != 0 {
		t.Fatalf("forged entries applied: %v", changed)
	}
	if got := c.Entries(""); len(got) != 0 {
		t.Errorf("entries after refusals: %v", got)
	}
	r := c.Stats().EntriesRefused
	if r[RefusedUnsigned] != 1 || r[RefusedSignature] != 1 {
		t.Errorf("refusals %v, want one unsigned and one bad signature", r)
	}
	// A signed one from the same path is taken.
	e := Entry{Kind: "k", Name: "good", Body: json.RawMessage(`1`), Stamp: 10, Created: 10, Writer: "x"}
	e.Signer = "x"
	e.Sig, e.Cert, _ = (&keyAttestor{self: "x", dir: dir}).Sign(entryMessage(&e))
	if changed := c.admitEntries([]Entry{e}, "peer"); len(changed) != 1 {
		t.Errorf("a signed entry was not applied")
	}
	// What an agent writes is signed, and its peer takes it.
	putEntry(t, cs[1], "k", "written", `2`)
	testutil.Wait(t, 5*time.Second, "the signed entry on the other agent", func() bool { return entryOn(c, "k", "written") == `2` })
}

// TestEntriesResignedAfterTheSignerLeavesTheRoots: once an entry's signer
// no longer verifies (its key is replaced, as a removed root does to its
// certificates), ResignEntries signs it again as the local node, stamp and
// body unchanged, and a newcomer that checks signatures takes it.
func TestEntriesResignedAfterTheSignerLeavesTheRoots(t *testing.T) {
	cs, dir := startSignedCluster(t, 2)
	written := putEntry(t, cs[0], "k", "n", `1`)
	testutil.Wait(t, 5*time.Second, "the entry on node1", func() bool { return entryOn(cs[1], "k", "n") == `1` })
	dir.mu.Lock()
	delete(dir.keys, "node0") // node0's signatures no longer verify
	dir.mu.Unlock()
	e, _ := cs[1].Entry("k", "n")
	if cs[1].verifyEntry(&e) == nil {
		t.Fatal("the old signature still verifies")
	}
	n, err := cs[1].ResignEntries()
	if err != nil || n != 1 {
		t.Fatalf("ResignEntries: %d, %v; want 1", n, err)
	}
	e, _ = cs[1].Entry("k", "n")
	if err := cs[1].verifyEntry(&e); err != nil || e.Signer != "node1" || e.Stamp != written.Stamp || e.Writer != "node0" {
		t.Errorf("after ResignEntries: signer %q, stamp %d (was %d), writer %q, verify %v", e.Signer, e.Stamp, written.Stamp, e.Writer, err)
	}
	fresh := startClusterWith(t, 1, func(_ int, cfg *Config) { cfg.Attestor = &keyAttestor{self: "late", dir: dir} })[0]
	if changed := fresh.admitEntries([]Entry{e}, "node1"); len(changed) != 1 {
		t.Error("a newcomer refused the entry signed again")
	}
	if n, _ := cs[1].ResignEntries(); n != 0 {
		t.Errorf("a second ResignEntries signed %d entries again, want 0", n)
	}
}
