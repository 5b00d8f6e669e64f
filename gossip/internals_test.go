package gossip

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// newIdleCluster returns a cluster that is configured but not started: its
// catalog, pusher and puller work, nothing listens.
func newIdleCluster(t *testing.T, name string) *Cluster {
	t.Helper()
	cfg := TestConfig(name)
	cfg.Local = &testOwner{}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Shutdown() })
	return c
}

// TestPublishNeverLowersTheFloor: the owner reaps its own tombstones and
// raises its floor; a peer that was behind the reaped tombstone must get a
// full delta, or it keeps the service forever.
func TestPublishNeverLowersTheFloor(t *testing.T) {
	clock := newFakeClock()
	c := newCatalog("me", clock.Now)
	v := func() uint64 { clock.Advance(time.Second); return uint64(clock.Now().UnixMicro()) }

	v1 := v()
	publishLocal(c, &Delta{Owner: "me", Version: v1, Full: true, Records: []Record{live("web-1", v1)}})
	peer, _ := c.deltaSince("me", 0)
	replica := newOwnerState()
	replica.apply(&peer) // a peer holds web-1 at v1, then is cut off

	v2 := v()
	publishLocal(c, &Delta{Owner: "me", Version: v2, Full: true, Records: []Record{tomb("web-1", v2)}})
	clock.Advance(2 * time.Hour)
	// The owner reaps its tombstone (raising its floor past it) and
	// registers web-2.
	v3 := v()
	publishLocal(c, &Delta{Owner: "me", Version: v3, Since: v2, Full: true, Records: []Record{live("web-2", v3)}})

	d, _ := c.deltaSince("me", v1)
	if replica.apply(&d) != applyApplied {
		t.Fatalf("catch-up delta %+v not applied", d)
	}
	if got := liveIDs(replica); len(got) != 1 || got["web-2"] == 0 {
		t.Errorf("peer that missed the reaped tombstone holds %v, want web-2 only (catch-up delta %+v)", got, d)
	}
}

func TestHandle(t *testing.T) {
	c := newIdleCluster(t, "me")
	publishLocal(c.Catalog(), &Delta{Owner: "me", Version: 5, Full: true, Records: []Record{live("a", 5)}})

	push := &message{Type: msgPush, From: "b", Deltas: []Delta{
		{Owner: "b", Version: 10, Records: []Record{live("x", 10)}},
		{Owner: "me", Version: 99, Records: []Record{tomb("a", 99)}}, // about me: ignored
		{Owner: "c", Since: 50, Version: 60},                         // gap: pulled later
	}}
	reply, err := c.handle(push)
	if err != nil {
		t.Fatal(err)
	}
	if reply.Type != msgReply || reply.From != "me" || len(reply.Deltas) != 0 {
		t.Errorf("push reply %+v", reply)
	}
	if c.Catalog().Version("b") != 10 || c.Catalog().Version("me") != 5 {
		t.Errorf("versions after push: %v", c.Catalog().versions())
	}
	c.pull.mu.Lock()
	w := c.pull.wants["c"]
	c.pull.mu.Unlock()
	if w == nil || w.version != 60 || w.hint != "b" {
		t.Errorf("gap did not schedule a pull of c at 60 from b: %+v", w)
	}
	c.push.mu.Lock()
	since, ok := c.push.pending["b"]
	c.push.mu.Unlock()
	if !ok || since != 0 {
		t.Errorf("applied delta not queued for forwarding: %v, %v", since, ok)
	}

	pull := &message{Type: msgPull, From: "b", Wants: []Want{{Owner: "me", Since: 0}, {Owner: "b", Since: 10}, {Owner: "zz"}, {Owner: "b", Since: 3}}}
	reply, err = c.handle(pull)
	if err != nil {
		t.Fatal(err)
	}
	if len(reply.Deltas) != 2 || reply.Deltas[0].Owner != "me" || reply.Deltas[1].Owner != "b" || reply.Deltas[1].Since != 3 {
		t.Errorf("pull reply %+v", reply.Deltas)
	}

	if _, err := c.handle(&message{Type: msgPull, Wants: make([]Want, maxWants+1)}); err == nil {
		t.Errorf("oversize pull accepted")
	}
	if _, err := c.handle(&message{Type: msgReply}); err == nil {
		t.Errorf("a reply was accepted as a request")
	}
}

func TestPusherCoalesces(t *testing.T) {
	c := newIdleCluster(t, "me")
	p := c.push
	for _, s := range []uint64{10, 5, 7} {
		p.enqueue("b", s)
	}
	p.enqueue("c", 3)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending["b"] != 5 || p.pending["c"] != 3 || len(p.pending) != 2 {
		t.Errorf("pending %v: want the oldest since per owner", p.pending)
	}
	if len(p.kick) != 1 {
		t.Errorf("kick channel holds %d, want one wake-up", len(p.kick))
	}
}

func TestPullerWant(t *testing.T) {
	c := newIdleCluster(t, "me")
	c.Catalog().apply(&Delta{Owner: "b", Version: 10})
	p := c.pull
	p.want("me", 100, "") // never pull myself
	p.want("b", 10, "x")  // already held
	p.want("b", 9, "x")   // older than held
	p.want("c", 20, "b")  // new
	p.want("c", 15, "")   // lower version, no hint: keeps the best of both
	p.want("c", 30, "d")  // newer version and hint
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.wants) != 1 {
		t.Fatalf("wants %v", p.wants)
	}
	if w := p.wants["c"]; w.version != 30 || w.hint != "d" {
		t.Errorf("want of c = %+v", w)
	}
}

func TestRandomPeers(t *testing.T) {
	c := newIdleCluster(t, "me")
	cat := c.Catalog()
	cat.setMember(member("me", StatusAlive))
	for i := range 6 {
		m := member(fmt.Sprintf("p%d", i), StatusAlive)
		m.Tags = map[string]string{TagRPC: fmt.Sprintf("127.0.0.1:%d", 1000+i)}
		cat.setMember(m)
	}
	failed := member("f", StatusFailed)
	failed.Tags = map[string]string{TagRPC: "127.0.0.1:2000"}
	cat.setMember(failed)
	noRPC := member("n", StatusAlive)
	noRPC.Tags = nil
	cat.setMember(noRPC)

	all := c.randomPeers(100, "p0")
	if len(all) != 5 {
		t.Fatalf("randomPeers = %v, want the 5 alive peers with an address other than p0", all)
	}
	for _, a := range all {
		if a == "127.0.0.1:1000" || a == "127.0.0.1:2000" || a == "127.0.0.1:7947" {
			t.Errorf("randomPeers returned %s", a)
		}
	}
	if got := c.randomPeers(2, ""); len(got) != 2 {
		t.Errorf("randomPeers(2) = %v", got)
	}
}

// TestPushPeersStartWithNeighbours checks that pushes always reach the
// next alive member by name and the one before, wrapping around, so that a
// delta goes round the whole ring both ways whatever the random picks
// miss; and that past a neighbour that cannot take the delta now, the next
// member in the same direction gets it too.
func TestPushPeersStartWithNeighbours(t *testing.T) {
	// d is failed and dd has no catalog address: neither is in the ring.
	names := []string{"a", "b", "c", "d", "e", "f", "g"}
	addr := func(name string) string {
		return fmt.Sprintf("127.0.0.1:%d", 1000+slices.Index(names, name))
	}
	for _, tc := range []struct {
		local      string
		busy       []string // peers whose last exchange failed
		want       []string // the first peers, in order
		randomFrom []string // where the rest of Fanout comes from
	}{
		{local: "a", want: []string{"b", "g"}, randomFrom: []string{"c", "e", "f"}}, // before the first: wraps to g
		{local: "c", want: []string{"e", "b"}, randomFrom: []string{"a", "f", "g"}}, // d is failed: e
		{local: "g", want: []string{"a", "f"}, randomFrom: []string{"b", "c", "e"}}, // past the last: wraps to a
		{local: "c", busy: []string{"e"}, want: []string{"e", "f", "b"}, randomFrom: []string{"a", "g"}},
		{local: "c", busy: []string{"b", "a"}, want: []string{"e", "b", "g"}, randomFrom: []string{"f"}},
	} {
		c := newIdleCluster(t, tc.local)
		cat := c.Catalog()
		for _, name := range names {
			status := StatusAlive
			if name == "d" {
				status = StatusFailed
			}
			m := member(name, status)
			m.Tags = map[string]string{TagRPC: addr(name)}
			cat.setMember(m)
		}
		noRPC := member("dd", StatusAlive)
		noRPC.Tags = nil
		cat.setMember(noRPC)
		for _, name := range tc.busy {
			c.send.get(addr(name)).failures = 1
		}
		var want []string
		for _, name := range tc.want {
			want = append(want, addr(name))
		}
		var random []string
		for _, name := range tc.randomFrom {
			random = append(random, addr(name))
		}

		for range 20 {
			got := c.pushPeers(3)
			if len(got) != len(want)+1 || !slices.Equal(got[:len(want)], want) {
				t.Fatalf("%s, busy %v: pushPeers(3) = %v, want %v and one of %v", tc.local, tc.busy, got, want, random)
			}
			if !slices.Contains(random, got[len(want)]) {
				t.Fatalf("%s, busy %v: pushPeers(3) = %v: the random peer is not one of %v", tc.local, tc.busy, got, random)
			}
		}
		if tc.busy == nil {
			if got := c.pushPeers(2); !slices.Equal(got, want) {
				t.Errorf("%s: pushPeers(2) = %v, want only the neighbours %v", tc.local, got, want)
			}
			if got := c.pushPeers(1); !slices.Equal(got, want[:1]) {
				t.Errorf("%s: pushPeers(1) = %v, want only the successor %v", tc.local, got, want[:1])
			}
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (&Config{}).Validate(); err == nil {
		t.Fatal("empty config accepted")
	} else {
		for _, want := range []string{"node name", "bind address", "fanout", "probe interval", "sync interval", "tombstone TTL", "TCP timeout"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Validate() of an empty config does not mention %q: %v", want, err)
			}
		}
	}
	for _, cfg := range []Config{TestConfig("a"), func() Config { c := DefaultConfig(); c.NodeName = "a"; return c }()} {
		if err := cfg.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", cfg, err)
		}
	}
	bad := TestConfig("a")
	bad.BindAddr, bad.AdvertiseAddr, bad.RPCAddr = "localhost:1", "1.2.3.4:99999", "1.2.3.4"
	err := bad.Validate()
	for _, want := range []string{"bind address", "advertise address", "rpc address"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %q", err, want)
		}
	}
	if _, err := New(bad); err == nil || !strings.HasPrefix(err.Error(), "gossip: ") {
		t.Errorf("New(bad) = %v", err)
	}
}

func TestMemberAccessors(t *testing.T) {
	m := Member{Name: "a", Addr: []byte{10, 0, 0, 1}, Port: 7946, Tags: map[string]string{
		TagDatacenter: "dc2", TagNodeID: "id-1", TagVersion: "12345", TagRPC: "10.0.0.1:7947",
	}}
	if m.Datacenter() != "dc2" || m.NodeID() != "id-1" || m.CatalogVersion() != 12345 || m.RPCAddr() != "10.0.0.1:7947" || m.GossipAddr() != "10.0.0.1:7946" {
		t.Errorf("accessors of %+v", m)
	}
	m.Tags[TagVersion] = "junk"
	if m.CatalogVersion() != 0 {
		t.Errorf("unparsable version tag read as %d", m.CatalogVersion())
	}
	for s, want := range map[MemberStatus]string{StatusNone: "none", StatusAlive: "alive", StatusLeaving: "leaving", StatusLeft: "left", StatusFailed: "failed", 99: "none"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(s), s.String(), want)
		}
	}
}

// recordHandler captures log records.
type recordHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r)
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

func TestStdLoggerLevels(t *testing.T) {
	h := &recordHandler{}
	l := newStdLogger(slog.New(h), "memberlist")
	for _, line := range []string{
		"[DEBUG] memberlist: probing",
		"[WARN] memberlist: Was able to connect to b over TCP",
		"[ERR] memberlist: Failed fallback ping",
		"[ERROR] serf: boom",
		"[INFO] serf: EventMemberJoin: a 127.0.0.1",
		"no prefix at all",
	} {
		l.Print(line)
	}
	want := []struct {
		level slog.Level
		msg   string
	}{
		{slog.LevelDebug, "probing"},
		{slog.LevelWarn, "Was able to connect to b over TCP"},
		{slog.LevelError, "Failed fallback ping"},
		{slog.LevelError, "boom"},
		{slog.LevelInfo, "EventMemberJoin: a 127.0.0.1"},
		{slog.LevelInfo, "no prefix at all"},
	}
	if len(h.records) != len(want) {
		t.Fatalf("%d records, want %d", len(h.records), len(want))
	}
	for i, w := range want {
		if r := h.records[i]; r.Level != w.level || r.Message != w.msg {
			t.Errorf("record %d = %v %q, want %v %q", i, r.Level, r.Message, w.level, w.msg)
		}
	}
}

// TestCatalogConcurrentUse hammers a catalog from writers and readers at
// once; -race does the checking.
func TestCatalogConcurrentUse(t *testing.T) {
	c := newCatalog("me", time.Now)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 4 {
		owner := fmt.Sprintf("o%d", w)
		wg.Go(func() {
			c.setMember(member(owner, StatusAlive))
			for v := uint64(1); v <= 300; v++ {
				c.apply(&Delta{Owner: owner, Since: v - 1, Version: v, Records: []Record{live(fmt.Sprintf("s%d", v%7), v)}})
				if v%50 == 0 {
					c.setMember(member(owner, MemberStatus(1+v/50%2*3)))
					c.reapTombstones(time.Hour)
				}
			}
		})
	}
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-c.Changed():
				default:
				}
				for _, in := range c.AllInstances() {
					_ = in.Status()
					_ = in.Service.Name
				}
				c.Services()
				c.Members()
				c.deltaSince("o1", 10)
				c.Index()
			}
		})
	}
	time.AfterFunc(200*time.Millisecond, func() { close(stop) })
	wg.Wait()
	for w := range 4 {
		if v := c.Version(fmt.Sprintf("o%d", w)); v != 300 {
			t.Errorf("o%d at version %d, want 300", w, v)
		}
	}
}
