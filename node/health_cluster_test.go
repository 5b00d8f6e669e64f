package node

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/gossip"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

func TestCheckFailureLeavesPassingEverywhere(t *testing.T) {
	b := newCheckBackend(t, nil)
	as := startAgents(t, 5)
	owner := as[0]
	putOK(t, owner, "/v1/agent/service/register", httpService("web-1", "web", b.url, nil))
	putOK(t, as[4], "/v1/agent/service/register", map[string]any{"ID": "web-2", "Name": "web"})
	waitPassingEverywhere(t, as, "web", "web-1,web-2", 10*time.Second)

	b.code.Store(http.StatusInternalServerError)
	start := time.Now()
	waitPassingEverywhere(t, as, "web", "web-2", 10*time.Second)
	t.Logf("web-1 out of ?passing on all 5 agents %v after its backend failed", time.Since(start).Round(time.Millisecond))
	for _, a := range as {
		if c, ok := healthCheckOf(t, a, "web", "web-1", "chk-web-1"); !ok || c.Status != "critical" {
			t.Errorf("%s: chk-web-1 = %+v (found %v), want critical", a.NodeName(), c, ok)
		}
	}

	b.code.Store(http.StatusOK)
	start = time.Now()
	waitPassingEverywhere(t, as, "web", "web-1,web-2", 10*time.Second)
	t.Logf("web-1 back in ?passing on all 5 agents %v after its backend recovered", time.Since(start).Round(time.Millisecond))
}

// commitsWhile counts the versions a's registry commits while it polls
// until done holds.
func commitsWhile(t *testing.T, a *Agent, timeout time.Duration, what string, done func() bool) int {
	t.Helper()
	last, commits := a.reg.current().Version, 0
	testutil.Wait(t, timeout, what, func() bool {
		if v := a.reg.current().Version; v != last {
			last, commits = v, commits+1
		}
		return done()
	})
	return commits
}

func TestCheckResultsDoNotFloodGossip(t *testing.T) {
	as := startAgents(t, 5)
	owner := as[0]
	const runs = 20

	t.Run("flapping", func(t *testing.T) {
		// Up and down on alternate requests: never 3 of a kind in a row.
		b := newCheckBackend(t, func(n int64) (int, string) {
			if n%2 == 0 {
				return http.StatusInternalServerError, "down"
			}
			return http.StatusOK, "up"
		})
		putOK(t, owner, "/v1/agent/service/register", httpService("flappy-1", "flappy", b.url,
			map[string]any{"Status": "passing", "FailuresBeforeCritical": 3, "SuccessBeforePassing": 3}))
		waitPassingEverywhere(t, as, "flappy", "flappy-1", 10*time.Second)
		pushes := owner.Cluster().Stats().PushesOut
		start := b.hits.Load()
		commits := commitsWhile(t, owner, 20*time.Second, fmt.Sprintf("%d check runs", runs), func() bool {
			return b.hits.Load() >= start+runs
		})
		pushes = owner.Cluster().Stats().PushesOut - pushes
		t.Logf("%d flapping check runs: %d commits, %d pushes", runs, commits, pushes)
		if commits > 2 || pushes > 6 {
			t.Errorf("%d flapping check runs cost %d commits and %d pushes, want at most 2 and 6", runs, commits, pushes)
		}
		if got := passingSet(t, as[4], "flappy"); got != "flappy-1" {
			t.Errorf("flappy passing on n4 = [%s], want flappy-1: damping should hold it", got)
		}
		putOK(t, owner, "/v1/agent/service/deregister/flappy-1", nil) // its backend goes with this subtest
	})

	t.Run("changing output", func(t *testing.T) {
		b := newCheckBackend(t, func(n int64) (int, string) {
			return http.StatusOK, fmt.Sprintf("served request %d at %s", n, time.Now().Format(time.RFC3339Nano))
		})
		putOK(t, owner, "/v1/agent/service/register", httpService("chatty-1", "chatty", b.url, nil))
		waitPassingEverywhere(t, as, "chatty", "chatty-1", 10*time.Second)
		pushes := owner.Cluster().Stats().PushesOut
		start := b.hits.Load()
		commits := commitsWhile(t, owner, 20*time.Second, fmt.Sprintf("%d check runs", runs), func() bool {
			return b.hits.Load() >= start+runs
		})
		pushes = owner.Cluster().Stats().PushesOut - pushes
		t.Logf("%d passing check runs with new output each: %d commits, %d pushes", runs, commits, pushes)
		if commits > 2 || pushes > 6 {
			t.Errorf("%d check runs with new output cost %d commits and %d pushes, want at most 2 and 6", runs, commits, pushes)
		}
	})
}

func TestFailedNodeInstancesCritical(t *testing.T) {
	b := newCheckBackend(t, nil)
	as := startAgents(t, 4)
	dir := t.TempDir()
	seed := as[0].Cluster().LocalMember().GossipAddr()
	victim := startAgent(t, "n4", func(c *Config) { c.DataDir, c.Join = dir, []string{seed} })
	as = append(as, victim)
	testutil.Wait(t, 15*time.Second, "5 alive members everywhere", func() bool {
		for _, a := range as {
			alive := 0
			for _, m := range a.Cluster().Catalog().Members() {
				if m.Status == gossip.StatusAlive {
					alive++
				}
			}
			if alive != 5 {
				return false
			}
		}
		return true
	})
	putOK(t, victim, "/v1/agent/service/register", httpService("api-4", "api", b.url, nil))
	putOK(t, as[1], "/v1/agent/service/register", map[string]any{"ID": "api-1", "Name": "api"})
	waitPassingEverywhere(t, as, "api", "api-1,api-4", 10*time.Second)

	gossipAddr, rpcAddr := victim.Cluster().LocalMember().GossipAddr(), victim.Cluster().RPCAddr()
	if err := victim.Shutdown(); err != nil { // no Leave: a crash as the others see it
		t.Fatal(err)
	}
	start := time.Now()
	survivors := as[:4]
	waitPassingEverywhere(t, survivors, "api", "api-1", 15*time.Second)
	t.Logf("api-4 out of ?passing on all 4 survivors %v after its agent died", time.Since(start).Round(time.Millisecond))
	for _, a := range survivors {
		var serf, check HealthCheck
		testutil.Wait(t, 10*time.Second, "serfHealth of n4 critical on "+a.NodeName(), func() bool {
			serf, _ = healthCheckOf(t, a, "api", "api-4", serfHealthID)
			check, _ = healthCheckOf(t, a, "api", "api-4", "chk-api-4")
			return serf.Status == "critical"
		})
		if serf.Node != "n4" || check.Status != "passing" {
			t.Errorf("%s: serfHealth %+v, chk-api-4 %+v: want n4's serfHealth critical, its last check result kept",
				a.NodeName(), serf, check)
		}
	}
	t.Logf("serfHealth of n4 critical on all 4 survivors %v after its agent died", time.Since(start).Round(time.Millisecond))

	// Back with the same name, address and data dir: passing again without
	// anyone registering anything.
	start = time.Now()
	revived := startAgent(t, "n4", func(c *Config) {
		c.DataDir, c.Join = dir, []string{seed}
		c.BindAddr, c.RPCAddr = gossipAddr, rpcAddr
	})
	as[4] = revived
	waitPassingEverywhere(t, as, "api", "api-1,api-4", 15*time.Second)
	t.Logf("api-4 back in ?passing on all 5 agents %v after the restart", time.Since(start).Round(time.Millisecond))
	if _, ok := revived.reg.current().Services["api-4"]; !ok {
		t.Error("the restarted agent lost api-4")
	}
}

// TestHealthPropagationLatency measures how long a check result takes to
// reach every agent's catalog. Run it with
//
//	SHOAL_MEASURE=1 go test -run TestHealthPropagationLatency -v ./node/
func TestHealthPropagationLatency(t *testing.T) {
	if os.Getenv("SHOAL_MEASURE") != "1" {
		t.Skip("a measurement: set SHOAL_MEASURE=1 to run it")
	}
	const trials = 20
	b := newCheckBackend(t, nil)
	as := startAgents(t, 5)
	owner := as[0]
	putOK(t, owner, "/v1/agent/service/register",
		httpService("web-1", "web", b.url, map[string]any{"Interval": "1s", "Timeout": "500ms"}))
	waitPassingEverywhere(t, as, "web", "web-1", 10*time.Second)

	// everywhere reports whether web-1's checks are passing (or not) in
	// every agent's catalog. It looks at the checks alone: a member falsely
	// suspected under load must not pass for a check result.
	everywhere := func(passing bool) bool {
		for _, a := range as {
			found := false
			for _, in := range a.Cluster().Catalog().Instances("web") {
				if in.Service.ID == "web-1" {
					found = (in.Service.Status() == gossip.StatusPassing) == passing
				}
			}
			if !found {
				return false
			}
		}
		return true
	}
	flaps := func() int {
		n := 0
		for _, a := range as {
			for _, m := range a.Cluster().Catalog().Members() {
				if m.Status != gossip.StatusAlive {
					n++
				}
			}
		}
		return n
	}
	committed := func(passing bool) bool {
		c, _ := owner.reg.current().findCheck("chk-web-1")
		return c != nil && (c.Status == gossip.StatusPassing) == passing
	}
	type sample struct{ commitToAll, serveToAll, flipToAll time.Duration }
	suspected := 0
	measure := func(code int, passing bool) sample {
		time.Sleep(rand.N(time.Second)) // a random phase against the check interval
		b.flippedAt.Store(0)
		flip := time.Now()
		b.code.Store(int64(code))
		var commit time.Time
		deadline := flip.Add(10 * time.Second)
		for !everywhere(passing) {
			if commit.IsZero() && committed(passing) {
				commit = time.Now()
			}
			if flaps() > 0 {
				suspected++
			}
			if time.Now().After(deadline) {
				t.Fatalf("web-1 not %v everywhere 10s after the backend answered %d", passing, code)
			}
			time.Sleep(time.Millisecond)
		}
		all := time.Now()
		if commit.IsZero() {
			commit = all
		}
		served := b.flippedAt.Load()
		if served == 0 {
			t.Fatalf("web-1 %v everywhere, yet the backend never served a %d", passing, code)
		}
		return sample{all.Sub(commit), all.Sub(time.Unix(0, served)), all.Sub(flip)}
	}
	var down, up []sample
	for range trials {
		down = append(down, measure(http.StatusInternalServerError, false))
		up = append(up, measure(http.StatusOK, true))
	}
	report := func(what string, ss []sample) {
		pick := func(f func(sample) time.Duration) string {
			ds := make([]time.Duration, len(ss))
			for i, s := range ss {
				ds[i] = f(s)
			}
			slices.Sort(ds)
			p := func(q float64) time.Duration { return ds[int(math.Ceil(q*float64(len(ds))))-1] }
			return fmt.Sprintf("p50 %v p90 %v p99 %v", p(0.5).Round(10*time.Microsecond),
				p(0.9).Round(10*time.Microsecond), p(0.99).Round(10*time.Microsecond))
		}
		t.Logf("%s (%d trials, 5 agents):", what, len(ss))
		t.Logf("  commit on owner -> all 5 catalogs:   %s", pick(func(s sample) time.Duration { return s.commitToAll }))
		t.Logf("  backend served it -> all 5 catalogs: %s", pick(func(s sample) time.Duration { return s.serveToAll }))
		t.Logf("  backend flipped -> all 5 catalogs:   %s", pick(func(s sample) time.Duration { return s.flipToAll }))
	}
	if suspected > 0 {
		t.Logf("a member was not alive in some catalog at %d polls", suspected)
	}
	report("failure (200 -> 500, out of passing)", down)
	report("recovery (500 -> 200, back to passing)", up)
}
