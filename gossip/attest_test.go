package gossip

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// keyAttestor is a test Attestor: every node has an ECDSA key, and the
// "certificate" is the signer's name, trusted only if the shared directory
// holds a key by that name. It stands in for the node PKI (node/pki), which
// checks real certificate chains.
type keyAttestor struct {
	self string
	dir  *keyDir
}

type keyDir struct {
	mu   sync.Mutex
	keys map[string]*ecdsa.PrivateKey
}

func (d *keyDir) key(name string) *ecdsa.PrivateKey {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.keys == nil {
		d.keys = make(map[string]*ecdsa.PrivateKey)
	}
	k := d.keys[name]
	if k == nil {
		k, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		d.keys[name] = k
	}
	return k
}

func (a *keyAttestor) Sign(head []byte) ([]byte, []byte, error) {
	sum := sha256.Sum256(head)
	sig, err := ecdsa.SignASN1(rand.Reader, a.dir.key(a.self), sum[:])
	return sig, []byte(a.self), err
}

func (a *keyAttestor) Verify(owner string, head, sig, cert []byte) error {
	if string(cert) != owner {
		return fmt.Errorf("signed by %q, not by the owner %q", cert, owner)
	}
	sum := sha256.Sum256(head)
	if !ecdsa.VerifyASN1(&a.dir.key(owner).PublicKey, sum[:], sig) {
		return errors.New("bad signature")
	}
	return nil
}

func startSignedCluster(t *testing.T, n int) ([]*Cluster, *keyDir) {
	t.Helper()
	dir := &keyDir{}
	cs := startClusterWith(t, n, func(i int, cfg *Config) {
		cfg.Attestor = &keyAttestor{self: cfg.NodeName, dir: dir}
	})
	return cs, dir
}

// pushRaw sends deltas to target as if from the peer from, and waits for
// the reply: the push is applied (or refused) by then.
func pushRaw(t *testing.T, from, target *Cluster, deltas ...Delta) {
	t.Helper()
	if _, err := from.call(target.RPCAddr(), &message{Type: msgPush, From: from.cfg.NodeName, Deltas: deltas}); err != nil {
		t.Fatal(err)
	}
}

func TestSignedCatalogReplicates(t *testing.T) {
	cs, _ := startSignedCluster(t, 4)
	p := newPublisher(cs[1])
	p.put(&Service{ID: "web-1", Name: "web", Port: 80})
	p.put(&Service{ID: "web-2", Name: "web", Port: 81})
	p.del("web-1")
	waitEvery(t, cs, 5*time.Second, "node1's signed catalog everywhere", func(c *Cluster) bool {
		return c.Catalog().Version("node1") == p.version && hasInstance(c, "web", "web-2") && !hasInstance(c, "web", "web-1")
	})
	// A late joiner gets the catalog relayed by others, signature unchanged.
	late := startNode(t, func() Config {
		cfg := TestConfig("late")
		cfg.Seeds = []string{cs[3].LocalMember().GossipAddr()}
		cfg.Attestor = cs[0].cfg.Attestor.(*keyAttestor).withSelf("late")
		return cfg
	}())
	testutil.Wait(t, 10*time.Second, "the late joiner holds node1's catalog", func() bool {
		return late.Catalog().Version("node1") == p.version && hasInstance(late, "web", "web-2")
	})
	for _, c := range append(cs, late) {
		for reason, n := range c.Stats().Refused {
			if n != 0 {
				t.Errorf("%s refused %d honest deltas as %s", c.cfg.NodeName, n, reason)
			}
		}
	}
}

func (a *keyAttestor) withSelf(name string) *keyAttestor { return &keyAttestor{self: name, dir: a.dir} }

// TestSignedCatalogRefusesForgery is what the signature is for: a member
// holding the gossip key (here, any member) cannot publish, change, drop or
// resurrect another owner's services, and every refusal is counted.
func TestSignedCatalogRefusesForgery(t *testing.T) {
	cs, dir := startSignedCluster(t, 3)
	owner, liar, target := cs[0], cs[1], cs[2]
	p := newPublisher(owner)
	p.put(&Service{ID: "web-1", Name: "web", Port: 80})
	p.put(&Service{ID: "web-2", Name: "web", Port: 81})
	waitEvery(t, cs, 5*time.Second, "node0's catalog everywhere", func(c *Cluster) bool {
		return c.Catalog().Version("node0") == p.version && hasInstance(c, "web", "web-2")
	})
	honest, _ := owner.Catalog().deltaSince("node0", 0)
	next := NextVersion(p.version, time.Now())
	evil := Record{ID: "evil", Version: next, Service: &Service{ID: "evil", Name: "web", Port: 6666}}
	// The owner's genuine signature of its next state, which adds web-3.
	web3 := Record{ID: "web-3", Version: next, Service: &Service{ID: "web-3", Name: "web", Port: 82}}
	nextState := Delta{Owner: "node0", Version: next, Full: true, Records: append(append([]Record(nil), honest.Records...), web3)}
	liarSigns(t, &nextState, &keyAttestor{self: "node0", dir: dir})
	nextAtt := nextState.Att

	refused := func(reason string) uint64 { return target.Stats().Refused[reason] }
	cases := []struct {
		name   string
		delta  Delta
		reason string
	}{
		{"unsigned", Delta{Owner: "node0", Since: p.version, Version: next, Records: []Record{evil}}, RefusedUnsigned},
		{"signed by the liar as itself", func() Delta {
			d := Delta{Owner: "node0", Version: next, Full: true, Records: []Record{evil}}
			liarSigns(t, &d, &keyAttestor{self: "node1", dir: dir})
			return d
		}(), RefusedSignature},
		{"the owner's signature, claimed for a newer version", func() Delta {
			d := Delta{Owner: "node0", Since: p.version, Version: next, Records: []Record{evil}}
			att := *honest.Att
			att.Version = next
			d.Att = &att
			return d
		}(), RefusedSignature},
		{"the owner's signature over other records", Delta{Owner: "node0", Since: p.version, Version: next,
			Records: []Record{evil}, Att: nextAtt}, RefusedDigest},
		{"the owner's signature, full state with services dropped", Delta{Owner: "node0", Since: p.version, Version: next,
			Full: true, Records: honest.Records[:1], Att: nextAtt}, RefusedDigest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := refused(tc.reason)
			pushRaw(t, liar, target, tc.delta)
			if got := refused(tc.reason); got != before+1 {
				t.Errorf("refusals for %q went %d → %d, want one more", tc.reason, before, got)
			}
			if hasInstance(target, "web", "evil") {
				t.Fatal("the forged service was applied")
			}
			if v := target.Catalog().Version("node0"); v != p.version {
				t.Errorf("node0 moved to version %d on the target", v)
			}
		})
	}
	// The control: the records the owner signed, relayed by the same
	// member with the same signature, are taken.
	pushRaw(t, liar, target, Delta{Owner: "node0", Since: p.version, Version: next, Records: []Record{web3}, Att: nextAtt})
	if !hasInstance(target, "web", "web-3") || target.Catalog().Version("node0") != next {
		t.Fatal("the owner's own signed delta, relayed, was not applied")
	}
	for _, c := range cs {
		if hasInstance(c, "web", "evil") {
			t.Errorf("%s holds the forged service", c.cfg.NodeName)
		}
	}
}

// liarSigns signs the full state d with a's key: as a member would that
// signs another owner's catalog with its own certificate, or, with the
// owner's key, as the owner itself.
func liarSigns(t *testing.T, d *Delta, a *keyAttestor) {
	t.Helper()
	live := map[string]*Record{}
	for i := range d.Records {
		live[d.Records[i].ID] = &d.Records[i]
	}
	digest := digestOf(live)
	sig, cert, err := a.Sign(headMessage(d.Owner, d.Version, digest))
	if err != nil {
		t.Fatal(err)
	}
	d.Att = &Attestation{Version: d.Version, Digest: digest, Sig: sig, Cert: cert}
}

// TestDigestAfterMatchesApply checks the digest a receiver computes before
// applying against the state apply then leaves: they must agree for every
// kind of delta, or honest deltas would be refused.
func TestDigestAfterMatchesApply(t *testing.T) {
	svc := func(id string) *Service {
		return &Service{ID: id, Name: "web", Meta: map[string]string{"b": "2", "a": "1"}}
	}
	o := newOwnerState()
	steps := []Delta{
		{Version: 10, Full: true, Records: []Record{{ID: "a", Version: 5, Service: svc("a")}, {ID: "b", Version: 10, Service: svc("b")}}},
		{Since: 10, Version: 12, Records: []Record{{ID: "a", Version: 12, Deleted: true}, {ID: "c", Version: 11, Service: svc("c")}}},
		// A stale record inside a newer delta is skipped by apply.
		{Since: 5, Version: 13, Records: []Record{{ID: "b", Version: 9, Service: svc("old-b")}, {ID: "d", Version: 13, Service: svc("d")}}},
		{Version: 20, Full: true, Records: []Record{{ID: "c", Version: 11, Service: svc("c")}, {ID: "z", Version: 21, Service: svc("z")}}},
	}
	for i, d := range steps {
		want := o.digestAfter(&d)
		if res := o.apply(&d); res != applyApplied {
			t.Fatalf("step %d: %v", i, res)
		}
		live := map[string]*Record{}
		for id, r := range o.records {
			if !r.Deleted {
				live[id] = &r
			}
		}
		if got := digestOf(live); string(got) != string(want) {
			t.Errorf("step %d: digest before apply %x, of the state after %x", i, want, got)
		}
	}
}

// TestSignedCatalogRefusesForgedPullReplies: a pull is answered by
// whichever peer is asked, so its reply is checked like a push.
func TestSignedCatalogRefusesForgedPullReplies(t *testing.T) {
	cs, dir := startSignedCluster(t, 3)
	owner, liar, target := cs[0], cs[1], cs[2]
	p := newPublisher(owner)
	p.put(&Service{ID: "web-1", Name: "web", Port: 80})
	waitEvery(t, cs, 5*time.Second, "node0's catalog everywhere", func(c *Cluster) bool {
		return c.Catalog().Version("node0") == p.version
	})
	// The liar's replica of node0 is replaced by a newer, forged state it
	// signs itself, as a member with the gossip key could.
	next := NextVersion(p.version, time.Now())
	forged := Delta{Owner: "node0", Version: next, Full: true,
		Records: []Record{{ID: "evil", Version: next, Service: &Service{ID: "evil", Name: "web", Port: 6666}}}}
	liarSigns(t, &forged, &keyAttestor{self: "node1", dir: dir})
	liar.catalog.mu.Lock()
	o := newOwnerState()
	o.apply(&forged)
	liar.catalog.owners["node0"] = o
	liar.catalog.mu.Unlock()

	before := target.Stats().Refused[RefusedSignature]
	target.pull.want("node0", next, liar.cfg.NodeName)
	testutil.Wait(t, 5*time.Second, "the forged pull reply refused", func() bool {
		return target.Stats().Refused[RefusedSignature] > before
	})
	if hasInstance(target, "web", "evil") || target.Catalog().Version("node0") != p.version {
		t.Fatal("the target applied a forged pull reply")
	}
}

// TestSignedCatalogForgeryRefusedByEveryMember: a member that holds the
// gossip key (every member here is sealed with it) pushes deltas for
// another node's name to every other member, signed as itself or not at
// all. Each member refuses each one and counts it; the owner, which never
// takes a delta about itself, ignores them; none holds the forged service
// and the owner's version stays where the owner put it.
func TestSignedCatalogForgeryRefusedByEveryMember(t *testing.T) {
	dir := &keyDir{}
	cs := startClusterWith(t, 5, func(_ int, cfg *Config) {
		cfg.Keys = []string{testKey(1)}
		cfg.Attestor = &keyAttestor{self: cfg.NodeName, dir: dir}
	})
	owner, liar := cs[0], cs[1]
	p := newPublisher(owner)
	p.put(&Service{ID: "web-1", Name: "web", Port: 80})
	waitEvery(t, cs, 5*time.Second, "node0's catalog everywhere", func(c *Cluster) bool {
		return c.Catalog().Version("node0") == p.version
	})
	next := NextVersion(p.version, time.Now())
	evil := Record{ID: "evil", Version: next, Service: &Service{ID: "evil", Name: "web", Port: 6666}}
	signedByLiar := Delta{Owner: "node0", Version: next, Full: true, Records: []Record{evil}}
	liarSigns(t, &signedByLiar, &keyAttestor{self: "node1", dir: dir})
	unsigned := Delta{Owner: "node0", Since: p.version, Version: next, Records: []Record{evil}}

	pushRaw(t, liar, owner, signedByLiar, unsigned)
	for _, target := range cs[2:] {
		before := target.Stats().Refused
		pushRaw(t, liar, target, signedByLiar)
		pushRaw(t, liar, target, unsigned)
		after := target.Stats().Refused
		if after[RefusedSignature] != before[RefusedSignature]+1 || after[RefusedUnsigned] != before[RefusedUnsigned]+1 {
			t.Errorf("%s: refusals %v → %v, want one more signature and one more unsigned", target.cfg.NodeName, before, after)
		}
	}
	// Give relays and anti-entropy time to spread anything that slipped.
	testutil.Holds(t, 3*owner.cfg.SyncInterval, "no member holding the forged service", func() bool {
		for _, c := range cs {
			if c == liar {
				continue
			}
			if hasInstance(c, "web", "evil") || c.Catalog().Version("node0") != p.version {
				return false
			}
		}
		return true
	})
}
