package main

import (
	"bytes"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBenchCluster runs the convergence benchmark on 5 in-process agents
// with the test timers, without serf, and checks the table.
func TestBenchCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("runs agents for about ten seconds")
	}
	start := time.Now()
	out, stderr, err := runCLI(t, "cluster", "--nodes", "5", "--registrations", "3",
		"--timing", "test", "--serf-max", "0", "--window", "1s")
	if err != nil {
		t.Fatalf("bench cluster: %v\n%s", err, stderr)
	}
	t.Logf("took %s\n%s\n%s", time.Since(start).Round(time.Millisecond), stderr, out)

	lines := strings.Split(strings.TrimSpace(out), "\n")
	cols := splitCells(lines[0])
	if !slices.Equal(cols, clusterColumns) {
		t.Fatalf("columns %q, want %q", cols, clusterColumns)
	}
	row := map[string]string{}
	for i, v := range splitCells(lines[1]) {
		row[cols[i]] = v
	}
	if row["N"] != "5" {
		t.Fatalf("first row %q, want N=5", lines[1])
	}
	p50, p99 := benchCell(t, row, "reg p50"), benchCell(t, row, "reg p99")
	if p50 <= 0 || p50 > p99 || p99 > 5*time.Second {
		t.Errorf("registration p50 %v, p99 %v: want 0 < p50 ≤ p99 ≤ 5s", p50, p99)
	}
	if kill := benchCell(t, row, "kill→failed"); kill <= 0 || kill > 15*time.Second {
		t.Errorf("kill→failed %v: want a few seconds at most with the test timers", kill)
	}
	if _, err := strconv.Atoi(row["false failures"]); err != nil {
		t.Errorf("false failures %q: not a count", row["false failures"])
	}
	for _, col := range []string{"B/s/node idle", "B/s/node churn", "MiB/agent", "goroutines/agent"} {
		if v, err := strconv.ParseFloat(row[col], 64); err != nil || v <= 0 {
			t.Errorf("%s %q: want a positive number", col, row[col])
		}
	}
	for _, col := range []string{"serf join", "serf event p50", "serf event p99", "serf kill→failed"} {
		if row[col] != "—" {
			t.Errorf("%s %q without serf, want —", col, row[col])
		}
	}
}

// TestBenchClusterInMemoryDilated runs the same on agents that talk
// through memory, with their timers twice as long, and checks the figures
// the dilation scales.
func TestBenchClusterInMemoryDilated(t *testing.T) {
	if testing.Short() {
		t.Skip("runs agents for about twenty seconds")
	}
	out, stderr, err := runCLI(t, "cluster", "--nodes", "5", "--registrations", "3", "--kills", "1",
		"--timing", "test", "--serf-max", "0", "--window", "1s", "--network", "memory", "--dilation", "2")
	if err != nil {
		t.Fatalf("bench cluster: %v\n%s", err, stderr)
	}
	t.Logf("%s\n%s", stderr, out)
	row := printedRow(out)
	// Failure detection with the test timers takes about a second of the
	// agents' time, reported as such: not twice that.
	if kill := benchCell(t, row, "kill→failed"); kill <= 0 || kill > 8*time.Second {
		t.Errorf("kill→failed %v: want the agents' time, a few seconds at most", kill)
	}
	if p99 := benchCell(t, row, "reg p99"); p99 <= 0 || p99 > 5*time.Second {
		t.Errorf("registration p99 %v", p99)
	}
	for _, col := range []string{"B/s/node idle", "B/s/node churn", "B/change"} {
		if v, err := strconv.ParseFloat(row[col], 64); err != nil || v <= 0 {
			t.Errorf("%s %q: want a positive number", col, row[col])
		}
	}
}

// TestBenchClusterBlackHole black-holes one of five agents and times
// registrations on the others.
func TestBenchClusterBlackHole(t *testing.T) {
	if testing.Short() {
		t.Skip("runs agents for a few seconds")
	}
	out, stderr, err := runCLI(t, "cluster", "--nodes", "5", "--registrations", "5",
		"--timing", "test", "--serf-max", "0", "--network", "memory", "--blackhole")
	if err != nil {
		t.Fatalf("bench cluster: %v\n%s", err, stderr)
	}
	if !strings.Contains(stderr, "black-holed bench-0003") {
		t.Errorf("no agent black-holed:\n%s", stderr)
	}
	row := printedRow(out)
	if p99 := benchCell(t, row, "reg p99"); p99 <= 0 || p99 > 5*time.Second {
		t.Errorf("registration p99 with a black-holed agent %v", p99)
	}
	if row["kill→failed"] != "—" {
		t.Errorf("kill→failed %q measured in black-hole mode", row["kill→failed"])
	}
}

func TestBenchClusterRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--nodes", "10,abc"},
		{"--nodes", "2"},
		{"--timing", "wan"},
		{"--registrations", "0"},
		{"--network", "carrier-pigeon"},
		{"--dilation", "0.5"},
		{"--blackhole"}, // needs --network memory
	} {
		_, _, err := runCLI(t, append([]string{"cluster", "--serf-max", "0"}, args...)...)
		if err == nil {
			t.Errorf("cluster %q: no error", args)
		}
	}
}

func TestParseSizes(t *testing.T) {
	got, err := parseSizes("200, 10,50,10")
	if err != nil || !slices.Equal(got, []int{10, 50, 200}) {
		t.Errorf("parseSizes = %v, %v; want [10 50 200]", got, err)
	}
}

func TestPushPullPeriod(t *testing.T) {
	// memberlist's pushPullScale: ceil(log2 n - log2 32) + 1 times the
	// interval past 32 members.
	for _, c := range []struct{ n, mult int }{{10, 1}, {32, 1}, {33, 2}, {50, 2}, {64, 2}, {100, 3}, {200, 4}, {1000, 6}} {
		if got := pushPullPeriod(30*time.Second, c.n); got != time.Duration(c.mult)*30*time.Second {
			t.Errorf("pushPullPeriod(30s, %d) = %v, want %d×30s", c.n, got, c.mult)
		}
	}
}

func TestPercentiles(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	if p50, p99 := percentiles(ds); p50 != 50*time.Millisecond || p99 != 99*time.Millisecond {
		t.Errorf("percentiles of 1..100ms = %v, %v; want 50ms, 99ms", p50, p99)
	}
	if p50, p99 := percentiles(ds[:3]); p50 != 99*time.Millisecond || p99 != 100*time.Millisecond {
		t.Errorf("percentiles of 3 = %v, %v; want the middle and the largest", p50, p99)
	}
	if m := median([]time.Duration{3, 1, 2, 4}); m != 2 {
		t.Errorf("median of 1..4 = %v, want 2 (rounded down)", m)
	}
}

// splitCells splits a line of the right-aligned table: cells are apart by
// two spaces or more, and may hold single spaces.
func splitCells(line string) []string {
	return regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(line), -1)
}

// benchCell parses a duration cell ("1.7ms", "1.03s").
func benchCell(t *testing.T, row map[string]string, col string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(row[col])
	if err != nil {
		t.Fatalf("%s %q: not a duration", col, row[col])
	}
	return d
}

// runCLI runs the app as the shell would run "shoal-bench args...".
func runCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := newApp()
	app.Writer = &out
	app.ErrWriter = &errOut
	err = app.Run(append([]string{"shoal-bench"}, args...))
	return out.String(), errOut.String(), err
}

// printedRow reads the first row of the cluster table in out, by column.
func printedRow(out string) map[string]string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	row := map[string]string{}
	for i, v := range splitCells(lines[1]) {
		row[clusterColumns[i]] = v
	}
	return row
}
