package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// benchEnv owns the processes and files of one benchmark run.
type benchEnv struct {
	dir   string
	procs []*exec.Cmd
}

func newBenchEnv() (*benchEnv, error) {
	dir, err := os.MkdirTemp("", "shoal-bench-")
	if err != nil {
		return nil, err
	}
	return &benchEnv{dir: dir}, nil
}

// close stops every process started and removes the files.
func (b *benchEnv) close() {
	for _, p := range b.procs {
		if p.Process != nil {
			syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
			p.Wait()
		}
	}
	if os.Getenv("SHOAL_BENCH_KEEP") == "" {
		os.RemoveAll(b.dir)
	}
}

// start runs a long-lived helper process in its own process group, its
// output in a log file of the run.
func (b *benchEnv) start(name string, args ...string) (*exec.Cmd, error) {
	logf, err := os.Create(filepath.Join(b.dir, filepath.Base(name)+"-"+strconv.Itoa(len(b.procs))+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	b.procs = append(b.procs, cmd)
	return cmd, nil
}

func (b *benchEnv) write(name, content string) (string, error) {
	p := filepath.Join(b.dir, name)
	return p, os.WriteFile(p, []byte(content), 0o600)
}

// freePort returns a TCP port that was free a moment ago on 127.0.0.1.
func benchPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// freePorts returns n distinct free ports.
func benchPorts(n int) ([]int, error) {
	seen := make(map[int]bool)
	var out []int
	for len(out) < n {
		p, err := benchPort()
		if err != nil {
			return nil, err
		}
		// Keep p+1 free as well: an agent's catalog port is its gossip port + 1.
		if seen[p] || seen[p+1] || seen[p-1] {
			continue
		}
		seen[p] = true
		out = append(out, p)
	}
	return out, nil
}

// waitTCP waits until addr accepts connections.
func waitTCP(ctx context.Context, addr string) error {
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s never accepted connections: %w", addr, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// findTool locates an external program, with the Debian package to install
// when it is missing.
func findTool(name, pkg string) (string, error) {
	for _, p := range []string{name, "/usr/sbin/" + name, "/usr/bin/" + name} {
		if path, err := exec.LookPath(p); err == nil {
			return path, nil
		}
	}
	return "", fmt.Errorf("%s not found: install it with apt-get install -y %s", name, pkg)
}

// wrkResult is one wrk run.
type wrkResult struct {
	RPS      float64
	P50, P99 time.Duration
	Errors   int
	// CPUPerReq is the CPU time the proxy under test (all its processes)
	// spent per request: unlike rps, it barely moves when the machine is
	// busy with other work.
	CPUPerReq time.Duration
	// GCs and GCPause are the garbage collections a Shoal agent ran during
	// the run and their summed stop-the-world pauses (-1: not a Go target).
	GCs     float64
	GCPause time.Duration
	// OwnP99 is the p99 of the agent's own time per request (its
	// shoal_proxy_overhead_seconds) and SchedP99 of the Go scheduler's
	// latency (time runnable before running) during the run, both as
	// bucket bounds; -1 where not measured.
	OwnP99, SchedP99 time.Duration
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's CPU times; 100 on
// every Linux platform Go supports.
const clockTicks = 100

// processCPU returns the CPU time (user + system) used so far by pid and
// all its descendants, from /proc.
func processCPU(pid int) (time.Duration, error) {
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return 0, err
	}
	parent := make(map[int]int)
	ticks := make(map[int]uint64)
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // the process ended meanwhile
		}
		// Fields after the command name, which is in parentheses and may
		// contain spaces: state ppid ... utime(14) stime(15).
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 13 {
			continue
		}
		p, _ := strconv.Atoi(strings.Fields(s)[0])
		ppid, _ := strconv.Atoi(f[1])
		ut, _ := strconv.ParseUint(f[11], 10, 64)
		st, _ := strconv.ParseUint(f[12], 10, 64)
		parent[p], ticks[p] = ppid, ut+st
	}
	var total uint64
	for p := range ticks {
		for q := p; q > 1; q = parent[q] {
			if q == pid {
				total += ticks[p]
				break
			}
		}
	}
	return time.Duration(total) * time.Second / clockTicks, nil
}

var (
	wrkRPS     = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkPct     = regexp.MustCompile(`^\s+(50|99)(?:\.000)?%\s+([0-9.]+)(us|ms|s)`)
	wrkErrors  = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xx  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	wrkUnitDur = map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}
)

// runWrk runs wrk with keep-alive, the given threads, connections and
// duration against url, sending host as the Host header when set.
func runWrk(wrk, url, host string, threads, conns int, d time.Duration) (wrkResult, error) {
	args := []string{"-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns), "-d", d.String(), "--latency"}
	if host != "" {
		args = append(args, "-H", "Host: "+host)
	}
	out, err := exec.Command(wrk, append(args, url)...).CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %v: %s", url, err, out)
	}
	return parseWrk(string(out))
}

func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	m := wrkRPS.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("wrk output without Requests/sec: %q", out)
	}
	r.RPS, _ = strconv.ParseFloat(m[1], 64)
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if m := wrkPct.FindStringSubmatch(sc.Text()); m != nil {
			v, _ := strconv.ParseFloat(m[2], 64)
			d := time.Duration(v * float64(wrkUnitDur[m[3]]))
			if m[1] == "50" {
				r.P50 = d
			} else {
				r.P99 = d
			}
		}
	}
	if m := wrkErrors.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.Atoi(s)
			r.Errors += n
		}
	}
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		n, _ := strconv.Atoi(m[1])
		r.Errors += n
	}
	if r.P50 == 0 || r.P99 == 0 {
		return r, errors.New("wrk output without a latency distribution")
	}
	return r, nil
}

// medianResult takes the median of each figure over several runs.
func medianResult(rs []wrkResult) wrkResult {
	med := func(f func(wrkResult) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		sort.Float64s(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	out := wrkResult{
		RPS:       med(func(r wrkResult) float64 { return r.RPS }),
		CPUPerReq: time.Duration(med(func(r wrkResult) float64 { return float64(r.CPUPerReq) })),
		P50:       time.Duration(med(func(r wrkResult) float64 { return float64(r.P50) })),
		P99:       time.Duration(med(func(r wrkResult) float64 { return float64(r.P99) })),
		GCs:       med(func(r wrkResult) float64 { return r.GCs }),
		GCPause:   time.Duration(med(func(r wrkResult) float64 { return float64(r.GCPause) })),
		OwnP99:    time.Duration(med(func(r wrkResult) float64 { return float64(r.OwnP99) })),
		SchedP99:  time.Duration(med(func(r wrkResult) float64 { return float64(r.SchedP99) })),
	}
	for _, r := range rs {
		out.Errors += r.Errors
	}
	return out
}
