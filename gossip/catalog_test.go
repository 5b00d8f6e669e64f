package gossip

import (
	"net"
	"reflect"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for catalogs under test.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) Set(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = t
}

func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

func member(name string, status MemberStatus) Member {
	return Member{
		Name:   name,
		Addr:   net.IPv4(127, 0, 0, 1),
		Port:   7946,
		Tags:   map[string]string{TagRPC: "127.0.0.1:7947"},
		Status: status,
	}
}

func svc(id, name string, checks ...string) *Service {
	s := &Service{ID: id, Name: name}
	for i, st := range checks {
		s.Checks = append(s.Checks, Check{ID: id + "-check" + string(rune('a'+i)), Status: st})
	}
	return s
}

// catalogIDs returns "owner/serviceID" of the instances of a service.
func catalogIDs(in []Instance) []string {
	var out []string
	for _, i := range in {
		out = append(out, i.Node.Name+"/"+i.Service.ID)
	}
	return out
}

func mustApply(t *testing.T, c *Catalog, d Delta, want applyResult) {
	t.Helper()
	if got := c.apply(&d); got != want {
		t.Fatalf("apply(%+v) = %v, want %v", d, got, want)
	}
}

func TestCatalogIgnoresDeltasAboutTheLocalNode(t *testing.T) {
	c := newCatalog("me", newFakeClock().Now)
	c.setMember(member("me", StatusAlive))
	idx := c.Index()
	mustApply(t, c, Delta{Owner: "me", Version: 10, Records: []Record{{ID: "web-1", Version: 10, Service: svc("web-1", "web")}}}, applyStale)
	mustApply(t, c, Delta{Owner: "me", Version: 11, Full: true, Records: []Record{{ID: "web-1", Version: 11, Service: svc("web-1", "web")}}}, applyStale)
	mustApply(t, c, Delta{Owner: "", Version: 10, Records: []Record{{ID: "web-1", Version: 10, Service: svc("web-1", "web")}}}, applyStale)
	if v := c.Version("me"); v != 0 {
		t.Errorf("Version(me) = %d after foreign deltas about me", v)
	}
	if got := c.Instances("web"); len(got) != 0 {
		t.Errorf("Instances(web) = %v", catalogIDs(got))
	}
	if c.Index() != idx {
		t.Errorf("ignored deltas moved the index")
	}

	// The local node's own state comes through publishLocal.
	prev, ok := publishLocal(c, &Delta{Owner: "me", Version: 20, Full: true, Records: []Record{{ID: "db-1", Version: 20, Service: svc("db-1", "db")}}})
	if !ok || prev != 0 {
		t.Fatalf("publishLocal = %d, %v; want 0, true", prev, ok)
	}
	if got := catalogIDs(c.Instances("db")); !reflect.DeepEqual(got, []string{"me/db-1"}) {
		t.Errorf("Instances(db) = %v", got)
	}
	// A peer echoing my state back cannot change it.
	mustApply(t, c, Delta{Owner: "me", Since: 20, Version: 30, Records: []Record{{ID: "db-1", Version: 30, Deleted: true}}}, applyStale)
	if got := c.Instances("db"); len(got) != 1 {
		t.Errorf("a peer's delta about me deleted my service")
	}
	if prev, ok := publishLocal(c, &Delta{Owner: "me", Version: 20, Full: true}); ok || prev != 20 {
		t.Errorf("publishLocal of the same version = %d, %v; want 20, false", prev, ok)
	}
	if prev, ok := publishLocal(c, &Delta{Owner: "me", Version: 21, Full: true}); !ok || prev != 20 {
		t.Errorf("publishLocal of a newer version = %d, %v; want 20, true", prev, ok)
	}
	if got := c.Instances("db"); len(got) != 0 {
		t.Errorf("a full publish without db-1 kept it: %v", catalogIDs(got))
	}
}

func TestCatalogChangeIndexAndSignal(t *testing.T) {
	clock := newFakeClock()
	c := newCatalog("me", clock.Now)
	idx := c.Index()
	if idx != uint64(clock.Now().UnixMicro()) {
		t.Errorf("initial index %d, want the clock's microseconds", idx)
	}
	ch := c.Changed()
	mustApply(t, c, Delta{Owner: "b", Version: 10, Records: []Record{live("x", 10)}}, applyApplied)
	select {
	case <-ch:
	default:
		t.Fatal("Changed channel not closed by an applied delta")
	}
	if c.Index() <= idx {
		t.Errorf("index did not grow: %d <= %d", c.Index(), idx)
	}

	ch, idx = c.Changed(), c.Index()
	mustApply(t, c, Delta{Owner: "b", Version: 10, Records: []Record{live("x", 10)}}, applyStale)
	mustApply(t, c, Delta{Owner: "b", Since: 11, Version: 12}, applyGap)
	select {
	case <-ch:
		t.Fatal("Changed channel closed by a stale or gap delta")
	default:
	}
	if c.Index() != idx {
		t.Errorf("stale delta moved the index")
	}

	// The index keeps growing while the clock stands still or goes back.
	clock.Advance(-time.Hour)
	for i := range 3 {
		prev := c.Index()
		c.setMember(member("b", MemberStatus(1+i%2*3))) // alive, failed, alive
		if c.Index() <= prev {
			t.Fatalf("index went from %d to %d with the clock set back", prev, c.Index())
		}
	}

	// An unchanged member is not a change.
	ch, idx = c.Changed(), c.Index()
	c.setMember(member("b", StatusAlive))
	if c.Index() != idx {
		t.Errorf("re-setting an identical member moved the index")
	}
	select {
	case <-ch:
		t.Fatal("re-setting an identical member signalled a change")
	default:
	}
	m := member("b", StatusAlive)
	m.Tags[TagVersion] = "10"
	c.setMember(m)
	if c.Index() == idx {
		t.Errorf("a tag change did not move the index")
	}
}

func TestCatalogInstancesNeedAMember(t *testing.T) {
	c := newCatalog("me", newFakeClock().Now)
	mustApply(t, c, Delta{Owner: "b", Version: 10, Records: []Record{{ID: "web-1", Version: 10, Service: svc("web-1", "web")}}}, applyApplied)
	if got := c.Instances("web"); len(got) != 0 {
		t.Errorf("instances of an unknown member are visible: %v", catalogIDs(got))
	}
	if got := c.Services(); len(got) != 0 {
		t.Errorf("services of an unknown member are visible: %v", got)
	}
	c.setMember(member("b", StatusAlive))
	if got := catalogIDs(c.Instances("web")); !reflect.DeepEqual(got, []string{"b/web-1"}) {
		t.Errorf("Instances(web) = %v", got)
	}
}

func TestCatalogQueries(t *testing.T) {
	c := newCatalog("me", newFakeClock().Now)
	for _, n := range []string{"c", "a", "b", "me"} {
		c.setMember(member(n, StatusAlive))
	}
	web := func(id string, tags ...string) *Service { s := svc(id, "web"); s.Tags = tags; return s }
	publishLocal(c, &Delta{Owner: "me", Version: 5, Full: true, Records: []Record{{ID: "web-0", Version: 5, Service: web("web-0", "local")}}})
	mustApply(t, c, Delta{Owner: "b", Version: 10, Records: []Record{
		{ID: "web-2", Version: 9, Service: web("web-2", "v2", "canary")},
		{ID: "web-1", Version: 10, Service: web("web-1", "v1")},
		{ID: "db-1", Version: 8, Service: svc("db-1", "db")},
		{ID: "web-gone", Version: 7, Deleted: true},
	}}, applyApplied)
	mustApply(t, c, Delta{Owner: "a", Version: 10, Records: []Record{
		{ID: "web-9", Version: 10, Service: web("web-9", "v1")},
	}}, applyApplied)

	if got, want := catalogIDs(c.Instances("web")), []string{"a/web-9", "b/web-1", "b/web-2", "me/web-0"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Instances(web) = %v, want %v", got, want)
	}
	if got := c.Instances("nope"); len(got) != 0 {
		t.Errorf("Instances(nope) = %v", catalogIDs(got))
	}
	if got, want := catalogIDs(c.NodeInstances("b")), []string{"b/db-1", "b/web-1", "b/web-2"}; !reflect.DeepEqual(got, want) {
		t.Errorf("NodeInstances(b) = %v, want %v", got, want)
	}
	if got := len(c.AllInstances()); got != 5 {
		t.Errorf("AllInstances has %d, want 5", got)
	}
	want := map[string][]string{"web": {"canary", "local", "v1", "v2"}, "db": {}}
	if got := c.Services(); !reflect.DeepEqual(got, want) {
		t.Errorf("Services() = %v, want %v", got, want)
	}
	var names []string
	for _, m := range c.Members() {
		names = append(names, m.Name)
	}
	if want := []string{"a", "b", "c", "me"}; !reflect.DeepEqual(names, want) {
		t.Errorf("Members() = %v, want %v", names, want)
	}
	if m, ok := c.Member("b"); !ok || m.Name != "b" || m.Status != StatusAlive {
		t.Errorf("Member(b) = %+v, %v", m, ok)
	}
	if _, ok := c.Member("zz"); ok {
		t.Errorf("Member(zz) found")
	}
	for _, in := range c.Instances("web") {
		if in.Service.ID == "web-2" && in.Version != 9 {
			t.Errorf("web-2 version = %d, want 9", in.Version)
		}
	}
	if got := c.versions(); !reflect.DeepEqual(got, map[string]uint64{"me": 5, "a": 10, "b": 10}) {
		t.Errorf("versions() = %v", got)
	}
	if _, ok := c.deltaSince("b", 10); ok {
		t.Errorf("deltaSince at the held version reported something")
	}
	if _, ok := c.deltaSince("zz", 0); ok {
		t.Errorf("deltaSince of an unknown owner reported something")
	}
	if d, ok := c.deltaSince("b", 9); !ok || d.Owner != "b" || len(d.Records) != 1 || d.Records[0].ID != "web-1" {
		t.Errorf("deltaSince(b, 9) = %+v, %v", d, ok)
	}
}

func TestCatalogMemberLeftTakesItsServices(t *testing.T) {
	c := newCatalog("me", newFakeClock().Now)
	c.setMember(member("b", StatusAlive))
	c.setMember(member("c", StatusAlive))
	v1 := Delta{Owner: "b", Version: 10, Records: []Record{{ID: "web-1", Version: 10, Service: svc("web-1", "web")}}}
	mustApply(t, c, v1, applyApplied)
	mustApply(t, c, Delta{Owner: "c", Version: 10, Records: []Record{{ID: "web-2", Version: 10, Service: svc("web-2", "web")}}}, applyApplied)

	c.setMember(member("b", StatusLeft))
	if got, want := catalogIDs(c.Instances("web")), []string{"c/web-2"}; !reflect.DeepEqual(got, want) {
		t.Errorf("after b left: Instances(web) = %v, want %v", got, want)
	}
	if v := c.Version("b"); v != 0 {
		t.Errorf("after b left: Version(b) = %d", v)
	}
	if m, ok := c.Member("b"); !ok || m.Status != StatusLeft {
		t.Errorf("left member should stay listed as left until reaped: %+v, %v", m, ok)
	}

	// Late copies of what b published before it left: no resurrection.
	mustApply(t, c, v1, applyStale)
	mustApply(t, c, Delta{Owner: "b", Version: 7, Records: []Record{{ID: "web-1", Version: 7, Service: svc("web-1", "web")}}}, applyStale)
	mustApply(t, c, Delta{Owner: "b", Version: 10, Full: true, Records: []Record{{ID: "web-1", Version: 10, Service: svc("web-1", "web")}}}, applyStale)
	if got := catalogIDs(c.NodeInstances("b")); len(got) != 0 {
		t.Errorf("late delta resurrected %v", got)
	}

	// b comes back (same name, newer state): its new services show.
	c.setMember(member("b", StatusAlive))
	mustApply(t, c, Delta{Owner: "b", Version: 20, Records: []Record{{ID: "web-3", Version: 20, Service: svc("web-3", "web")}}}, applyApplied)
	if got, want := catalogIDs(c.Instances("web")), []string{"b/web-3", "c/web-2"}; !reflect.DeepEqual(got, want) {
		t.Errorf("after b rejoined: Instances(web) = %v, want %v", got, want)
	}
}

func TestCatalogLocalMemberLeftKeepsLocalServices(t *testing.T) {
	c := newCatalog("me", newFakeClock().Now)
	c.setMember(member("me", StatusAlive))
	publishLocal(c, &Delta{Owner: "me", Version: 5, Full: true, Records: []Record{{ID: "web-0", Version: 5, Service: svc("web-0", "web")}}})
	c.setMember(member("me", StatusLeft))
	if v := c.Version("me"); v != 5 {
		t.Errorf("the local node leaving dropped its own catalog (version %d)", v)
	}
	c.removeMember("me")
	if _, ok := c.Member("me"); !ok {
		t.Errorf("removeMember dropped the local member")
	}
}

func TestCatalogRemoveMember(t *testing.T) {
	c := newCatalog("me", newFakeClock().Now)
	c.setMember(member("b", StatusFailed))
	d := Delta{Owner: "b", Version: 10, Records: []Record{{ID: "web-1", Version: 10, Service: svc("web-1", "web")}}}
	mustApply(t, c, d, applyApplied)
	if got := c.Instances("web"); len(got) != 1 || got[0].Status() != StatusCritical {
		t.Fatalf("failed member's instance: %+v", got)
	}
	idx := c.Index()
	c.removeMember("b")
	if c.Index() <= idx {
		t.Errorf("removeMember did not move the index")
	}
	if _, ok := c.Member("b"); ok {
		t.Errorf("reaped member still listed")
	}
	if got := c.AllInstances(); len(got) != 0 {
		t.Errorf("reaped member's instances still listed: %v", catalogIDs(got))
	}
	mustApply(t, c, d, applyStale)
	if v := c.Version("b"); v != 0 {
		t.Errorf("late delta re-created the reaped owner at %d", v)
	}
	// Removing an unknown member is harmless.
	c.removeMember("zz")
}

func TestCatalogReapTombstones(t *testing.T) {
	clock := newFakeClock()
	c := newCatalog("me", clock.Now)
	at := func(d time.Duration) uint64 { return uint64(clock.Now().Add(d).UnixMicro()) }
	mustApply(t, c, Delta{Owner: "b", Version: at(0), Records: []Record{tomb("x", at(-2*time.Hour)), tomb("y", at(0)), live("z", at(-3*time.Hour))}}, applyApplied)
	publishLocal(c, &Delta{Owner: "me", Version: at(0), Full: true, Records: []Record{tomb("q", at(-2*time.Hour))}})
	if n := c.reapTombstones(time.Hour); n != 1 {
		t.Errorf("reaped %d, want 1 (x of b; q of me is its owner's to reap)", n)
	}
	clock.Advance(2 * time.Hour)
	if n := c.reapTombstones(time.Hour); n != 1 {
		t.Errorf("reaped %d, want 1 (y)", n)
	}
	d, ok := c.deltaSince("b", 1)
	if !ok || !d.Full || len(d.Records) != 1 || d.Records[0].ID != "z" {
		t.Errorf("deltaSince(b, 1) after reaping = %+v, %v; want a full delta with z only", d, ok)
	}
}

func TestInstanceStatus(t *testing.T) {
	tests := []struct {
		node   MemberStatus
		checks []string
		want   string
	}{
		{StatusAlive, nil, StatusPassing},
		{StatusAlive, []string{StatusPassing}, StatusPassing},
		{StatusAlive, []string{StatusWarning}, StatusWarning},
		{StatusAlive, []string{StatusCritical}, StatusCritical},
		{StatusFailed, nil, StatusCritical},
		{StatusFailed, []string{StatusPassing, StatusPassing}, StatusCritical},
		{StatusLeaving, []string{StatusPassing}, StatusCritical},
		{StatusLeft, nil, StatusCritical},
		{StatusNone, nil, StatusCritical},
	}
	for _, tt := range tests {
		in := Instance{Node: member("b", tt.node), Service: svc("web-1", "web", tt.checks...)}
		if got := in.Status(); got != tt.want {
			t.Errorf("node %v, checks %v: Status() = %q, want %q", tt.node, tt.checks, got, tt.want)
		}
	}
}

func TestCatalogFailedMemberInstancesAreCritical(t *testing.T) {
	c := newCatalog("me", newFakeClock().Now)
	c.setMember(member("b", StatusAlive))
	mustApply(t, c, Delta{Owner: "b", Version: 10, Records: []Record{{ID: "web-1", Version: 10, Service: svc("web-1", "web", StatusPassing)}}}, applyApplied)
	if got := c.Instances("web"); len(got) != 1 || got[0].Status() != StatusPassing {
		t.Fatalf("alive member's instance: %+v", got)
	}
	c.setMember(member("b", StatusFailed))
	got := c.Instances("web")
	if len(got) != 1 {
		t.Fatalf("a failed member's instances must stay in the catalog, got %d", len(got))
	}
	if got[0].Status() != StatusCritical || got[0].Node.Status != StatusFailed {
		t.Errorf("failed member's instance: status %q, node %v", got[0].Status(), got[0].Node.Status)
	}
	c.setMember(member("b", StatusAlive))
	if got := c.Instances("web"); len(got) != 1 || got[0].Status() != StatusPassing {
		t.Errorf("recovered member's instance: %+v", got)
	}
}

func TestServiceStatus(t *testing.T) {
	tests := []struct {
		checks []string
		want   string
	}{
		{nil, StatusPassing},
		{[]string{StatusPassing}, StatusPassing},
		{[]string{StatusPassing, StatusPassing}, StatusPassing},
		{[]string{StatusWarning}, StatusWarning},
		{[]string{StatusPassing, StatusWarning, StatusPassing}, StatusWarning},
		{[]string{StatusWarning, StatusWarning}, StatusWarning},
		{[]string{StatusCritical}, StatusCritical},
		{[]string{StatusPassing, StatusCritical}, StatusCritical},
		{[]string{StatusCritical, StatusWarning}, StatusCritical},
		{[]string{StatusWarning, StatusCritical, StatusPassing}, StatusCritical},
		// Anything unknown is treated as the worst: never route to it.
		{[]string{StatusPassing, "maintenance"}, StatusCritical},
		{[]string{""}, StatusCritical},
	}
	for _, tt := range tests {
		if got := svc("x", "x", tt.checks...).Status(); got != tt.want {
			t.Errorf("checks %q: Status() = %q, want %q", tt.checks, got, tt.want)
		}
	}
}

func TestNextVersion(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	us := uint64(now.UnixMicro())
	tests := []struct {
		name string
		prev uint64
		now  time.Time
		want uint64
	}{
		{"first version is the clock", 0, now, us},
		{"clock ahead", us - 100, now, us},
		{"clock equal", us, now, us + 1},
		{"clock behind", us + 5_000_000, now, us + 5_000_001},
		{"clock far behind", us, now.Add(-24 * time.Hour), us + 1},
		{"sub-microsecond clock step", us, now.Add(500 * time.Nanosecond), us + 1},
		{"clock before the epoch", 0, time.Unix(-10, 0), 1},
	}
	for _, tt := range tests {
		if got := NextVersion(tt.prev, tt.now); got != tt.want {
			t.Errorf("%s: NextVersion(%d, %v) = %d, want %d", tt.name, tt.prev, tt.now, got, tt.want)
		}
	}

	// A sequence with the clock jumping back and forth never repeats or regresses.
	clock := now
	steps := []time.Duration{time.Second, -time.Hour, 0, time.Microsecond, -time.Microsecond, 2 * time.Hour, -time.Minute, 0}
	v := uint64(0)
	for i, s := range steps {
		clock = clock.Add(s)
		next := NextVersion(v, clock)
		if next <= v {
			t.Fatalf("step %d: version went from %d to %d", i, v, next)
		}
		v = next
	}
	if !versionTime(us).Equal(now) {
		t.Errorf("versionTime(%d) = %v, want %v", us, versionTime(us), now)
	}
}

// TestCatalogLeftMemberStaysEmpty: once serf says a member left, nothing about
// it may show up again until it rejoins, not even a delta it published just
// before leaving that reaches this agent after the leave (a forwarded push, or
// a pull answered by a peer that has not seen the leave yet).
func TestCatalogLeftMemberStaysEmpty(t *testing.T) {
	c := newCatalog("me", newFakeClock().Now)
	c.setMember(member("b", StatusAlive))
	c.setMember(member("c", StatusAlive))
	mustApply(t, c, Delta{Owner: "b", Version: 10, Records: []Record{{ID: "web-1", Version: 10, Service: svc("web-1", "web")}}}, applyApplied)
	c.setMember(member("b", StatusLeft))
	// c never had a replica of anything before it left.
	c.setMember(member("c", StatusLeft))

	// What a peer that has not seen the leave yet answers to a pull from 0.
	c.apply(&Delta{Owner: "b", Since: 0, Version: 11, Records: []Record{
		{ID: "web-1", Version: 10, Service: svc("web-1", "web")},
		{ID: "web-2", Version: 11, Service: svc("web-2", "web")},
	}})
	c.apply(&Delta{Owner: "c", Version: 5, Records: []Record{{ID: "web-3", Version: 5, Service: svc("web-3", "web")}}})
	if got := c.Instances("web"); len(got) != 0 {
		t.Errorf("members that left show instances again: %v", catalogIDs(got))
	}
	if got := c.Services(); len(got) != 0 {
		t.Errorf("members that left show services again: %v", got)
	}
}
