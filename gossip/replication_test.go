package gossip

import (
	"fmt"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

func TestTwentyRegistrationsReachEveryNode(t *testing.T) {
	cs := startCluster(t, 5)
	p := newPublisher(cs[1])
	for i := range 20 {
		p.put(&Service{ID: fmt.Sprintf("api-%02d", i), Name: "api", Port: 9000 + i, Tags: []string{fmt.Sprintf("t%d", i%3)}})
	}
	waitEvery(t, cs, 5*time.Second, "20 api instances on every node", func(c *Cluster) bool {
		return len(c.Catalog().Instances("api")) == 20 && c.Catalog().Version("node1") == p.version
	})
	for _, c := range cs {
		in := c.Catalog().Instances("api")
		for i, x := range in {
			if want := fmt.Sprintf("api-%02d", i); x.Service.ID != want || x.Node.Name != "node1" || x.Service.Port != 9000+i {
				t.Errorf("%s: instance %d = %s on %s port %d", c.cfg.NodeName, i, x.Service.ID, x.Node.Name, x.Service.Port)
			}
			if x.Status() != StatusPassing {
				t.Errorf("%s: %s is %s", c.cfg.NodeName, x.Service.ID, x.Status())
			}
		}
		if got := c.Catalog().Services()["api"]; !reflect.DeepEqual(got, []string{"t0", "t1", "t2"}) {
			t.Errorf("%s: api tags %v", c.cfg.NodeName, got)
		}
	}
	// Every node learns the owner's version from its tags as well.
	waitEvery(t, cs, 5*time.Second, "node1's version in its tags everywhere", func(c *Cluster) bool {
		return seesTag(c, "node1", p.version)
	})
}

// TestLargeCatalogReplicates publishes a catalog far beyond what serf's tags
// (512 B) or user events (9 KiB) could carry: it must go over the TCP path.
func TestLargeCatalogReplicates(t *testing.T) {
	cs := startCluster(t, 5)
	owner := cs[3]
	version := NextVersion(0, time.Now())
	d := Delta{Version: version}
	for i := range 200 {
		id := fmt.Sprintf("big-%03d", i)
		blob := strings.Repeat(string(rune('a'+i%26)), 1024)
		d.Records = append(d.Records, Record{ID: id, Version: version, Service: &Service{
			ID: id, Name: "big", Port: 10000 + i, Meta: map[string]string{"blob": blob, "i": fmt.Sprint(i)},
		}})
	}
	if err := ownerOf(owner).publish(owner, d); err != nil {
		t.Fatal(err)
	}
	waitEvery(t, cs, 10*time.Second, "200 big instances on every node", func(c *Cluster) bool {
		return len(c.Catalog().Instances("big")) == 200
	})
	for _, c := range cs {
		for i, in := range c.Catalog().Instances("big") {
			if in.Service.Meta["i"] != fmt.Sprint(i) || len(in.Service.Meta["blob"]) != 1024 || in.Service.Meta["blob"][0] != byte('a'+i%26) {
				t.Fatalf("%s: instance %d arrived damaged: meta i=%q, blob of %d bytes",
					c.cfg.NodeName, i, in.Service.Meta["i"], len(in.Service.Meta["blob"]))
			}
		}
	}
	if st := owner.Stats(); st.BytesOut < 200*1024 {
		t.Errorf("owner sent %d bytes on the catalog path, less than the catalog itself", st.BytesOut)
	}
	tagBytes := 0
	for k, v := range owner.LocalMember().Tags {
		tagBytes += len(k) + len(v)
	}
	if tagBytes > 512 {
		t.Errorf("owner's tags grew to %d bytes", tagBytes)
	}
}

// TestLateJoinerCatchesUp starts a node after the registrations were pushed:
// nothing is pushed to it, so it must pull what the members' tags advertise.
func TestLateJoinerCatchesUp(t *testing.T) {
	cs := startCluster(t, 3)
	p := newPublisher(cs[1])
	for i := range 10 {
		p.put(&Service{ID: fmt.Sprintf("web-%d", i), Name: "web"})
	}
	p.del("web-3")
	waitEvery(t, cs, 5*time.Second, "9 web instances on every node", func(c *Cluster) bool {
		return len(c.Catalog().Instances("web")) == 9 && c.Catalog().Version("node1") == p.version
	})
	// Everyone holds the latest version, so nothing new can be applied and
	// pushed once the queues are empty: the late joiner can only pull.
	waitEvery(t, cs, 5*time.Second, "push queues drained", pusherIdle)
	cfg := TestConfig("late")
	cfg.Seeds = []string{cs[2].LocalMember().GossipAddr()}
	late := startNode(t, cfg)
	testutil.Wait(t, 10*time.Second, "the late joiner to hold node1's catalog", func() bool {
		return late.Catalog().Version("node1") == p.version && len(late.Catalog().Instances("web")) == 9
	})
	if hasInstance(late, "web", "web-3") {
		t.Errorf("late joiner holds the deregistered web-3")
	}
	if st := late.Stats(); st.Pulls == 0 || st.PushesIn != 0 {
		t.Errorf("late joiner stats %+v: want pulls and no pushes", st)
	}
	testutil.Wait(t, 5*time.Second, "everyone to see the late joiner", func() bool {
		for _, c := range cs {
			if memberStatus(c, "late") != StatusAlive {
				return false
			}
		}
		return true
	})
}

// TestStaleDeltaReplayDoesNotResurrect replays, by hand and over the wire, a
// delta from before a deregistration to a node that has the tombstone.
func TestStaleDeltaReplayDoesNotResurrect(t *testing.T) {
	cs := startCluster(t, 3)
	owner, target := cs[0], cs[2]
	p := newPublisher(owner)
	p.put(&Service{ID: "web-1", Name: "web"})
	p.put(&Service{ID: "web-2", Name: "web"})
	waitEvery(t, cs, 5*time.Second, "web-1 everywhere", func(c *Cluster) bool { return hasInstance(c, "web", "web-1") })
	incremental, ok := owner.Catalog().deltaSince("node0", 0)
	if !ok || len(incremental.Records) != 2 {
		t.Fatalf("captured delta %+v, %v", incremental, ok)
	}
	full := incremental
	full.Full = true
	latest := Delta{Owner: "node0", Since: incremental.Version - 1, Version: incremental.Version,
		Records: []Record{incremental.Records[len(incremental.Records)-1]}}

	p.del("web-1")
	waitEvery(t, cs, 5*time.Second, "web-1 gone everywhere", func(c *Cluster) bool {
		return !hasInstance(c, "web", "web-1") && c.Catalog().Version("node0") == p.version
	})
	before := target.Stats().PushesIn

	// A raw connection, as any peer (or anything else) could open.
	conn, err := net.DialTimeout("tcp", target.RPCAddr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	replay := &message{Type: msgPush, From: "node1", Deltas: []Delta{incremental, full, latest}}
	if err := writeMessage(conn, replay, nil); err != nil {
		t.Fatal(err)
	}
	// The reply is written after the push is applied, so no waiting is needed.
	reply, _, err := readMessage(conn, nil)
	if err != nil {
		t.Fatalf("no reply to the replayed push: %v", err)
	}
	if reply.Type != msgReply || reply.From != "node2" {
		t.Errorf("reply %+v", reply)
	}
	if got := target.Stats().PushesIn; got < before+1 {
		t.Errorf("target counted %d pushes, want at least %d", got, before+1)
	}

	// And through the cluster's own client, from another member.
	if _, err := cs[1].call(target.RPCAddr(), replay); err != nil {
		t.Fatal(err)
	}
	// A pull answered with stale deltas changes nothing either.
	for _, d := range replay.Deltas {
		if res := target.Catalog().apply(&d); res != applyStale {
			t.Errorf("stale delta applied as %v", res)
		}
	}
	for _, c := range cs {
		if hasInstance(c, "web", "web-1") {
			t.Errorf("%s: web-1 resurrected by a stale delta", c.cfg.NodeName)
		}
		if !hasInstance(c, "web", "web-2") {
			t.Errorf("%s: web-2 lost", c.cfg.NodeName)
		}
		if v := c.Catalog().Version("node0"); v != p.version {
			t.Errorf("%s: holds node0 at version %d, owner is at %d", c.cfg.NodeName, v, p.version)
		}
	}

	// Garbage on the same port is dropped without a reply, and the node keeps
	// serving.
	bad, err := net.DialTimeout("tcp", target.RPCAddr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	bad.SetDeadline(time.Now().Add(5 * time.Second))
	bad.Write(frame(framePlain, []byte(`{"type":"push","deltas":[{"owner":"node0","version":1,"records":[{"v":1}]}]}`)))
	if m, _, err := readMessage(bad, nil); err == nil {
		t.Errorf("malformed push answered with %+v", m)
	}
	if _, err := cs[1].call(target.RPCAddr(), &message{Type: msgPull, From: "node1", Wants: []Want{{Owner: "node0"}}}); err != nil {
		t.Errorf("target stopped serving after a malformed message: %v", err)
	}
}

// TestSealedCluster runs the catalog path sealed: replication works, and
// plain or foreign-key frames are refused without touching the catalog.
func TestSealedCluster(t *testing.T) {
	sealer := newTestSealer(t, 7)
	cs := startClusterWith(t, 3, func(_ int, cfg *Config) { cfg.Sealer = sealer })
	p := newPublisher(cs[0])
	p.put(&Service{ID: "web-1", Name: "web"})
	waitEvery(t, cs, 5*time.Second, "web-1 everywhere", func(c *Cluster) bool { return hasInstance(c, "web", "web-1") })

	forged := &message{Type: msgPush, From: "mallory", Deltas: []Delta{{
		Owner: "node0", Since: 0, Version: p.version + 1_000_000,
		Records: []Record{{ID: "evil", Version: p.version + 1_000_000, Service: &Service{ID: "evil", Name: "web"}}},
	}}}
	for _, s := range []Sealer{nil, newTestSealer(t, 8)} {
		conn, err := net.DialTimeout("tcp", cs[2].RPCAddr(), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if err := writeMessage(conn, forged, s); err != nil {
			t.Fatal(err)
		}
		if m, _, err := readMessage(conn, s); err == nil {
			t.Errorf("forged push (sealer %T) answered with %+v", s, m)
		}
		conn.Close()
	}
	if hasInstance(cs[2], "web", "evil") || cs[2].Catalog().Version("node0") != p.version {
		t.Errorf("a forged frame changed the catalog")
	}
	// A member with the key still gets through.
	if _, err := cs[1].call(cs[2].RPCAddr(), &message{Type: msgPull, From: "node1", Wants: []Want{{Owner: "node0"}}}); err != nil {
		t.Errorf("sealed pull failed: %v", err)
	}
}
