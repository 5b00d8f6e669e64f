package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-mesh/shoal/gossip"
)

// shoalOpts are the settings of the in-process runs.
type shoalOpts struct {
	timing        string
	registrations int
	window        time.Duration
	churnRate     float64
	churnBurst    int // services each churn event changes on one agent
	log           io.Writer
	agentLogs     bool // the agents' warnings and errors go to log too
	kills         int  // agents killed one after the other
	joinBatch     int  // agents that join at once
	memory        bool // agents talk through memory, not sockets
	// dilation is the time dilation k: every timer × k (see dilate).
	dilation float64
	// blackhole black-holes one agent and times registrations only.
	blackhole bool
}

// shoalResult is what one in-process run of n agents measured.
type shoalResult struct {
	n    int
	join time.Duration
	// regP50 and regP99 are the times from a registration until the last
	// agent holds it; regMissed counts registrations some agent never got.
	regP50, regP99 time.Duration
	regMissed      int
	// kill is the median, over the kills, of the time from killing an
	// agent until the last other agent reports it failed; killMissed
	// counts agents that did not by killDeadline.
	kill, killDeadline time.Duration
	killMissed         int
	// falseFailures counts the times an agent saw another one, never
	// killed, fail, from the end of the join to the end of the run.
	falseFailures int
	idle, churn   trafficWindow
	// heapMiB and goroutines are per agent, above what the process used
	// before the agents started.
	heapMiB, goroutines float64
	// churnRate is the changes per second of the churn window.
	churnRate float64
	// regOnly: only join and registrations were measured (--blackhole).
	regOnly bool
	// dilation is the run's k: its CPU % are per second of the agents'
	// time, k times the wall time's.
	dilation float64
}

// bytesPerChange is what one change costs the whole cluster in bytes:
// the churn window's traffic above the idle window's, per change.
func (r shoalResult) bytesPerChange() float64 {
	if r.churnRate <= 0 {
		return 0
	}
	return (r.churn.perNode() - r.idle.perNode()) * float64(r.n) / r.churnRate
}

// cpuPerChange is the CPU one change costs the whole cluster, in ms.
func (r shoalResult) cpuPerChange() float64 {
	if r.churnRate <= 0 {
		return 0
	}
	return 10 * (r.churn.cpuPercent() - r.idle.cpuPercent()) / r.churnRate
}

// trafficWindow is the gossip traffic and the CPU of one measuring window.
type trafficWindow struct {
	n int
	// d is the window's length in the agents' time: wall time ÷ the
	// dilation.
	d time.Duration
	// udp and tcp are memberlist's bytes (gossip and probes; push/pull
	// syncs), catalog the catalog path's, sent by all agents.
	udp, tcp, catalog uint64
	cpu               time.Duration
	// pushPulls are the full-state syncs in the window; period is how
	// often each agent starts one (memberlist's scaled push/pull
	// interval), in the agents' time.
	pushPulls uint64
	period    time.Duration
}

// tcpPerNode is memberlist's TCP bytes per agent per second in steady
// state: the bytes of one sync times one sync per agent per period. A
// window shorter than the period catches some agents' syncs and not
// others' (they are not spread evenly: each agent's phase is set when it
// starts), so the count of its own syncs would be noise.
func (w trafficWindow) tcpPerNode() float64 {
	if w.pushPulls == 0 || w.period <= 0 {
		return float64(w.tcp) / float64(w.n) / w.d.Seconds()
	}
	return float64(w.tcp) / float64(w.pushPulls) / w.period.Seconds()
}

// perNode is the bytes each agent sent per second, both layers together.
// On loopback without loss, what is sent is what is received.
func (w trafficWindow) perNode() float64 {
	if w.d <= 0 || w.n == 0 {
		return 0
	}
	return float64(w.udp+w.catalog)/float64(w.n)/w.d.Seconds() + w.tcpPerNode()
}

// cpuPercent is the process's CPU use in the window, in percent of one core.
func (w trafficWindow) cpuPercent() float64 {
	if w.d <= 0 {
		return 0
	}
	return 100 * w.cpu.Seconds() / w.d.Seconds()
}

func (w trafficWindow) String() string {
	perSec := func(b uint64) float64 { return float64(b) / float64(w.n) / w.d.Seconds() }
	return fmt.Sprintf("%.0f B/s/node (memberlist udp %.0f + tcp %.0f, catalog %.0f) over %s, cpu %.0f%%; %d push/pulls of %.0f B",
		w.perNode(), perSec(w.udp), w.tcpPerNode(), perSec(w.catalog), w.d.Round(time.Second), w.cpuPercent(),
		w.pushPulls, float64(w.tcp)/float64(max(w.pushPulls, 1)))
}

// benchAgents are n gossip agents in this process, on loopback. Each
// agent's catalog holds only what the benchmark publishes.
type benchAgents struct {
	nodes  []*gossip.Cluster
	names  []string
	owned  []*benchOwner
	sent   *memberlistBytes
	timing gossip.Timing
	log    io.Writer
	opts   shoalOpts
	seeds  []string    // gossip addresses of the first agents
	mem    *memNetwork // with --network memory
	// resyncs counts the agents that joined a seed again during the join
	// because they still missed members.
	resyncs int
	// silent is the black-holed agent (--blackhole); -1: none.
	silent int
}

func runShoalCluster(ctx context.Context, n int, opts shoalOpts) (res shoalResult, err error) {
	res.n, res.dilation = n, opts.dilation
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	goroutines := runtime.NumGoroutine()

	sent, uninstall, err := installMemberlistBytes()
	if err != nil {
		return res, err
	}
	defer uninstall()
	a, err := newBenchAgents(n, opts)
	if err != nil {
		return res, err
	}
	defer a.shutdown()
	a.sent = sent
	k := opts.dilation
	if res.join, err = a.join(ctx, joinBatch(opts.joinBatch, n)); err != nil {
		return res, err
	}
	res.join = time.Duration(float64(res.join) / k)
	fmt.Fprintf(opts.log, "joined: all %d agents see %d alive in %s (%d re-syncs with a seed)\n", n, n, benchDur(res.join), a.resyncs)
	a.settle(ctx)
	failures := a.failures()

	if opts.blackhole {
		// The ring successor of agent 0 (never a seed's only peer).
		a.silent = min(3, n-1)
		a.mem.blackHole(a.names[a.silent])
		fmt.Fprintf(opts.log, "black-holed %s\n", a.names[a.silent])
		res.regOnly = true
	}
	if err := a.measureRegistrations(ctx, opts.registrations, &res); err != nil {
		return res, err
	}
	if opts.blackhole {
		if m, ok := a.nodes[0].Catalog().Member(a.names[a.silent]); ok {
			fmt.Fprintf(opts.log, "after the registrations %s is %s in %s's view\n", a.names[a.silent], m.Status, a.names[0])
		}
		return res, ctx.Err()
	}
	a.settle(ctx)
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	res.heapMiB = (float64(after.HeapInuse) - float64(before.HeapInuse)) / float64(n) / (1 << 20)
	res.goroutines = float64(runtime.NumGoroutine()-goroutines) / float64(n)
	fmt.Fprintf(opts.log, "memory: %.2f MiB heap and %.1f goroutines per agent\n", res.heapMiB, res.goroutines)

	// The window in wall time: --window of the agents' time, and below
	// 100 agents at least one push/pull period, so that every agent's
	// full-state sync is counted. From 100 agents on, the syncs in the
	// window tell the bytes of one, and the steady rate follows from the
	// period (see tcpPerNode).
	window := time.Duration(float64(opts.window) * k)
	if n < 100 {
		window = max(window, pushPullPeriod(a.timing.PushPullInterval, n))
	}
	if res.idle, err = a.measureTraffic(ctx, window, 0); err != nil {
		return res, err
	}
	fmt.Fprintf(opts.log, "idle: %s\n", res.idle)
	res.churnRate = opts.churnRate * float64(opts.churnBurst)
	if res.churn, err = a.measureTraffic(ctx, window, opts.churnRate); err != nil {
		return res, err
	}
	fmt.Fprintf(opts.log, "churn (%.1f events/s of %d changes): %s\n", opts.churnRate, opts.churnBurst, res.churn)
	a.settle(ctx)

	victimFails := a.measureKills(ctx, opts.kills, &res)
	// Every failure an agent saw that was not of a victim is false. The
	// counters of killed agents stay readable.
	for i, f := range a.failures() {
		res.falseFailures += int(f - failures[i])
	}
	res.falseFailures -= victimFails
	res.kill = time.Duration(float64(res.kill) / k)
	res.killDeadline = time.Duration(float64(res.killDeadline) / k)
	fmt.Fprintf(opts.log, "kills: median %s, %d false failures\n", benchDur(res.kill), res.falseFailures)
	return res, ctx.Err()
}

// measureKills kills agents one after the other, from the last (never a
// seed), each timed among the survivors of the ones before, and returns how
// many times agents saw a victim fail.
func (a *benchAgents) measureKills(ctx context.Context, kills int, res *shoalResult) (victimFails int) {
	n := len(a.nodes)
	res.killDeadline = killDeadline(a.timing, n)
	var times []time.Duration
	for k := range min(kills, n-3) {
		last, missed, fails := a.measureKill(ctx, n-1-k, res.killDeadline)
		victimFails += fails
		res.killMissed += missed
		if missed == 0 {
			times = append(times, last)
		}
		fmt.Fprintf(a.log, "kill %d: failed everywhere after %s (%d missed)\n", k+1, benchDur(last), missed)
	}
	res.kill = median(times)
	return victimFails
}

// newBenchAgents prepares n agents; join starts them, a batch at a time,
// as a fleet rollout would. Agents started long before they join (hundreds
// of them idle in the process) made the joins of large clusters fail.
func newBenchAgents(n int, opts shoalOpts) (*benchAgents, error) {
	a := &benchAgents{log: opts.log, opts: opts, silent: -1}
	for i := range n {
		a.names = append(a.names, fmt.Sprintf("bench-%04d", i))
		a.owned = append(a.owned, &benchOwner{})
	}
	if opts.memory {
		a.mem = newMemNetwork()
	}
	cfg, err := benchGossipConfig(opts.timing, a.names[0], opts.dilation)
	a.timing = cfg.Timing
	return a, err
}

// start creates and starts the next agent, not joined yet.
func (a *benchAgents) start() error {
	i := len(a.nodes)
	cfg, err := benchGossipConfig(a.opts.timing, a.names[i], a.opts.dilation)
	if err != nil {
		return err
	}
	if a.mem != nil {
		cfg.Network = a.mem
	}
	cfg.Local = a.owned[i]
	if a.opts.agentLogs {
		cfg.Logger = slog.New(slog.NewTextHandler(a.opts.log, &slog.HandlerOptions{Level: slog.LevelWarn})).With("agent", a.names[i])
	}
	c, err := gossip.New(cfg)
	if err == nil {
		err = c.Start()
	}
	if err != nil {
		return fmt.Errorf("agent %d: %w", i, err)
	}
	a.nodes = append(a.nodes, c)
	return nil
}

// shutdown stops every agent still running, a few at a time.
func (a *benchAgents) shutdown() {
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for _, c := range a.nodes {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			c.Shutdown()
		}()
	}
	wg.Wait()
}

// settle waits until the broadcasts of what just happened have been sent
// on: memberlist retransmits each a few times log N gossip rounds.
func (a *benchAgents) settle(ctx context.Context) {
	sleepCtx(ctx, max(500*time.Millisecond, 20*a.timing.GossipInterval))
}

// join makes the first agents seeds and joins every other agent to one of
// them, batch agents at a time, as a deployment tool starting a fleet would.
// Every join is gossiped to every agent, so a batch converges before the
// next one starts: a thousand joins at once would flood every queue. It
// returns when every agent sees every agent alive.
func (a *benchAgents) join(ctx context.Context, batch int) (time.Duration, error) {
	start := time.Now()
	n := len(a.names)
	nseeds := min(3, n)
	for range nseeds {
		if err := a.start(); err != nil {
			return 0, err
		}
		a.seeds = append(a.seeds, a.nodes[len(a.nodes)-1].LocalMember().GossipAddr())
	}
	seeds := a.seeds
	joinOne := func(i int) error {
		seed := seeds[i%nseeds]
		if i < nseeds {
			seed = seeds[0]
		}
		var err error
		for try := 0; try < 3; try++ {
			if _, err = a.nodes[i].Join([]string{seed}); err == nil {
				return nil
			}
			sleepCtx(ctx, time.Second)
		}
		return err
	}
	for lo := 1; lo < n; {
		hi := min(lo+batch, n)
		if lo < nseeds {
			hi = nseeds // the seeds first, by themselves
		}
		for len(a.nodes) < hi {
			if err := a.start(); err != nil {
				return 0, err
			}
		}
		errs := make(chan error, hi-lo)
		for i := lo; i < hi; i++ {
			go func() { errs <- joinOne(i) }()
		}
		for range hi - lo {
			if err := <-errs; err != nil {
				return 0, err
			}
		}
		if err := a.waitConverged(ctx, start, lo, hi); err != nil {
			return 0, err
		}
		lo = hi
	}
	err := a.waitConverged(ctx, start, 0, n)
	return time.Since(start), err
}

// waitConverged waits until the agents that joined before lo see those of
// lo to hi alive, and those see all hi alive. Only the latter list every
// member, so that checking a large cluster costs its agents little CPU.
//
// Agents that joined at the same time sometimes never hear of each other
// by gossip, and then wait for memberlist's push/pull (30 s to minutes).
// An agent that still misses members a few gossip rounds after a batch
// joins a seed again, a full sync, as an operator would.
func (a *benchAgents) waitConverged(ctx context.Context, start time.Time, lo, hi int) error {
	done := make([]bool, hi)
	left := hi
	resyncEvery := max(20*a.timing.GossipInterval, time.Second)
	lastResync := time.Now()
	every := 100 * time.Millisecond
	if hi-lo > 100 {
		every = time.Second
	}
	// A batch gets three minutes, the whole join thirty: a machine that
	// cannot keep this many agents healthy does not converge at all.
	deadline := time.Now().Add(3 * time.Minute)
	if end := start.Add(30 * time.Minute); end.Before(deadline) {
		deadline = end
	}
	lastLog := time.Now()
	for {
		for i, c := range a.nodes[:hi] {
			if done[i] {
				continue
			}
			cat, ok := c.Catalog(), true
			if i < lo {
				for _, name := range a.names[lo:hi] {
					if m, known := cat.Member(name); !known || m.Status != gossip.StatusAlive {
						ok = false
						break
					}
				}
			} else {
				ok = aliveCount(cat) == hi
			}
			if ok {
				done[i] = true
				left--
			}
		}
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("join: %d of %d agents still miss members after %s", left, hi, time.Since(start).Round(time.Second))
		}
		if time.Since(lastResync) > resyncEvery {
			for i, d := range done {
				if !d {
					a.resyncs++
					go a.nodes[i].Join([]string{a.seeds[i%len(a.seeds)]})
				}
			}
			lastResync = time.Now()
		}
		if time.Since(lastLog) > 10*time.Second {
			fmt.Fprintf(a.log, "joining: %d agents, %d converged, after %s%s\n", hi, hi-left,
				time.Since(start).Round(time.Second), a.straggler(done, hi))
			lastLog = time.Now()
		}
		sleepCtx(ctx, every)
	}
}

// straggler describes the first of the first hi agents not done: the
// members it does not list alive, as its catalog and its serf see them.
func (a *benchAgents) straggler(done []bool, hi int) string {
	for i, d := range done {
		if d {
			continue
		}
		seen := make(map[string]string)
		for _, m := range a.nodes[i].Members() {
			seen[m.Name] = m.Status.String()
		}
		var missing []string
		for _, name := range a.names[:hi] {
			if m, ok := a.nodes[i].Catalog().Member(name); !ok || m.Status != gossip.StatusAlive {
				missing = append(missing, fmt.Sprintf("%s (catalog %s, serf %s)", name, m.Status, cmp.Or(seen[name], "unknown")))
			}
		}
		return fmt.Sprintf("; %s misses %s", a.names[i], strings.Join(missing, ", "))
	}
	return ""
}

func aliveCount(c *gossip.Catalog) int {
	n := 0
	for _, m := range c.Members() {
		if m.Status == gossip.StatusAlive {
			n++
		}
	}
	return n
}

// waitAll runs start once a watcher per agent (but skip) follows its
// catalog, then waits until ok holds on every watched agent or the deadline
// passes. It returns when ok first held on each, zero where it never did.
// Watchers wake on the catalog's change signal rather than polling.
func (a *benchAgents) waitAll(ctx context.Context, deadline time.Duration, skip int, ok func(*gossip.Catalog) bool, start func()) []time.Time {
	seen := make([]time.Time, len(a.nodes))
	stop := make(chan struct{})
	timer := time.AfterFunc(deadline, func() { close(stop) })
	defer timer.Stop()
	var ready, done sync.WaitGroup
	for i, c := range a.nodes {
		if i == skip {
			continue
		}
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			cat := c.Catalog()
			first := true
			for {
				changed := cat.Changed()
				held := ok(cat)
				if held {
					seen[i] = time.Now()
				}
				if first {
					ready.Done()
					first = false
				}
				if held {
					return
				}
				select {
				case <-changed:
				case <-stop:
					return
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	ready.Wait()
	start()
	done.Wait()
	return seen
}

// lastSeen returns the latest of seen after t0 and how many are zero,
// skipping skip.
func lastSeen(seen []time.Time, t0 time.Time, skip int) (time.Duration, int) {
	var last time.Duration
	missed := 0
	for i, t := range seen {
		switch {
		case i == skip:
		case t.IsZero():
			missed++
		default:
			last = max(last, t.Sub(t0))
		}
	}
	return last, missed
}

// measureRegistrations registers m services, one at a time on random
// agents, and times each until every agent's catalog holds it.
func (a *benchAgents) measureRegistrations(ctx context.Context, m int, res *shoalResult) error {
	var lat []time.Duration
	for r := range m {
		i := rand.IntN(len(a.nodes))
		for i == a.silent {
			i = rand.IntN(len(a.nodes))
		}
		version := a.owned[i].change(fmt.Sprintf("reg-%d", r), false)
		owner := a.names[i]
		var t0 time.Time
		var err error
		seen := a.waitAll(ctx, 30*time.Second, a.silent, func(c *gossip.Catalog) bool {
			return c.Version(owner) >= version
		}, func() {
			t0 = time.Now()
			err = a.nodes[i].LocalChanged()
		})
		if err != nil {
			return err
		}
		last, missed := lastSeen(seen, t0, a.silent)
		if missed > 0 {
			res.regMissed++
			fmt.Fprintf(a.log, "registration %d: %d agents never got it\n", r, missed)
			continue
		}
		lat = append(lat, last)
		if a.silent >= 0 {
			// Quickly, so that they all happen before failure
			// detection declares the silent agent failed.
			sleepCtx(ctx, a.timing.GossipInterval/2)
			continue
		}
		sleepCtx(ctx, 5*a.timing.GossipInterval)
	}
	res.regP50, res.regP99 = percentiles(lat)
	// The version check above is what the watchers use; check once that
	// the instances are really there, attached to their owners.
	wrong := 0
	for i, c := range a.nodes {
		if i == a.silent {
			continue
		}
		if len(c.Catalog().Instances("bench")) != m {
			wrong++
		}
	}
	fmt.Fprintf(a.log, "registrations: p50 %s, p99 %s over %d; %d agents miss instances\n",
		benchDur(res.regP50), benchDur(res.regP99), len(lat), wrong)
	if wrong > 0 {
		return fmt.Errorf("%d agents do not list all %d registered instances", wrong, m)
	}
	return ctx.Err()
}

// traffic returns the bytes all agents sent so far: memberlist's over UDP
// and TCP, and the catalog path's.
func (a *benchAgents) traffic() (udp, tcp, catalog uint64) {
	for _, c := range a.nodes {
		catalog += c.Stats().BytesOut
	}
	return a.sent.udp.Load(), a.sent.tcp.Load(), catalog
}

// measureTraffic counts the traffic of a window of length d, while services
// change at rate per second across the cluster (none: idle).
func (a *benchAgents) measureTraffic(ctx context.Context, d time.Duration, rate float64) (trafficWindow, error) {
	udp0, tcp0, cat0 := a.traffic()
	pp0 := a.sent.pushPulls.Load()
	cpu0, t0 := cpuTime(), time.Now()
	k := a.opts.dilation
	if rate == 0 {
		sleepCtx(ctx, d)
	} else {
		every := time.Duration(float64(time.Second) * k / rate) // rate is per second of the agents' time
		for next := t0; time.Since(t0) < d && ctx.Err() == nil; next = next.Add(every) {
			sleepCtx(ctx, time.Until(next))
			i := rand.IntN(len(a.nodes))
			for b := range a.opts.churnBurst {
				id := fmt.Sprintf("churn-%d", b)
				a.owned[i].change(id, a.owned[i].live(id))
				if err := a.nodes[i].LocalChanged(); err != nil {
					return trafficWindow{}, err
				}
			}
		}
		sleepCtx(ctx, time.Until(t0.Add(d)))
	}
	udp1, tcp1, cat1 := a.traffic()
	return trafficWindow{n: len(a.nodes), d: time.Duration(float64(time.Since(t0)) / k), udp: udp1 - udp0, tcp: tcp1 - tcp0,
		catalog: cat1 - cat0, cpu: cpuTime() - cpu0, pushPulls: a.sent.pushPulls.Load() - pp0,
		period: time.Duration(float64(pushPullPeriod(a.timing.PushPullInterval, len(a.nodes))) / k)}, ctx.Err()
}

// measureKill shuts agent victim down without leaving, as a crash would,
// and times until every agent before it (those after it are dead already)
// reports it failed. It also returns how many agents missed it by the
// deadline and how many times agents saw it fail: once each, unless it
// flapped.
func (a *benchAgents) measureKill(ctx context.Context, victim int, deadline time.Duration) (last time.Duration, missed, fails int) {
	name := a.names[victim]
	seen, failed := make([]time.Time, victim), make([]int, victim)
	var left atomic.Int64
	left.Store(int64(victim))
	allSeen, stop := make(chan struct{}), make(chan struct{})
	var ready, done sync.WaitGroup
	for i, c := range a.nodes[:victim] {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			cat, prev, first := c.Catalog(), gossip.StatusAlive, true
			for {
				changed := cat.Changed()
				if m, ok := cat.Member(name); ok && m.Status != prev {
					if prev = m.Status; prev == gossip.StatusFailed {
						failed[i]++
						if seen[i].IsZero() {
							seen[i] = time.Now()
							if left.Add(-1) == 0 {
								close(allSeen)
							}
						}
					}
				}
				if first {
					ready.Done()
					first = false
				}
				select {
				case <-changed:
				case <-stop:
					return
				}
			}
		}()
	}
	ready.Wait()
	t0 := time.Now()
	a.nodes[victim].Shutdown()
	select {
	case <-allSeen:
	case <-time.After(deadline - time.Since(t0)):
	case <-ctx.Done():
	}
	a.settle(ctx) // a flap of the victim right after counts as the victim's
	close(stop)
	done.Wait()
	last, missed = lastSeen(seen, t0, -1)
	for _, f := range failed {
		fails += f
	}
	return last, missed, fails
}

// killDeadline bounds the wait for a killed agent to be failed everywhere:
// twice Lifeguard's longest suspicion (no confirmations) at n members, and
// ten probe rounds for someone to probe it in the first place.
func killDeadline(t gossip.Timing, n int) time.Duration {
	suspicion := 6 * float64(t.SuspicionMult) * math.Max(1, math.Log10(float64(n)))
	return time.Duration(2*suspicion)*t.ProbeInterval + 10*t.ProbeInterval
}

// failures returns the member failures each agent has seen so far.
func (a *benchAgents) failures() []uint64 {
	out := make([]uint64, len(a.nodes))
	for i, c := range a.nodes {
		out[i] = c.Stats().MemberFailures
	}
	return out
}

// sleepCtx sleeps for d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
