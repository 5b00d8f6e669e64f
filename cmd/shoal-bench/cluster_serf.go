package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	serfclient "github.com/hashicorp/serf/client"

	"github.com/shoal-mesh/shoal/gossip"
)

// serfResult is what one run of n stock serf agents measured: the anchor.
type serfResult struct {
	n    int
	join time.Duration
	// eventP50 and eventP99 are the times from a user event fired on one
	// agent until the last agent delivered it; eventMissed counts events
	// some agent never delivered.
	eventP50, eventP99 time.Duration
	eventMissed        int
	// kill is the median, over the kills, of the time from kill -9 of an
	// agent until the last other agent lists it failed; killMissed counts
	// agents that did not by killDeadline.
	kill, killDeadline time.Duration
	killMissed         int
	// failedOthers counts members other than the victims that some agent
	// lists failed at the end.
	failedOthers int
}

// serfAgent is one stock serf agent process and an RPC client to it.
type serfAgent struct {
	name, bind string
	proc       *exec.Cmd
	rpc        *serfclient.RPCClient
}

// serfProfile maps a --timing profile to serf's closest one: serf has no
// faster profile than local.
func serfProfile(timing string) string {
	if timing == "lan" {
		return "lan"
	}
	return "local"
}

func runSerfCluster(ctx context.Context, bin string, n int, opts shoalOpts) (res serfResult, err error) {
	res.n = n
	env, err := newBenchEnv()
	if err != nil {
		return res, err
	}
	defer env.close()
	agents, err := startSerfAgents(ctx, env, bin, n, serfProfile(opts.timing))
	defer func() {
		for _, a := range agents {
			a.rpc.Close()
		}
	}()
	if err != nil {
		return res, err
	}
	timing := gossip.LANTiming() // serf's profiles are memberlist's, as gossip's
	if serfProfile(opts.timing) == "local" {
		timing = gossip.LocalTiming()
	}
	if res.join, err = joinSerf(ctx, agents, joinBatch(opts.joinBatch, n), max(20*timing.GossipInterval, time.Second)); err != nil {
		return res, err
	}
	fmt.Fprintf(opts.log, "joined: all %d serf agents see %d alive in %s\n", n, n, benchDur(res.join))
	settle := max(500*time.Millisecond, 20*timing.GossipInterval)
	sleepCtx(ctx, settle)

	if err := serfEvents(ctx, agents, opts.registrations, &res); err != nil {
		return res, err
	}
	fmt.Fprintf(opts.log, "events: p50 %s, p99 %s (%d missed)\n", benchDur(res.eventP50), benchDur(res.eventP99), res.eventMissed)
	sleepCtx(ctx, settle)

	res.killDeadline = killDeadline(timing, n)
	var kills []time.Duration
	victims := make(map[string]bool)
	for k := range min(opts.kills, n-3) {
		victim := n - 1 - k
		victims[agents[victim].name] = true
		last, missed := serfKill(ctx, agents, victim, res.killDeadline)
		res.killMissed += missed
		if missed == 0 {
			kills = append(kills, last)
		}
		fmt.Fprintf(opts.log, "kill %d: failed everywhere after %s (%d missed)\n", k+1, benchDur(last), missed)
		sleepCtx(ctx, settle)
	}
	res.kill = median(kills)
	for _, a := range agents[:n-len(victims)] {
		failed, err := a.rpc.MembersFiltered(nil, "failed", "")
		if err != nil {
			continue
		}
		for _, m := range failed {
			if !victims[m.Name] {
				res.failedOthers++
			}
		}
	}
	fmt.Fprintf(opts.log, "kills: median %s, %d other members listed failed at the end\n", benchDur(res.kill), res.failedOthers)
	return res, ctx.Err()
}

// startSerfAgents starts n serf agents on loopback, none joined yet, and
// connects an RPC client to each.
func startSerfAgents(ctx context.Context, env *benchEnv, bin string, n int, profile string) ([]*serfAgent, error) {
	ports, err := benchPorts(2 * n)
	if err != nil {
		return nil, err
	}
	var agents []*serfAgent
	for i := range n {
		a := &serfAgent{name: fmt.Sprintf("serf-%04d", i), bind: "127.0.0.1:" + strconv.Itoa(ports[2*i])}
		rpc := "127.0.0.1:" + strconv.Itoa(ports[2*i+1])
		if a.proc, err = env.start(bin, "agent", "-node", a.name, "-bind", a.bind, "-rpc-addr", rpc,
			"-profile", profile, "-log-level", "warn"); err != nil {
			return agents, err
		}
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		err = waitTCP(wctx, rpc)
		cancel()
		if err != nil {
			return agents, fmt.Errorf("serf agent %s: %w", a.name, err)
		}
		if a.rpc, err = serfclient.ClientFromConfig(&serfclient.Config{Addr: rpc, Timeout: 10 * time.Second}); err != nil {
			return agents, fmt.Errorf("serf agent %s: %w", a.name, err)
		}
		agents = append(agents, a)
	}
	return agents, nil
}

// joinSerf joins the agents as the in-process run joins Shoal's: the first
// ones are seeds, the others join one seed each, batch agents at a time,
// each batch converging before the next. It returns when every agent lists
// every agent alive.
func joinSerf(ctx context.Context, agents []*serfAgent, batch int, resyncEvery time.Duration) (time.Duration, error) {
	start := time.Now()
	n := len(agents)
	nseeds := min(3, n)
	for lo := 1; lo < n; {
		hi := min(lo+batch, n)
		if lo < nseeds {
			hi = nseeds
		}
		errs := make(chan error, hi-lo)
		for i := lo; i < hi; i++ {
			seed := agents[i%nseeds]
			if i < nseeds {
				seed = agents[0]
			}
			go func() {
				_, err := agents[i].rpc.Join([]string{seed.bind}, false)
				errs <- err
			}()
		}
		for range hi - lo {
			if err := <-errs; err != nil {
				return 0, fmt.Errorf("join: %w", err)
			}
		}
		if err := serfConverged(ctx, agents, lo, hi, resyncEvery); err != nil {
			return 0, err
		}
		lo = hi
	}
	if err := serfConverged(ctx, agents, 0, n, resyncEvery); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// serfConverged waits until the agents that joined before lo list those of
// lo to hi alive, and those list all hi alive.
func serfConverged(ctx context.Context, agents []*serfAgent, lo, hi int, resyncEvery time.Duration) error {
	names := make([]string, 0, hi-lo)
	for _, a := range agents[lo:hi] {
		names = append(names, regexp.QuoteMeta(a.name))
	}
	newcomers := "(?:" + strings.Join(names, "|") + ")"
	done := make([]bool, hi)
	left := hi
	lastResync := time.Now()
	for deadline := time.Now().Add(5 * time.Minute); left > 0; {
		for i, a := range agents[:hi] {
			if done[i] {
				continue
			}
			name, want := newcomers, hi-lo
			if i >= lo {
				name, want = "", hi
			}
			if alive, err := a.rpc.MembersFiltered(nil, "alive", name); err == nil && len(alive) == want {
				done[i] = true
				left--
			}
		}
		if left > 0 && (time.Now().After(deadline) || ctx.Err() != nil) {
			return fmt.Errorf("join: %d of %d serf agents still miss members", left, hi)
		}
		// As for Shoal's agents: stragglers join a seed again.
		if time.Since(lastResync) > resyncEvery {
			for i, d := range done {
				if !d {
					go agents[i].rpc.Join([]string{agents[i%min(3, len(agents))].bind}, false)
				}
			}
			lastResync = time.Now()
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
	return nil
}

// eventRound collects the deliveries of one user event.
type eventRound struct {
	mu       sync.Mutex // guards the fields below
	payload  string
	arrivals []time.Time
	left     int
	done     chan struct{}
}

func (r *eventRound) deliver(agent int, payload string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if payload != r.payload || !r.arrivals[agent].IsZero() {
		return
	}
	r.arrivals[agent] = at
	if r.left--; r.left == 0 {
		close(r.done)
	}
}

// serfEvents fires m user events, not coalesced, one at a time from random
// agents, and times each until every agent's event stream delivered it.
func serfEvents(ctx context.Context, agents []*serfAgent, m int, res *serfResult) error {
	var cur struct {
		sync.Mutex
		r *eventRound
	}
	for i, a := range agents {
		ch := make(chan map[string]any, 1024)
		if _, err := a.rpc.Stream("user:bench", ch); err != nil {
			return fmt.Errorf("stream from %s: %w", a.name, err)
		}
		go func() {
			for e := range ch {
				at := time.Now()
				var payload string
				switch p := e["Payload"].(type) {
				case []byte:
					payload = string(p)
				case string:
					payload = p
				}
				cur.Lock()
				r := cur.r
				cur.Unlock()
				if r != nil {
					r.deliver(i, payload, at)
				}
			}
		}()
	}
	var lat []time.Duration
	for k := range m {
		r := &eventRound{payload: "event-" + strconv.Itoa(k), arrivals: make([]time.Time, len(agents)),
			left: len(agents), done: make(chan struct{})}
		cur.Lock()
		cur.r = r
		cur.Unlock()
		t0 := time.Now()
		if err := agents[rand.IntN(len(agents))].rpc.UserEvent("bench", []byte(r.payload), false); err != nil {
			return fmt.Errorf("user event: %w", err)
		}
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
		r.mu.Lock()
		last, missed := lastSeen(r.arrivals, t0, -1)
		r.mu.Unlock()
		if missed > 0 {
			res.eventMissed++
			continue
		}
		lat = append(lat, last)
		sleepCtx(ctx, time.Second)
	}
	res.eventP50, res.eventP99 = percentiles(lat)
	return nil
}

// serfKill kills agent victim with SIGKILL and times until every agent
// before it (those after it are dead already) lists it failed, asking each
// a few times a second. It also returns how many missed it by the deadline.
func serfKill(ctx context.Context, agents []*serfAgent, victim int, deadline time.Duration) (time.Duration, int) {
	v := agents[victim]
	seen := make([]time.Time, victim)
	v.rpc.Close() // before its agent dies, so that the client does not log the EOF
	t0 := time.Now()
	syscall.Kill(-v.proc.Process.Pid, syscall.SIGKILL)
	var wg sync.WaitGroup
	for i, a := range agents[:victim] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(t0) < deadline && ctx.Err() == nil {
				if m, err := a.rpc.MembersFiltered(nil, "failed", v.name); err == nil && len(m) > 0 {
					seen[i] = time.Now()
					return
				}
				sleepCtx(ctx, 200*time.Millisecond)
			}
		}()
	}
	wg.Wait()
	return lastSeen(seen, t0, -1)
}
