//go:build linux

package main

import (
	"fmt"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Bounds the scenarios assert, for the default (LAN) gossip profile: probe
// every 1 s with a 500 ms timeout, suspicion multiplier 4, serf reconnects
// to failed members every 30 s.
const (
	// nsDetectBound bounds "a cut, frozen or killed host is failed on every
	// other host". Each member probes the others in turn, so the host is
	// first probed within N probe intervals (5 s at N = 5), then suspected
	// after the 0.5 s probe timeout; Lifeguard's suspicion timeout lies
	// between 4 s (4 × 1 s × max(1, log10 N), once enough other members
	// confirm the suspicion) and 6 × that, 24 s, with too few confirmers,
	// as on the two-member side of a partition.
	// 5 + 0.5 + 24 = 29.5 s, plus gossip and polling: 35 s.
	nsDetectBound = 35 * time.Second
	// nsRejoinBound bounds "a healed partition is alive and converged on
	// every host": both sides think the other failed, so nothing but
	// serf's reconnect, one random failed member every 30 s, brings them
	// together; then tags and the catalog pull follow within seconds. Two
	// reconnect rounds plus slack: 75 s.
	nsRejoinBound = 75 * time.Second
	// nsUpdateBound bounds a registration reaching every host that can be
	// reached (eager push; anti-entropy every 10 s as the backstop).
	nsUpdateBound = 15 * time.Second
	// nsSteady is how long the "nothing happens" scenarios watch:
	// members stay alive, that is, for two minutes as the issue asks.
	nsSteady = 2 * time.Minute
	// nsCutFor is how long the cut host stays cut: longer than the load's
	// 30 s request timeout.
	nsCutFor = 40 * time.Second
	// nsConcurrentScenarios bounds how many of TestNetns's scenarios run
	// at once (see there).
	nsConcurrentScenarios = 6
)

// TestNetns runs issue 5's fault scenarios on real shoal processes, each
// host in a network namespace of its own (netns_harness_test.go), with
// default gossip timing. The scenarios are independent clusters on their
// own bridges and subnets, up to nsConcurrentScenarios at once: the test
// binary's -parallel limit (GOMAXPROCS, 2 here) would serialise t.Parallel
// subtests, so each scenario's t.Run is called from a goroutine of its own
// instead, and a semaphore bounds them.
//
// All eleven at once, next to the other packages' tests, once left this
// process's polls of every cluster timing out for a minute while the
// agents gossiped without a single suspicion, and seven scenarios failed
// on it (up to 40 runnable threads on 2 cores). Even alone, all at once
// made the 500 requests a second of KillBackendUnderLoad take 1.7 s at the
// median. Six at a time, longest first, the whole test takes no longer
// (2m12s against 2m19s) and that median is 0.9 ms: the four two-minute
// watches start with Partition2v3 and CutHostUnderLoad, and the short
// scenarios run as those end.
//
// Reproduce: go test -run TestNetns -v ./cmd/shoal/ (as root).
func TestNetns(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping netns fault scenarios in -short mode: they build shoal and run minutes")
	}
	t.Parallel()
	begin := time.Now()
	nsWatchStalls(t)
	if nsUnavailable() == "" {
		nsSweep(t)
	}
	bins := nsBuild(t, t.TempDir())
	scenarios := []struct {
		name  string
		netns bool
		run   func(*testing.T, nsBins)
	}{
		// Longest first; six at a time, with no other test running,
		// they took 128, 124, 125, 126, 83, 65, 30, 17, 11, 9 and 11 s.
		{"Steady5x20", true, nsSteady5x20},
		{"OneWayBlock", true, func(t *testing.T, b nsBins) { nsDegradedLink(t, b, "one-way") }},
		{"UDPBlock", true, func(t *testing.T, b nsBins) { nsDegradedLink(t, b, "udp") }},
		{"Loss10", true, nsLoss},
		{"Partition2v3", true, nsPartition},
		{"CutHostUnderLoad", true, nsCutHost},
		{"WipedRestart", true, nsWipedRestart},
		{"FreezeAgent", true, nsFreeze},
		{"KillAfterRegister100", false, nsKillLoop},
		{"BlackHoleHost", true, nsBlackHole},
		{"KillBackendUnderLoad", true, nsKillBackend},
	}
	var wg sync.WaitGroup
	running := make(chan struct{}, nsConcurrentScenarios)
	for _, sc := range scenarios {
		wg.Add(1)
		running <- struct{}{}
		go func() {
			defer func() { <-running; wg.Done() }()
			t.Run(sc.name, func(t *testing.T) {
				if sc.netns {
					nsRequire(t)
				}
				sc.run(t, bins)
			})
		}()
	}
	wg.Wait()
	t.Logf("all scenarios done in %v", time.Since(begin).Round(time.Second))
}

// nsSteady5x20: 5 hosts × 20 services, all 100 visible everywhere, and no
// member other than alive on any host, polled every 250 ms for 2 minutes.
func nsSteady5x20(t *testing.T, bins nsBins) {
	c := nsNewCluster(t, bins, 5)
	want := map[string]bool{}
	t0 := time.Now()
	for _, h := range c.hosts {
		for j := range 20 {
			id := fmt.Sprintf("%s-svc-%02d", h.name, j)
			h.register(id, id, false)
			want[h.name+"/"+id] = true
		}
	}
	c.logf("registered 100 services in %v", time.Since(t0).Round(time.Millisecond))
	took := c.waitCatalog(nsUpdateBound, c.hosts, want)
	c.logf("RESULT all 100 services on all 5 hosts %v after the last registration", took.Round(time.Millisecond))
	m := c.monitorMembers(c.hosts, 250*time.Millisecond)
	time.Sleep(nsSteady)
	polls := c.checkNoFlaps(t, m, nsSteady)
	c.waitCatalog(nsUpdateBound, c.hosts, want)
	c.logf("RESULT steady: %d member polls in %v, no flap; all 100 still everywhere", polls, nsSteady)
}

// nsKillBackend: 500 GET/s through h1's proxy to "web" on h2 and h3 (HTTP
// checks every second); h2's backend is SIGKILLed: no request fails.
func nsKillBackend(t *testing.T, bins nsBins) {
	c := nsNewCluster(t, bins, 3)
	h1, h2, h3 := c.host(1), c.host(2), c.host(3)
	h2.register("web-h2", "web", true)
	h3.register("web-h3", "web", true)
	c.waitPassing(h1, "web", map[string]bool{"web-h2": true, "web-h3": true})
	load := c.startLoad(h1, "web", 500)
	nsPoll(t, 30*time.Second, 50*time.Millisecond, "3 s of load", func() (bool, string) {
		sent, _ := load.progress()
		return sent >= 1500, fmt.Sprint(sent, " sent")
	})
	h2.killBackend()
	killed := time.Now()
	killedAt := load.elapsed()
	c.logf("h2's backend killed")
	critical := c.waitPassing(h1, "web", map[string]bool{"web-h3": true})
	c.logf("web-h2 out of ?passing on h1 %v after the kill", critical.Round(time.Millisecond))
	time.Sleep(time.Until(killed.Add(7 * time.Second)))
	r := load.finish()
	c.logf("RESULT kill backend under load: %v; max latency before the kill %v, in the 2 s after it %v, later %v",
		r, r.maxIn(0, killedAt), r.maxIn(killedAt, killedAt+2*time.Second), r.maxIn(killedAt+2*time.Second, time.Hour))
	if r.failed > 0 {
		t.Errorf("%d of %d requests failed, want 0: %q", r.failed, r.sent, r.errs)
	}
	if r.sent < 4000 {
		t.Errorf("only %d requests sent in about 10 s at 500/s: the load did not run", r.sent)
	}
}

// nsCutHost: GETs through h1's proxy to "web" on h2, h3 and h4; h4 is cut
// off from every other host: no request fails, h4 is failed on every other
// host within nsDetectBound, and after the cut heals all are alive and the
// catalogs agree again.
func nsCutHost(t *testing.T, bins nsBins) {
	c := nsNewCluster(t, bins, 4)
	h1, h4 := c.host(1), c.host(4)
	want := map[string]bool{}
	wantPassing := map[string]bool{}
	for _, h := range c.hosts[1:] {
		id := "web-" + h.name
		h.register(id, "web", true)
		want[h.name+"/"+id] = true
		wantPassing[id] = true
	}
	c.waitPassing(h1, "web", wantPassing)
	c.waitCatalog(nsUpdateBound, c.hosts, want)
	load := c.startLoad(h1, "web", 200)
	nsPoll(t, 30*time.Second, 50*time.Millisecond, "3 s of load", func() (bool, string) {
		sent, _ := load.progress()
		return sent >= 600, fmt.Sprint(sent, " sent")
	})

	c.isolate(h4)
	cutAt := time.Now()
	cutAtLoad := load.elapsed()
	c.logf("h4 cut off")
	failed := c.allStatus(nsAlive)
	failed["h4"] = nsFailed
	var mu sync.Mutex
	detect := map[string]time.Duration{}
	var wg sync.WaitGroup
	for _, h := range c.hosts[:3] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, ok := nsPollNoFail(nsDetectBound, 100*time.Millisecond, func() bool {
				got, err := h.members()
				return err == nil && got["h4"] == nsFailed
			})
			mu.Lock()
			defer mu.Unlock()
			if ok {
				detect[h.name] = d
			}
		}()
	}
	wg.Wait()
	if len(detect) != 3 {
		t.Fatalf("h4 failed on only %v within %v of the cut", detect, nsDetectBound)
	}
	var slowest time.Duration
	for _, d := range detect {
		slowest = max(slowest, d)
	}
	c.logf("RESULT h4 failed on every other host %v after the cut (per host: %v)", slowest.Round(time.Millisecond), detect)
	delete(wantPassing, "web-h4")
	c.waitPassing(h1, "web", wantPassing)
	// Stay cut longer than the clients' 30 s timeout: a request stuck on a
	// connection to h4 must be rescued by the proxy, not by the heal.
	time.Sleep(time.Until(cutAt.Add(nsCutFor)))

	c.heal()
	healAt := time.Now()
	c.logf("cut healed after %v", healAt.Sub(cutAt).Round(time.Millisecond))
	alive := c.waitStatuses(nsRejoinBound, c.hosts, c.allStatus(nsAlive))
	conv := c.waitCatalog(nsRejoinBound-alive, c.hosts, want)
	wantPassing["web-h4"] = true
	c.waitPassing(h1, "web", wantPassing)
	back := time.Since(healAt)
	c.logf("RESULT after the heal: all alive everywhere in %v, catalogs equal in %v more, web-h4 passing on h1 %v after the heal",
		alive.Round(time.Millisecond), conv.Round(time.Millisecond), back.Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	r := load.finish()
	c.logf("RESULT cut host under load: %v; max latency before the cut %v, during it %v, after the heal %v",
		r, r.maxIn(0, cutAtLoad), r.maxIn(cutAtLoad, cutAtLoad+healAt.Sub(cutAt)), r.maxIn(cutAtLoad+healAt.Sub(cutAt), time.Hour))
	if r.failed > 0 {
		t.Errorf("%d of %d requests failed, want 0: %q", r.failed, r.sent, r.errs)
	}
	if r.byBackend["h4"] == 0 {
		t.Errorf("h4 served nothing: the load did not cover the cut instance")
	}
}

// nsPartition: 2 | 3 for 60 s with registrations and deregistrations on
// both sides, then heal: every host converges to the same catalog, and
// nothing deregistered comes back.
func nsPartition(t *testing.T, bins nsBins) {
	c := nsNewCluster(t, bins, 5)
	left, right := c.hosts[:2], c.hosts[2:]
	// state is each owner's catalog as it should be: owner → IDs.
	state := map[string]map[string]bool{}
	reg := func(h *nsHost, id string) {
		h.register(id, "p", false)
		state[h.name][id] = true
	}
	dereg := func(h *nsHost, id string) {
		h.deregister(id)
		delete(state[h.name], id)
	}
	catalog := func(owners []*nsHost) map[string]bool {
		out := map[string]bool{}
		for _, h := range owners {
			for id := range state[h.name] {
				out[h.name+"/"+id] = true
			}
		}
		return out
	}
	for _, h := range c.hosts {
		state[h.name] = map[string]bool{}
		for j := range 4 {
			reg(h, fmt.Sprintf("%s-a%d", h.name, j))
		}
	}
	c.waitCatalog(nsUpdateBound, c.hosts, catalog(c.hosts))
	atCut := catalog(c.hosts)

	c.partition(left, right)
	cutAt := time.Now()
	c.logf("partitioned h1,h2 | h3,h4,h5")
	var removed []string
	change := func(round int) {
		for _, h := range c.hosts {
			id := fmt.Sprintf("%s-a%d", h.name, round)
			dereg(h, id)
			removed = append(removed, h.name+"/"+id)
			reg(h, fmt.Sprintf("%s-b%d", h.name, round))
		}
	}
	time.Sleep(2 * time.Second)
	change(0) // before failure detection
	// Each side sees the other failed.
	leftView, rightView := map[string]int{}, map[string]int{}
	for _, h := range left {
		leftView[h.name], rightView[h.name] = nsAlive, nsFailed
	}
	for _, h := range right {
		leftView[h.name], rightView[h.name] = nsFailed, nsAlive
	}
	c.waitStatuses(time.Until(cutAt.Add(nsDetectBound)), left, leftView)
	c.waitStatuses(time.Until(cutAt.Add(nsDetectBound)), right, rightView)
	c.logf("RESULT partition: each side sees the other failed %v after the cut", time.Since(cutAt).Round(time.Millisecond))
	change(1) // after it
	// A registration then removed while partitioned: a tombstone the other
	// side never saw the record of.
	for _, h := range c.hosts {
		id := h.name + "-c"
		reg(h, id)
		dereg(h, id)
		removed = append(removed, h.name+"/"+id)
	}
	// Updates still arrive within each side; the other side's instances
	// stay as they were at the cut (critical).
	for _, side := range [][]*nsHost{left, right} {
		want := catalog(side)
		for k := range atCut {
			var other bool
			for _, h := range side {
				other = other || k[:len(h.name)+1] == h.name+"/"
			}
			if !other {
				want[k] = true
			}
		}
		took := c.waitCatalog(nsUpdateBound, side, want)
		c.logf("side %s..: own updates everywhere on the side in %v", side[0].name, took.Round(time.Millisecond))
	}
	time.Sleep(time.Until(cutAt.Add(60 * time.Second)))

	c.heal()
	healAt := time.Now()
	c.logf("healed after %v", healAt.Sub(cutAt).Round(time.Millisecond))
	final := catalog(c.hosts)
	// Converging, no host may show a removed instance once it had shown
	// the final catalog: checked below by watching after convergence.
	alive := c.waitStatuses(nsRejoinBound, c.hosts, c.allStatus(nsAlive))
	conv := c.waitCatalog(nsRejoinBound-alive, c.hosts, final)
	c.logf("RESULT partition healed: all alive everywhere in %v, every catalog equal (%d instances) %v after the heal",
		alive.Round(time.Millisecond), len(final), (alive + conv).Round(time.Millisecond))
	// Nothing deregistered comes back: watch for 15 s.
	watchEnd := time.Now().Add(15 * time.Second)
	polls := 0
	for time.Now().Before(watchEnd) {
		for _, h := range c.hosts {
			got, err := h.catalog()
			if err != nil {
				continue
			}
			polls++
			for _, k := range removed {
				if got[k] {
					t.Errorf("%s: deregistered %s came back", h.name, k)
				}
			}
			if !nsSameSet(got, final) {
				t.Errorf("%s: catalog changed after convergence: %s", h.name, nsSetDiff(got, final))
			}
		}
		if t.Failed() {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	c.logf("RESULT no resurrection: %d catalog polls over 15 s after convergence, %d removed instances never seen", polls, len(removed))
}

// nsDegradedLink: between h1 and h2 of 4 hosts, packets h1 → h2 dropped
// ("one-way") or all UDP both ways ("udp"), for 2 minutes: nobody is
// declared failed (memberlist's indirect and TCP probes), and updates
// still arrive everywhere.
func nsDegradedLink(t *testing.T, bins nsBins, kind string) {
	c := nsNewCluster(t, bins, 4)
	h1, h2 := c.host(1), c.host(2)
	m := c.monitorMembers(c.hosts, 250*time.Millisecond)
	switch kind {
	case "one-way":
		c.cutOneWay(h1, h2)
	case "udp":
		c.blockUDP(h1, h2)
	}
	start := time.Now()
	c.logf("%s block between h1 and h2", kind)
	want := map[string]bool{}
	var worst time.Duration
	for round := range 3 {
		time.Sleep(time.Until(start.Add(time.Duration(round) * 40 * time.Second).Add(5 * time.Second)))
		for _, h := range []*nsHost{h1, h2} {
			id := fmt.Sprintf("%s-u%d", h.name, round)
			h.register(id, "u", false)
			want[h.name+"/"+id] = true
			if round > 0 {
				old := fmt.Sprintf("%s-u%d", h.name, round-1)
				h.deregister(old)
				delete(want, h.name+"/"+old)
			}
		}
		took := c.waitCatalog(nsUpdateBound, c.hosts, want)
		worst = max(worst, took)
		c.logf("round %d: h1's and h2's changes on every host in %v", round, took.Round(time.Millisecond))
	}
	time.Sleep(time.Until(start.Add(nsSteady)))
	polls := c.checkNoFlaps(t, m, nsSteady)
	c.heal()
	c.logf("RESULT %s block h1-h2 for %v: %d member polls, no failure; updates everywhere within %v (worst of 3 rounds)",
		kind, nsSteady, polls, worst.Round(time.Millisecond))
}

// nsLoss: 10 % of the packets every host receives are dropped, for 2
// minutes: no member is ever seen other than alive, and updates arrive.
func nsLoss(t *testing.T, bins nsBins) {
	c := nsNewCluster(t, bins, 5)
	m := c.monitorMembers(c.hosts, 250*time.Millisecond)
	c.loss(0.10)
	start := time.Now()
	c.logf("10%% loss on every host")
	want := map[string]bool{}
	var worst time.Duration
	for round := range 2 {
		time.Sleep(time.Until(start.Add(time.Duration(round) * 60 * time.Second).Add(10 * time.Second)))
		for _, h := range c.hosts {
			id := fmt.Sprintf("%s-l%d", h.name, round)
			h.register(id, "l", false)
			want[h.name+"/"+id] = true
		}
		took := c.waitCatalog(nsUpdateBound, c.hosts, want)
		worst = max(worst, took)
		c.logf("round %d: 5 registrations on every host in %v", round, took.Round(time.Millisecond))
	}
	time.Sleep(time.Until(start.Add(nsSteady)))
	polls := c.checkNoFlaps(t, m, nsSteady)
	c.heal()
	c.logf("RESULT 10%% loss for %v: %d member polls, 0 false failures; updates everywhere within %v", nsSteady, polls, worst.Round(time.Millisecond))
}

// nsFreeze: h4's agent is stopped (SIGSTOP) for 15 s: failed on every
// other host meanwhile, then (SIGCONT) alive again with its services
// intact and passing.
func nsFreeze(t *testing.T, bins nsBins) {
	c := nsNewCluster(t, bins, 4)
	h4 := c.host(4)
	want := map[string]bool{}
	wantPassing := map[string]bool{}
	for j := range 3 {
		id := fmt.Sprintf("h4-f%d", j)
		h4.register(id, "f", true)
		want["h4/"+id] = true
		wantPassing[id] = true
	}
	c.waitCatalog(nsUpdateBound, c.hosts, want)
	for _, h := range c.hosts[:3] {
		c.waitPassing(h, "f", wantPassing)
	}
	h4.signalAgent(syscall.SIGSTOP)
	stoppedAt := time.Now()
	c.logf("h4's agent stopped")
	view := c.allStatus(nsAlive)
	view["h4"] = nsFailed
	detected := c.waitStatuses(15*time.Second, c.hosts[:3], view)
	c.logf("RESULT h4 failed on h1-h3 %v after SIGSTOP", detected.Round(time.Millisecond))
	for _, h := range c.hosts[:3] {
		c.waitPassing(h, "f", map[string]bool{})
	}
	time.Sleep(time.Until(stoppedAt.Add(15 * time.Second)))
	h4.signalAgent(syscall.SIGCONT)
	contAt := time.Now()
	alive := c.waitStatuses(nsRejoinBound, c.hosts, c.allStatus(nsAlive))
	for _, h := range c.hosts[:3] {
		c.waitPassing(h, "f", wantPassing)
	}
	back := time.Since(contAt)
	c.waitCatalog(nsUpdateBound, c.hosts, want)
	var own map[string]struct{ ID string }
	if err := h4.getJSON("/v1/agent/services", &own); err != nil {
		t.Fatal(err)
	}
	if len(own) != 3 {
		t.Errorf("h4 owns %v after SIGCONT, want h4-f0..2", own)
	}
	c.logf("RESULT after SIGCONT: alive everywhere in %v, its 3 services passing everywhere in %v",
		alive.Round(time.Millisecond), back.Round(time.Millisecond))
}

// nsWipedRestart: h3 is killed and restarted under the same name with an
// empty data dir, twice: once after the others saw it failed, once at
// once. Its earlier services never come back, on any host.
func nsWipedRestart(t *testing.T, bins nsBins) {
	c := nsNewCluster(t, bins, 3)
	h3 := c.host(3)
	var gone []string
	for round, waitFailed := range []bool{true, false} {
		want := map[string]bool{}
		ids := map[string]bool{}
		for j := range 4 {
			id := fmt.Sprintf("h3-r%d-%d", round, j)
			h3.register(id, fmt.Sprintf("r%d", round), true)
			want["h3/"+id] = true
			ids[id] = true
		}
		c.waitCatalog(nsUpdateBound, c.hosts, want)
		for _, h := range c.hosts {
			c.waitPassing(h, fmt.Sprintf("r%d", round), ids)
		}
		h3.killAgent()
		if waitFailed {
			view := c.allStatus(nsAlive)
			view["h3"] = nsFailed
			d := c.waitStatuses(nsDetectBound, c.hosts[:2], view)
			c.logf("h3 killed, failed on h1 and h2 after %v", d.Round(time.Millisecond))
		}
		if err := os.RemoveAll(h3.dataDir); err != nil {
			t.Fatal(err)
		}
		for k := range want {
			gone = append(gone, k)
		}
		restartAt := time.Now()
		h3.startAgent()
		h3.waitAPI(30 * time.Second)
		fresh := fmt.Sprintf("h3-new%d", round)
		h3.register(fresh, "new", false)
		// After failure detection no host may list an old instance as
		// passing, from the restart on: the new life's alive message
		// carries its floor. Restarted at once, a host that has not yet
		// heard of the new life still shows the old one (it cannot know
		// better); once a host has dropped the old instances, they never
		// come back, for 10 s after convergence.
		final := map[string]bool{"h3/" + fresh: true}
		old := fmt.Sprintf("r%d", round)
		var conv time.Duration
		dropped := map[string]bool{}
		watch := func(h *nsHost) (bool, string) {
			p, err := h.passing(old)
			if err == nil && len(p) > 0 && (waitFailed || dropped[h.name]) {
				t.Fatalf("%s: h3's old instances %v passing again after the wiped restart", h.name, p)
			}
			if err == nil && len(p) == 0 {
				dropped[h.name] = true
			}
			got, err := h.catalog()
			if err != nil {
				return false, err.Error()
			}
			return nsSameSet(got, final), nsSetDiff(got, final)
		}
		for _, h := range c.hosts {
			nsPoll(t, nsRejoinBound, 100*time.Millisecond, h.name+" to drop h3's old instances", func() (bool, string) { return watch(h) })
		}
		conv = time.Since(restartAt)
		c.waitStatuses(nsRejoinBound, c.hosts, c.allStatus(nsAlive))
		for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
			for _, h := range c.hosts {
				if ok, state := watch(h); !ok {
					t.Fatalf("%s: catalog changed after convergence: %s", h.name, state)
				}
			}
		}
		c.logf("RESULT wiped restart (%s): old services gone and only the new one on every host %v after the restart; none came back in 10 s",
			map[bool]string{true: "after failure detection", false: "at once"}[waitFailed], conv.Round(time.Millisecond))
		// The next round's registrations replace this one's.
		h3.deregister(fresh)
		gone = append(gone, "h3/"+fresh)
		c.waitCatalog(nsUpdateBound, c.hosts, map[string]bool{})
	}
	for _, h := range c.hosts {
		got, err := h.catalog()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range gone {
			if got[k] {
				t.Errorf("%s: %s came back", h.name, k)
			}
		}
	}
}

// waitPassing waits until service name's passing instances on h are
// exactly ids, and returns how long it took.
func (c *nsCluster) waitPassing(h *nsHost, name string, ids map[string]bool) time.Duration {
	c.t.Helper()
	return nsPoll(c.t, nsDetectBound, 100*time.Millisecond, fmt.Sprintf("%s: passing %s = %v", h.name, name, ids), func() (bool, string) {
		got, err := h.passing(name)
		if err != nil {
			return false, err.Error()
		}
		return nsSameSet(got, ids), fmt.Sprint(got)
	})
}

// nsPollNoFail polls cond every interval up to timeout and reports how
// long it took to hold, or false; safe off the test goroutine.
func nsPollNoFail(timeout, interval time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for {
		if cond() {
			return time.Since(start), true
		}
		if time.Since(start) > timeout {
			return 0, false
		}
		time.Sleep(interval)
	}
}
