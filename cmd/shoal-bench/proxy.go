package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	nethttp "net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
)

func benchProxyCommand() *cli.Command {
	return &cli.Command{
		Name:  "proxy",
		Usage: "compare Shoal's proxy with nginx and HAProxy over the same 3 backends, using wrk",
		Description: `Starts 3 nginx backends, then measures with wrk (keep-alive) in one run:
direct to one backend, nginx and HAProxy proxying to the 3 backends, Shoal's
HTTP proxy (a real "shoal agent" process), and the TCP path of HAProxy (mode
tcp) and Shoal (--upstream). Every target runs --rounds times, interleaved,
and the table shows medians. Needs the Debian packages wrk, nginx-light (or
nginx) and haproxy.

--shoal names the shoal binary to run; repeat it as LABEL=PATH to compare
builds side by side in the same run (e.g. before=/tmp/shoal-old
after=./shoal).`,
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "duration", Value: 10 * time.Second, Usage: "length of each wrk run"},
			&cli.IntFlag{Name: "threads", Value: 2, Usage: "wrk threads"},
			&cli.IntFlag{Name: "connections", Value: 64, Usage: "wrk connections"},
			&cli.IntFlag{Name: "rounds", Value: 3, Usage: "runs per target; medians are reported"},
			&cli.IntFlag{Name: "workers", Value: 2, Usage: "nginx workers and HAProxy threads of the proxies (Shoal uses GOMAXPROCS)"},
			&cli.BoolFlag{Name: "mesh", Value: true, Usage: "add the two-hop rows: Shoal's mTLS mesh against an HAProxy chain (plain and mutual TLS)"},
			&cli.BoolFlag{Name: "routed", Value: true, Usage: "add a row of Shoal with a traffic policy: one route, one split and a resolver"},
			&cli.StringSliceFlag{Name: "shoal", Usage: "shoal binary as `PATH or LABEL=PATH`, repeatable (default: shoal beside this binary, else in $PATH)"},
		},
		Action: runBenchProxy,
	}
}

type benchTarget struct {
	name, url, host string
	pid             int    // the process (tree) whose CPU is measured
	metrics         string // a Shoal agent's /metrics, for its GC counts; "" for others
	pid2            int    // a second process, for two-hop targets; 0: none
}

func runBenchProxy(c *cli.Context) error {
	wrk, err := findTool("wrk", "wrk")
	if err != nil {
		return err
	}
	nginx, err := findTool("nginx", "nginx-light")
	if err != nil {
		return err
	}
	haproxy, err := findTool("haproxy", "haproxy")
	if err != nil {
		return err
	}
	shoals, err := shoalBinaries(c.StringSlice("shoal"))
	if err != nil {
		return err
	}
	env, err := newBenchEnv()
	if err != nil {
		return err
	}
	defer env.close()

	ports, err := benchPorts(6)
	if err != nil {
		return err
	}
	backends := ports[0:3]
	nginxPort, haHTTP, haTCP := ports[3], ports[4], ports[5]
	workers := c.Int("workers")

	backendProc, err := startNginx(env, nginx, "backends", 1, nginxBackends(env.dir, backends))
	if err != nil {
		return err
	}
	nginxProc, err := startNginx(env, nginx, "proxy", workers, nginxProxy(env.dir, nginxPort, backends))
	if err != nil {
		return err
	}
	haPids := map[string]int{}
	for _, mode := range []struct {
		mode string
		port int
	}{{"http", haHTTP}, {"tcp", haTCP}} {
		conf, err := env.write("haproxy-"+mode.mode+".cfg", haproxyConfig(mode.mode, workers, mode.port, backends))
		if err != nil {
			return err
		}
		proc, err := env.start(haproxy, "-db", "-f", conf)
		if err != nil {
			return err
		}
		haPids[mode.mode] = proc.Process.Pid
	}
	ctx, cancel := context.WithTimeout(c.Context, 30*time.Second)
	defer cancel()
	for _, p := range append(append([]int{}, backends...), nginxPort, haHTTP, haTCP) {
		if err := waitTCP(ctx, fmt.Sprintf("127.0.0.1:%d", p)); err != nil {
			return err
		}
	}
	var shoalHTTP, shoalTCP, mesh []benchTarget
	for _, sb := range shoals {
		http, tcp, err := startShoalProxy(ctx, env, sb, backends, false)
		if err != nil {
			return err
		}
		shoalHTTP, shoalTCP = append(shoalHTTP, http), append(shoalTCP, tcp)
		if c.Bool("routed") {
			routed, _, err := startShoalProxy(ctx, env, sb, backends, true)
			if err != nil {
				return err
			}
			shoalHTTP = append(shoalHTTP, routed)
		}
	}
	if c.Bool("mesh") {
		mctx, mcancel := context.WithTimeout(c.Context, 60*time.Second)
		defer mcancel()
		names := []string{"ha-a", "ha-b"}
		for i := range shoals {
			names = append(names, fmt.Sprintf("mesh-a%d", i), fmt.Sprintf("mesh-b%d", i))
		}
		p, err := writeBenchPKI(env, names...)
		if err != nil {
			return err
		}
		for _, pk := range []*benchPKI{nil, p} {
			t, err := startHAProxyChain(mctx, env, haproxy, workers, pk, backends)
			if err != nil {
				return err
			}
			mesh = append(mesh, t)
		}
		for i, sb := range shoals {
			t, err := startShoalMesh(mctx, env, sb, p, backends, fmt.Sprint(i))
			if err != nil {
				return err
			}
			mesh = append(mesh, t)
		}
	}

	targets := []benchTarget{
		{"direct (1 backend)", fmt.Sprintf("http://127.0.0.1:%d/", backends[0]), "", backendProc.Process.Pid, "", 0},
		{"nginx", fmt.Sprintf("http://127.0.0.1:%d/", nginxPort), "", nginxProc.Process.Pid, "", 0},
		{"haproxy", fmt.Sprintf("http://127.0.0.1:%d/", haHTTP), "", haPids["http"], "", 0},
	}
	targets = append(targets, shoalHTTP...)
	targets = append(targets, benchTarget{"haproxy tcp", fmt.Sprintf("http://127.0.0.1:%d/", haTCP), "", haPids["tcp"], "", 0})
	targets = append(targets, shoalTCP...)
	targets = append(targets, mesh...)
	d, threads, conns, rounds := c.Duration("duration"), c.Int("threads"), c.Int("connections"), c.Int("rounds")
	fmt.Fprintf(c.App.ErrWriter, "wrk -t%d -c%d -d%s, %d rounds, %d targets: about %s\n",
		threads, conns, d, rounds, len(targets), (time.Duration(rounds*len(targets)) * (d + time.Second)).Round(time.Second))
	results := make(map[string][]wrkResult)
	for round := 0; round < rounds; round++ {
		for _, t := range targets {
			cpu0, _ := targetCPU(t)
			m0 := agentSamples(t.metrics)
			r, err := runWrk(wrk, t.url, t.host, threads, conns, d)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			if cpu1, err := targetCPU(t); err == nil && r.RPS > 0 {
				r.CPUPerReq = time.Duration(float64(cpu1-cpu0) / (r.RPS * d.Seconds()))
			}
			r.GCs, r.GCPause, r.OwnP99, r.SchedP99 = -1, -1, -1, -1
			if m1 := agentSamples(t.metrics); m0 != nil && m1 != nil {
				r.GCs = m1["go_gc_duration_seconds_count"] - m0["go_gc_duration_seconds_count"]
				r.GCPause = time.Duration((m1["go_gc_duration_seconds_sum"] - m0["go_gc_duration_seconds_sum"]) * float64(time.Second))
				r.OwnP99 = runQuantile(m0, m1, "shoal_proxy_overhead_seconds", 0.99)
				r.SchedP99 = runQuantile(m0, m1, "go_sched_latencies_seconds", 0.99)
			}
			results[t.name] = append(results[t.name], r)
			fmt.Fprintf(c.App.ErrWriter, "  round %d %-18s %8.0f rps  p50 %-9v p99 %-9v cpu/req %-8v gc %-14s own p99 %-9s sched p99 %s\n",
				round+1, t.name, r.RPS, r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.CPUPerReq.Round(100*time.Nanosecond), gcColumn(r),
				quantileColumn(r.OwnP99), quantileColumn(r.SchedP99))
		}
	}
	med := make(map[string]wrkResult)
	for name, rs := range results {
		med[name] = medianResult(rs)
	}
	w := tabwriter.NewWriter(c.App.Writer, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "target\trps\tp50\tp99\tcpu/req\terrors\trps vs haproxy\tp99 vs haproxy\tcpu/req vs haproxy\tGC per run\town p99\tsched p99\t")
	for _, t := range targets {
		r := med[t.name]
		base := med["haproxy"]
		switch {
		case strings.Contains(t.name, " tcp"):
			base = med["haproxy tcp"]
		case strings.Contains(t.name, " mesh") || strings.Contains(t.name, " chain"):
			base = med["haproxy chain mtls"]
		}
		fmt.Fprintf(w, "%s\t%.0f\t%v\t%v\t%v\t%d\t%.2f×\t%.2f×\t%.2f×\t%s\t%s\t%s\t\n", t.name, r.RPS, r.P50.Round(time.Microsecond),
			r.P99.Round(time.Microsecond), r.CPUPerReq.Round(100*time.Nanosecond), r.Errors, r.RPS/base.RPS,
			float64(r.P99)/float64(base.P99), float64(r.CPUPerReq)/float64(base.CPUPerReq), gcColumn(r),
			quantileColumn(r.OwnP99), quantileColumn(r.SchedP99))
	}
	return w.Flush()
}

// targetCPU is the CPU time used so far by a target's processes.
func targetCPU(t benchTarget) (time.Duration, error) {
	cpu, err := processCPU(t.pid)
	if err != nil || t.pid2 == 0 {
		return cpu, err
	}
	cpu2, err := processCPU(t.pid2)
	return cpu + cpu2, err
}

// agentSamples is one scrape of a Shoal agent's /metrics: each sample
// line's name with its labels, as written, mapped to its value; nil when
// url is empty or unreadable.
func agentSamples(url string) map[string]float64 {
	if url == "" {
		return nil
	}
	resp, err := nethttp.Get(url)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil
	}
	out := make(map[string]float64)
	for _, line := range strings.Split(string(body), "\n") {
		i := strings.LastIndexByte(line, ' ')
		if line == "" || line[0] == '#' || i < 0 {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[i+1:], &v); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// runQuantile is the q-quantile, from the histogram name's buckets, of the
// observations made between scrapes a and b: the upper bound of the bucket
// it falls in. -1 when the histogram is missing or saw nothing.
func runQuantile(a, b map[string]float64, name string, q float64) time.Duration {
	type bucket struct{ le, n float64 }
	var bs []bucket
	prefix := name + `_bucket{le="`
	for k, v := range b {
		le, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		le = strings.TrimSuffix(le, `"}`)
		var bound float64
		if le == "+Inf" {
			bound = math.Inf(1)
		} else if _, err := fmt.Sscan(le, &bound); err != nil {
			continue
		}
		bs = append(bs, bucket{bound, v - a[k]})
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
	if len(bs) == 0 || bs[len(bs)-1].n <= 0 {
		return -1
	}
	want := q * bs[len(bs)-1].n
	for _, bk := range bs {
		if bk.n >= want {
			if math.IsInf(bk.le, 1) {
				return time.Duration(math.MaxInt64)
			}
			return time.Duration(bk.le * float64(time.Second))
		}
	}
	return -1
}

// gcColumn shows a run's garbage collections, or "-" for a target that is
// not a Shoal agent.
func gcColumn(r wrkResult) string {
	if r.GCs < 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f (%v)", r.GCs, r.GCPause.Round(time.Microsecond))
}

// quantileColumn shows a quantile from runQuantile: "≤ bound", or "-".
func quantileColumn(d time.Duration) string {
	switch {
	case d < 0:
		return "-"
	case d == time.Duration(math.MaxInt64):
		return "> max bucket"
	}
	return "≤ " + d.Round(time.Microsecond).String()
}

// shoalBinary is one build of shoal to measure.
type shoalBinary struct{ label, path string }

// shoalBinaries reads the --shoal values: PATH or LABEL=PATH.
func shoalBinaries(specs []string) ([]shoalBinary, error) {
	if len(specs) == 0 {
		path, err := defaultShoal()
		if err != nil {
			return nil, err
		}
		return []shoalBinary{{path: path}}, nil
	}
	var out []shoalBinary
	labels := map[string]bool{}
	for _, spec := range specs {
		label, path, ok := strings.Cut(spec, "=")
		if !ok {
			label, path = "", spec
		}
		if len(specs) > 1 && label == "" {
			return nil, fmt.Errorf("--shoal %q: label each binary (LABEL=PATH) when comparing several", spec)
		}
		if labels[label] {
			return nil, fmt.Errorf("--shoal: label %q given twice", label)
		}
		labels[label] = true
		abs, err := exec.LookPath(path)
		if err != nil {
			return nil, fmt.Errorf("--shoal %q: %w", spec, err)
		}
		out = append(out, shoalBinary{label: label, path: abs})
	}
	return out, nil
}

// defaultShoal finds the shoal binary beside this one, or in $PATH.
func defaultShoal() (string, error) {
	if self, err := os.Executable(); err == nil {
		beside := filepath.Join(filepath.Dir(self), "shoal")
		if st, err := os.Stat(beside); err == nil && !st.IsDir() {
			return beside, nil
		}
	}
	if path, err := exec.LookPath("shoal"); err == nil {
		return path, nil
	}
	return "", errors.New("no shoal binary found beside shoal-bench or in $PATH: build one (go build -o shoal ./cmd/shoal) and pass --shoal ./shoal")
}

// routedEntries is the traffic policy of the routed row: a router whose
// one route takes every request wrk sends, a 67/33 split over two subsets
// and their resolver (policy, connect timeout, subsets by Meta), so that
// every request goes through all three stages.
var routedEntries = []string{
	`{"Kind":"service-resolver","Name":"web","ConnectTimeout":"1s","LoadBalancer":{"Policy":"round_robin"},
	  "Subsets":{"a":{"Filter":"Service.Meta.version == a"},"b":{"Filter":"Service.Meta.version == b"}}}`,
	`{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":67,"ServiceSubset":"a"},{"Weight":33,"ServiceSubset":"b"}]}`,
	`{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"PathPrefix":"/","Methods":["GET"]}},"Destination":{"Service":"web","RequestTimeout":"30s"}}]}`,
}

// startShoalProxy runs an agent of binary sb with the backends registered
// as service web (the first ones version a, the last b), and returns its
// HTTP and TCP proxy targets once the HTTP proxy reaches all of them;
// routed adds routedEntries.
func startShoalProxy(ctx context.Context, env *benchEnv, sb shoalBinary, backends []int, routed bool) (http, tcp benchTarget, err error) {
	ports, err := benchPorts(5)
	if err != nil {
		return http, tcp, err
	}
	gossipPort, apiPort, proxyPort, tcpPort := ports[0], ports[2], ports[3], ports[4]
	nodeName := "bench-" + strings.ReplaceAll(sb.label+"x", " ", "-")
	if routed {
		nodeName += "-routed"
	}
	proc, err := env.start(sb.path, "agent", "--dev", "--node", nodeName, "--log-level", "warn",
		"--bind", fmt.Sprintf("127.0.0.1:%d", gossipPort),
		"--http-addr", fmt.Sprintf("127.0.0.1:%d", apiPort),
		"--proxy-addr", fmt.Sprintf("127.0.0.1:%d", proxyPort),
		"--upstream", fmt.Sprintf("web=127.0.0.1:%d", tcpPort),
		"--dns-addr", "", // agents side by side must not share DNS's port
		"--lb-policy", "round_robin")
	if err != nil {
		return http, tcp, err
	}
	for _, p := range []int{apiPort, proxyPort, tcpPort} {
		if err := waitTCP(ctx, fmt.Sprintf("127.0.0.1:%d", p)); err != nil {
			return http, tcp, fmt.Errorf("%s: %w", sb.path, err)
		}
	}
	api := fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	put := func(path string, body []byte) error {
		req, _ := nethttp.NewRequest(nethttp.MethodPut, api+path, bytes.NewReader(body))
		resp, err := nethttp.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != nethttp.StatusOK {
			msg, _ := io.ReadAll(resp.Body)
			return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))
		}
		return nil
	}
	for i, p := range backends {
		version := "a"
		if i == len(backends)-1 {
			version = "b"
		}
		body, _ := json.Marshal(map[string]any{"ID": fmt.Sprintf("web-%d", i+1), "Name": "web", "Address": "127.0.0.1", "Port": p,
			"Meta": map[string]string{"version": version}})
		if err := put("/v1/agent/service/register", body); err != nil {
			return http, tcp, fmt.Errorf("register backend: %w", err)
		}
	}
	if routed {
		for _, e := range routedEntries {
			if err := put("/v1/config", []byte(e)); err != nil {
				return http, tcp, fmt.Errorf("write the routed row's entries: %w", err)
			}
		}
	}
	proxyURL := fmt.Sprintf("http://127.0.0.1:%d/", proxyPort)
	if err := waitProxy(ctx, proxyURL, "web", len(backends)); err != nil {
		return http, tcp, err
	}
	suffix := ""
	if sb.label != "" {
		suffix = " " + sb.label
	}
	if routed {
		suffix = " routed" + suffix
	}
	http = benchTarget{"shoal" + suffix, proxyURL, "web", proc.Process.Pid, api + "/metrics", 0}
	tcp = benchTarget{"shoal tcp" + suffix, fmt.Sprintf("http://127.0.0.1:%d/", tcpPort), "", proc.Process.Pid, api + "/metrics", 0}
	return http, tcp, nil
}

// waitProxy waits until the proxy routes host to n distinct backends.
func waitProxy(ctx context.Context, url, host string, n int) error {
	seen := make(map[string]bool)
	for len(seen) < n {
		req, _ := nethttp.NewRequestWithContext(ctx, nethttp.MethodGet, url, nil)
		req.Host = host
		resp, err := nethttp.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == nethttp.StatusOK {
				seen[string(b)] = true
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("shoal proxy never reached %d backends (saw %d)", n, len(seen))
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

func startNginx(env *benchEnv, nginx, name string, workers int, http string) (*exec.Cmd, error) {
	conf := fmt.Sprintf(`worker_processes %d;
daemon off;
master_process on;
pid %[2]s/%[3]s.pid;
error_log %[2]s/%[3]s.err warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 10000000;
  client_body_temp_path %[2]s/%[3]s-body;
  proxy_temp_path %[2]s/%[3]s-proxy;
  fastcgi_temp_path %[2]s/%[3]s-fcgi;
  uwsgi_temp_path %[2]s/%[3]s-uwsgi;
  scgi_temp_path %[2]s/%[3]s-scgi;
%[4]s
}
`, workers, env.dir, name, http)
	path, err := env.write("nginx-"+name+".conf", conf)
	if err != nil {
		return nil, err
	}
	return env.start(nginx, "-e", env.dir+"/"+name+".err", "-c", path)
}

func nginxBackends(dir string, ports []int) string {
	var b strings.Builder
	for i, p := range ports {
		fmt.Fprintf(&b, "  server { listen 127.0.0.1:%d; location / { return 200 \"backend %d\\n\"; } }\n", p, i+1)
	}
	return b.String()
}

func nginxProxy(dir string, port int, backends []int) string {
	var b strings.Builder
	b.WriteString("  upstream web {\n")
	for _, p := range backends {
		fmt.Fprintf(&b, "    server 127.0.0.1:%d;\n", p)
	}
	b.WriteString("    keepalive 256;\n  }\n")
	fmt.Fprintf(&b, `  server {
    listen 127.0.0.1:%d;
    location / {
      proxy_pass http://web;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
`, port)
	return b.String()
}

func haproxyConfig(mode string, threads, port int, backends []int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
  nbthread %d
  maxconn 4096
defaults
  mode %s
  timeout connect 5s
  timeout client 60s
  timeout server 60s
`, threads, mode)
	if mode == "http" {
		b.WriteString("  http-reuse always\n")
	}
	fmt.Fprintf(&b, "frontend f\n  bind 127.0.0.1:%d\n  default_backend b\nbackend b\n  balance roundrobin\n", port)
	for i, p := range backends {
		fmt.Fprintf(&b, "  server s%d 127.0.0.1:%d\n", i+1, p)
	}
	return b.String()
}
