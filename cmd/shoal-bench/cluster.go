package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/shoal-mesh/shoal/gossip"
	"github.com/shoal-mesh/shoal/node"
)

func benchClusterCommand() *cli.Command {
	return &cli.Command{
		Name:  "cluster",
		Usage: "measure convergence, failure detection, gossip traffic and memory of N agents, with stock serf as the anchor",
		Description: `For each N, runs N Shoal gossip agents in this process on 127.0.0.1 with
ephemeral ports (the gossip layer alone: no HTTP API, no proxy) and measures:

  join            the first three agents are seeds; the others join one seed
                  each, --join-batch at a time, each batch seeing everyone
                  alive before the next; stragglers join a seed again
  reg p50/p99     from a registration on a random agent until every agent's
                  catalog holds it, over --registrations
  kill→failed     from shutting an agent down without leaving (a crash)
                  until every other agent's catalog has it failed; median
                  over --kills agents killed one after the other
  false failures  failures of agents that were never killed, seen by any
                  agent from the end of the join to the end of the run
  B/s/node        bytes each agent sends per second, memberlist's (probes,
                  gossip, push/pull, from its own metrics) and the catalog
                  path's, idle and while services change at --churn-rate
                  per second across the cluster
  MiB/agent       live heap after GC, and goroutines, per agent
  cpu%            this process's CPU in the two windows (200% = 2 cores)

Each traffic window lasts --window and, below 100 agents, at least one
memberlist push/pull period at that N (30 s at LAN timing, growing with
log2 N past 32 agents), so that every agent's full-state sync is counted;
from 100 agents on, memberlist's TCP bytes are the syncs' in the window,
per sync, times one sync per agent per period.

--network memory carries the agents' traffic through memory instead of
sockets, and --dilation k multiplies every timer by k (see BENCHMARKS.md):
together they fit a thousand agents and more on two cores.

Then, up to --serf-max agents, as many stock serf agents (Debian package
serf), one process each, joined the same way: a user event (not coalesced)
fired on one agent until every agent's event stream delivered it, and
kill -9 until every other agent lists it failed (polled every 200 ms).`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "nodes", Value: "10,50,200,1000", Usage: "cluster sizes to run, comma-separated"},
			&cli.IntFlag{Name: "registrations", Value: 20, Usage: "registrations timed per size (and serf events)"},
			&cli.StringFlag{Name: "timing", Value: "lan", Usage: "gossip timers: lan (the production default, as stock serf's), local (--dev) or test"},
			&cli.IntFlag{Name: "serf-max", Value: 200, Usage: "largest N to run stock serf for (one process per agent); 0: none"},
			&cli.DurationFlag{Name: "window", Value: 30 * time.Second, Usage: "minimum length of the idle and churn traffic windows"},
			&cli.Float64Flag{Name: "churn-rate", Value: 2, Usage: "service registrations and deregistrations per second across the cluster in the churn window"},
			&cli.IntFlag{Name: "churn-burst", Value: 1, Usage: "services each churn event changes on one agent, one after the other (a deploy)"},
			&cli.IntFlag{Name: "kills", Value: 5, Usage: "agents killed one after the other (at most N-3); the median is reported"},
			&cli.IntFlag{Name: "join-batch", Usage: "agents that join at once, each batch converging before the next; 0: 2000/N, 1 to 10"},
			&cli.BoolFlag{Name: "agent-logs", Usage: "print the in-process agents' warnings and errors to stderr"},
			&cli.StringFlag{Name: "cpu-profile", Usage: "write a CPU profile of the whole run to this file"},
			&cli.StringFlag{Name: "network", Value: "loopback", Usage: "how the in-process agents talk: loopback (UDP and TCP sockets on 127.0.0.1) or memory (no sockets)"},
			&cli.Float64Flag{Name: "dilation", Value: 1, Usage: "time dilation k: every timer of the agents × k, durations they drive ÷ k, rates × k (see BENCHMARKS.md)"},
			&cli.BoolFlag{Name: "blackhole", Usage: "black-hole one agent (with --network memory) and time registrations on the others; nothing else is measured"},
		},
		Action: runBenchCluster,
	}
}

// clusterRow is one line of the table: Shoal's figures at one N and stock
// serf's, when it ran.
type clusterRow struct {
	n     int
	shoal shoalResult
	serf  *serfResult
	// shoalErr and serfErr say why a run failed; its figures are then not
	// reported.
	shoalErr, serfErr string
	load              float64 // 1-minute load average when the size started
}

// clusterOptions reads and checks the command's flags.
func clusterOptions(c *cli.Context) ([]int, shoalOpts, error) {
	sizes, err := parseSizes(c.String("nodes"))
	if err != nil {
		return nil, shoalOpts{}, err
	}
	timing := c.String("timing")
	if _, err := benchGossipConfig(timing, "x", 1); err != nil {
		return nil, shoalOpts{}, err
	}
	network := c.String("network")
	if network != "loopback" && network != "memory" {
		return nil, shoalOpts{}, fmt.Errorf("--network %q: want loopback or memory", network)
	}
	if c.Float64("dilation") < 1 {
		return nil, shoalOpts{}, errors.New("--dilation must be at least 1")
	}
	if c.Bool("blackhole") && network != "memory" {
		return nil, shoalOpts{}, errors.New("--blackhole needs --network memory")
	}
	opts := shoalOpts{
		timing:        timing,
		registrations: c.Int("registrations"),
		window:        c.Duration("window"),
		churnRate:     c.Float64("churn-rate"),
		churnBurst:    max(c.Int("churn-burst"), 1),
		log:           c.App.ErrWriter,
		agentLogs:     c.Bool("agent-logs"),
		joinBatch:     c.Int("join-batch"),
		kills:         c.Int("kills"),
		memory:        network == "memory",
		dilation:      c.Float64("dilation"),
		blackhole:     c.Bool("blackhole"),
	}
	if opts.registrations < 1 || opts.churnRate <= 0 || opts.window <= 0 || opts.joinBatch < 0 || opts.kills < 1 {
		return nil, opts, errors.New("--registrations, --churn-rate, --window and --kills must be positive, --join-batch not negative")
	}
	return sizes, opts, nil
}

func runBenchCluster(c *cli.Context) error {
	sizes, opts, err := clusterOptions(c)
	if err != nil {
		return err
	}
	serfMax := c.Int("serf-max")
	serfBin := ""
	if serfMax > 0 && slices.Min(sizes) <= serfMax {
		if serfBin, err = findTool("serf", "serf"); err != nil {
			return err
		}
	}
	if err := raiseFileLimit(); err != nil {
		fmt.Fprintf(c.App.ErrWriter, "warning: raise the open files limit: %v\n", err)
	}
	if path := c.String("cpu-profile"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	// An interrupt ends the run cleanly: serf processes are killed, the
	// profile is written.
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(c.App.ErrWriter, "%d CPUs, load average %s, timing %s\n", runtime.NumCPU(), loadAverage(), opts.timing)
	rows, runErr := runClusterSizes(ctx, c.App.ErrWriter, sizes, opts, serfBin, serfMax)
	if len(rows) > 0 {
		if err := printClusterTable(c.App.Writer, rows); err != nil {
			return err
		}
		printClusterGoals(c.App.Writer, rows)
	}
	return runErr
}

// runClusterSizes runs Shoal, then serf up to serfMax agents, at each size.
// When interrupted, it returns the rows done so far with the error.
func runClusterSizes(ctx context.Context, log io.Writer, sizes []int, opts shoalOpts, serfBin string, serfMax int) ([]clusterRow, error) {
	var rows []clusterRow
	for _, n := range sizes {
		row := clusterRow{n: n, load: load1()}
		fmt.Fprintf(log, "--- N=%d shoal (load %.1f)\n", n, row.load)
		// A size that fails (on an overloaded machine, a join that never
		// converges) is reported in its row; the others still run.
		var err error
		if row.shoal, err = runShoalCluster(ctx, n, opts); err != nil {
			if ctx.Err() != nil {
				return rows, err
			}
			row.shoalErr = err.Error()
			fmt.Fprintf(log, "shoal N=%d failed: %v\n", n, err)
		}
		if serfBin != "" && n <= serfMax {
			fmt.Fprintf(log, "--- N=%d stock serf\n", n)
			r, err := runSerfCluster(ctx, serfBin, n, opts)
			if err != nil {
				if ctx.Err() != nil {
					return rows, err
				}
				row.serfErr = err.Error()
				fmt.Fprintf(log, "serf N=%d failed: %v\n", n, err)
			}
			row.serf = &r
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// joinBatch is how many agents join at once at size n: --join-batch, or
// by default 2000/n between 1 and 10. Every join is gossiped to every agent;
// ten at once in a cluster of several hundred, on two cores, overload the
// agents into failing each other.
func joinBatch(flag, n int) int {
	if flag > 0 {
		return flag
	}
	return min(max(2000/n, 1), 10)
}

// parseSizes parses "10,50,200" into ascending cluster sizes.
func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 3 {
			return nil, fmt.Errorf("--nodes %q: want sizes of 3 or more, comma-separated", s)
		}
		out = append(out, n)
	}
	sort.Ints(out)
	return slices.Compact(out), nil
}

// raiseFileLimit lifts the soft limit on open files to the hard one: every
// agent holds three sockets, and more while it syncs.
func raiseFileLimit() error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	lim.Cur = lim.Max
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
}

// loadAverage returns the 1, 5 and 15 minute load averages as the kernel
// writes them.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func load1() float64 {
	v, _ := strconv.ParseFloat(strings.Fields(loadAverage() + " 0")[0], 64)
	return v
}

// cpuTime is the CPU time this process has used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// clusterColumns are the table's headings, in order.
var clusterColumns = []string{
	"N", "join", "reg p50", "reg p99", "kill→failed", "false failures",
	"B/s/node idle", "B/s/node churn", "B/change", "cpu ms/change", "MiB/agent", "goroutines/agent", "cpu% idle/churn", "load",
	"serf join", "serf event p50", "serf event p99", "serf kill→failed",
}

func printClusterTable(w io.Writer, rows []clusterRow) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, strings.Join(clusterColumns, "\t")+"\t")
	var notes []string
	for _, r := range rows {
		cells := []string{strconv.Itoa(r.n)}
		if s := r.shoal; r.shoalErr == "" && s.regOnly {
			cells = append(cells, benchDur(s.join), benchDur(s.regP50), benchDur(s.regP99),
				"—", "—", "—", "—", "—", "—", "—", "—", "—")
		} else if r.shoalErr == "" {
			cells = append(cells, benchDur(s.join), benchDur(s.regP50), benchDur(s.regP99),
				missedDur(s.kill, s.killDeadline, s.killMissed), strconv.Itoa(s.falseFailures),
				fmt.Sprintf("%.0f", s.idle.perNode()), fmt.Sprintf("%.0f", s.churn.perNode()),
				fmt.Sprintf("%.0f", s.bytesPerChange()), fmt.Sprintf("%.2f", s.cpuPerChange()),
				fmt.Sprintf("%.2f", s.heapMiB), fmt.Sprintf("%.1f", s.goroutines),
				fmt.Sprintf("%.0f/%.0f", s.idle.cpuPercent(), s.churn.cpuPercent()))
		} else {
			cells = append(cells, "failed*", "—", "—", "—", "—", "—", "—", "—", "—", "—", "—", "—")
			notes = append(notes, fmt.Sprintf("* shoal N=%d: %s", r.n, r.shoalErr))
		}
		cells = append(cells, fmt.Sprintf("%.1f", r.load))
		switch f := r.serf; {
		case f == nil:
			cells = append(cells, "—", "—", "—", "—")
		case r.serfErr != "":
			cells = append(cells, "failed*", "—", "—", "—")
			notes = append(notes, fmt.Sprintf("* serf N=%d: %s", r.n, r.serfErr))
		default:
			cells = append(cells, benchDur(f.join), benchDur(f.eventP50), benchDur(f.eventP99),
				missedDur(f.kill, f.killDeadline, f.killMissed))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintln(w, n)
	}
	return nil
}

// missedDur formats the time until the last agent saw something, or says
// how many never did by the deadline.
func missedDur(d, deadline time.Duration, missed int) string {
	if missed > 0 {
		return fmt.Sprintf(">%s (%d missed)", benchDur(deadline), missed)
	}
	return benchDur(d)
}

// printClusterGoals says whether the goals of the convergence benchmark
// were met, for the sizes that ran.
func printClusterGoals(w io.Writer, rows []clusterRow) {
	byN := make(map[int]clusterRow)
	for _, r := range rows {
		if r.shoalErr == "" {
			byN[r.n] = r
		}
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	fmt.Fprintln(w)
	for _, g := range []struct {
		n     int
		limit time.Duration
	}{{50, 100 * time.Millisecond}, {1000, time.Second}} {
		if r, ok := byN[g.n]; ok {
			fmt.Fprintf(w, "goal: registration p99 ≤ %v at N=%d: %s (%s)\n", g.limit, g.n,
				verdict(r.shoal.regMissed == 0 && r.shoal.regP99 <= g.limit), benchDur(r.shoal.regP99))
		}
	}
	if big, ok := byN[1000]; ok {
		base, baseN := byN[100], 100
		if _, ok := byN[100]; !ok {
			base, baseN = byN[200], 200
		}
		if base.shoal.n != 0 {
			ri := big.shoal.idle.perNode() / base.shoal.idle.perNode()
			rc := big.shoal.churn.perNode() / base.shoal.churn.perNode()
			fmt.Fprintf(w, "goal: bytes/s per node at N=1000 ≤ 2× N=%d: idle %s (%.2f×), churn %s (%.2f×)\n",
				baseN, verdict(ri <= 2), ri, verdict(rc <= 2), rc)
		}
	}
	for _, r := range rows {
		// The wall time's CPU: the table's is per second of the agents' time.
		if cpu := max(r.shoal.idle.cpuPercent(), r.shoal.churn.cpuPercent()) / max(r.shoal.dilation, 1); cpu >= 90*float64(runtime.NumCPU()) {
			fmt.Fprintf(w, "note: N=%d kept the CPUs busy (%.0f%% of %d00%% of wall time): its times include waiting for a CPU\n",
				r.n, cpu, runtime.NumCPU())
		}
		if r.load > float64(runtime.NumCPU()) {
			fmt.Fprintf(w, "note: N=%d started with a load average of %.1f on %d CPUs: other work competed for them\n",
				r.n, r.load, runtime.NumCPU())
		}
		if r.serf == nil || r.serfErr != "" || r.shoalErr != "" {
			continue
		}
		s, f := r.shoal, r.serf
		ok := s.killMissed == 0 && s.falseFailures == 0 && (f.killMissed > 0 || s.kill <= f.kill)
		fmt.Fprintf(w, "goal: failure detection no slower than stock serf, 0 false failures, N=%d: %s (%s vs %s, %d false)\n",
			s.n, verdict(ok), benchDur(s.kill), benchDur(f.kill), s.falseFailures)
	}
}

// benchDur formats a measured duration for the table; zero is "—".
func benchDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "—"
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

// median returns the median of ds; zero when empty.
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// percentiles returns the p50 and p99 of ds (nearest rank).
func percentiles(ds []time.Duration) (p50, p99 time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(float64(len(s))*p+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return rank(0.50), rank(0.99)
}

// benchGossipConfig returns the gossip configuration an agent of the given
// timing profile runs with (as "shoal agent" builds it from node's
// profiles), on loopback with ephemeral ports.
func benchGossipConfig(timing, name string, k float64) (gossip.Config, error) {
	var c node.Config
	switch timing {
	case "lan":
		c = node.DefaultConfig()
	case "local":
		c = node.DevConfig()
	case "test":
		c = node.TestConfig(name)
	default:
		return gossip.Config{}, fmt.Errorf("--timing %q: want lan, local or test", timing)
	}
	g := c.Gossip
	g.NodeName, g.NodeID, g.Datacenter = name, name, c.Datacenter
	g.BindAddr = "127.0.0.1:0"
	g.ReapAfter = c.ReapAfter
	dilate(&g, k)
	return g, nil
}

// dilate multiplies every timer of an agent by k (time dilation): with
// k = 4 the cluster lives four times slower, so the work of a given
// number of agents takes a quarter of the CPU per second of wall time.
// Durations that timers drive (join, failure detection) are then divided
// by k and rates multiplied by k. Serf's own reconnect and reap timers are
// left alone: they act only on members already failed.
func dilate(g *gossip.Config, k float64) {
	for _, d := range []*time.Duration{
		&g.Timing.ProbeInterval, &g.Timing.ProbeTimeout, &g.Timing.GossipInterval,
		&g.Timing.PushPullInterval, &g.Timing.TCPTimeout,
		&g.SyncInterval, &g.TagInterval, &g.TagMaxDelay, &g.JoinBackoff, &g.JoinBackoffMax,
		&g.ReapAfter, &g.TombstoneTTL, &g.EntryTombstoneTTL,
	} {
		*d = time.Duration(float64(*d) * k)
	}
}

// pushPullPeriod is memberlist's full-state sync period at n members: the
// configured interval, scaled up with log2 n past 32 members (memberlist's
// pushPullScale).
func pushPullPeriod(interval time.Duration, n int) time.Duration {
	const threshold = 32
	if n <= threshold {
		return interval
	}
	mult := 1
	for x := threshold; x < n; x *= 2 {
		mult++
	}
	return time.Duration(mult) * interval
}
