//go:build linux

package main

// The multi-host harness of the fault scenarios (netns_test.go): every host
// is a network namespace with a veth pair to a bridge in the root
// namespace, an address from the test-network range 198.18.0.0/15, one
// "shoal agent" process and one backend (testdata/backend). The bridge has
// an address in each cluster's subnet too, the controller's: the test
// process talks HTTP straight to every host's API and proxy, and the fault
// rules never match it, so a cut or lossy host stays observable.
//
// Concurrent test processes (several engineers on one machine) must not
// trip over each other: a cluster takes a slot, 0-511, by holding an
// exclusive flock on /run/shoal-netns/slot-N.lock, and every name and
// address it makes derives from the slot: namespaces shoal-N-I, root veth
// ends shlN-I, bridge shlbrN, subnet 198.18.0.0/15's N-th /24. Whatever a
// crashed run left behind belongs to a slot nobody holds, which is how the
// sweep at start recognises it.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

const (
	nsLockDir  = "/run/shoal-netns"
	nsMaxSlots = 512 // /24s in 198.18.0.0/15
	nsGossip   = 7946
	nsHTTP     = 8500
	nsProxy    = 15001
	nsBackend  = 8080

	// Member statuses as /v1/agent/members reports them (gossip.MemberStatus).
	nsAlive  = 1
	nsFailed = 4
)

var (
	nsNameRe   = regexp.MustCompile(`^shoal-(\d+)-\d+$`)
	nsBridgeRe = regexp.MustCompile(`^shlbr(\d+)$`)
)

// nsBins are the binaries the hosts run, built once per test run.
type nsBins struct {
	shoal, backend string
}

// nsUnavailable says why this machine cannot host the harness (root, "ip
// netns" and iptables are needed), or "" when it can.
func nsUnavailable() string {
	if os.Geteuid() != 0 {
		return "needs root and ip netns: run as root (CI does) to run the multi-host fault scenarios"
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Sprintf("needs root and ip netns: %s not found (apt-get install iproute2 iptables)", tool)
		}
	}
	if out, err := exec.Command("ip", "netns", "list").CombinedOutput(); err != nil {
		return fmt.Sprintf("needs root and ip netns: ip netns list: %v: %s", err, bytes.TrimSpace(out))
	}
	return ""
}

// nsRequire skips the test unless the harness can run here.
func nsRequire(t *testing.T) {
	t.Helper()
	if why := nsUnavailable(); why != "" {
		t.Skip(why)
	}
}

// nsBuild builds the shoal binary (without -race: the agents are many and
// the machine small; the race detector covers the same code in the
// package tests) and the backend fixture into dir.
func nsBuild(t *testing.T, dir string) nsBins {
	t.Helper()
	b := nsBins{shoal: filepath.Join(dir, "shoal"), backend: filepath.Join(dir, "backend")}
	for _, job := range [][2]string{{b.shoal, "."}, {b.backend, "./testdata/backend"}} {
		took := testutil.Build(t, "", job[0], job[1], []string{"CGO_ENABLED=0"})
		t.Logf("built %s in %v", filepath.Base(job[0]), took.Round(time.Millisecond))
	}
	return b
}

// nsWatchStalls logs each time this test process went more than a second
// without receiving from a 100 ms ticker, until the test ends. A scenario
// that fails on a timeout then shows whether the process that measures it
// was itself starved of CPU.
func nsWatchStalls(t *testing.T) {
	stop, done := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(stop); <-done })
	go func() {
		defer close(done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		last := time.Now()
		for {
			select {
			case <-stop:
				return
			case now := <-tick.C:
				if gap := now.Sub(last); gap > time.Second {
					t.Logf("%s: this test process ran no timer for %v", now.Format("15:04:05.000"), gap.Round(time.Millisecond))
				}
				last = now
			}
		}
	}()
}

// nsRun runs a command to completion and returns its trimmed output.
func nsRun(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return strings.TrimSpace(string(out)), nil
}

// nsMust runs a command and fails the test if it fails.
func nsMust(t *testing.T, args ...string) string {
	t.Helper()
	out, err := nsRun(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// nsLockSlot tries to take slot n without waiting; nil when it is taken.
func nsLockSlot(n int) (*os.File, error) {
	if err := os.MkdirAll(nsLockDir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(nsLockDir, fmt.Sprintf("slot-%d.lock", n)), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, nil
		}
		return nil, err
	}
	return f, nil
}

// nsNamespaces lists the network namespaces by name.
func nsNamespaces() []string {
	out, _ := nsRun("ip", "netns", "list")
	var names []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

// nsRemoveSlot deletes everything slot n may have left: the processes in
// its namespaces, the namespaces (with their veths and firewall rules) and
// its bridge. The caller holds the slot.
//
// A deleted namespace lives on, with its end of a veth, while anything in
// the kernel still refers to it: a socket of a killed process that keeps
// resending its FIN to a peer that is gone, for a minute or two. So the
// slot's veths are deleted from this side too, or the next cluster in the
// slot could not make them again.
func nsRemoveSlot(n int) {
	prefix := fmt.Sprintf("shoal-%d-", n)
	for _, ns := range nsNamespaces() {
		if !strings.HasPrefix(ns, prefix) {
			continue
		}
		nsKillNamespace(ns)
		nsRun("ip", "netns", "delete", ns)
	}
	if out, err := nsRun("ip", "-o", "link", "show", "type", "veth"); err == nil {
		veth := fmt.Sprintf("shl%d-", n)
		for _, line := range strings.Split(out, "\n") {
			// "170: shl0-3@if2: <BROADCAST,...": the name is up to the @.
			if f := strings.Fields(line); len(f) > 1 {
				if name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@"); strings.HasPrefix(name, veth) {
					nsRun("ip", "link", "delete", name)
				}
			}
		}
	}
	nsRun("ip", "link", "delete", fmt.Sprintf("shlbr%d", n))
}

// nsKillNamespace SIGKILLs every process left in namespace ns.
func nsKillNamespace(ns string) {
	out, _ := nsRun("ip", "netns", "pids", ns)
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
			syscall.Kill(pid, syscall.SIGCONT)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// nsSweep removes what crashed runs left: namespaces and bridges of slots
// that no live process holds.
func nsSweep(t *testing.T) {
	slots := map[int]bool{}
	for _, ns := range nsNamespaces() {
		if m := nsNameRe.FindStringSubmatch(ns); m != nil {
			n, _ := strconv.Atoi(m[1])
			slots[n] = true
		}
	}
	if out, err := nsRun("ip", "-o", "link", "show", "type", "bridge"); err == nil {
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			if m := nsBridgeRe.FindStringSubmatch(strings.TrimSuffix(f[1], ":")); m != nil {
				n, _ := strconv.Atoi(m[1])
				slots[n] = true
			}
		}
	}
	for n := range slots {
		f, err := nsLockSlot(n)
		if err != nil || f == nil {
			continue // in use by a running test, or not ours to judge
		}
		t.Logf("sweep: removing leftovers of slot %d from a crashed run", n)
		nsRemoveSlot(n)
		f.Close()
	}
}

// nsCluster is a set of hosts on one bridge.
type nsCluster struct {
	t      *testing.T
	bins   nsBins
	slot   int
	bridge string
	ctrlIP string // the bridge's address: the test process
	subnet string // "198.X.Y.": host i is subnet+i
	dir    string
	hosts  []*nsHost
	// client polls, and gives up quickly so a poll can be retried;
	// writer writes, and waits as long as a user's client would: an
	// answered write is fsynced, and a disk shared with a parallel test
	// run can take seconds for that.
	client *http.Client
	writer *http.Client
	start  time.Time
}

// nsHost is one namespace with its agent and backend.
type nsHost struct {
	c                    *nsCluster
	idx                  int    // 1-based
	name                 string // node name: h1, h2, ...
	ns                   string
	ip                   string
	dataDir              string
	agentLog, backendLog string
	extra                []string // extra agent flags

	mu      sync.Mutex // guards agent and backend
	agent   *nsProc
	backend *nsProc
}

// addHost adds a host named name: a namespace with a veth to the bridge
// and the next address. Nothing runs in it until its backend and agent are
// started.
func (c *nsCluster) addHost(name string) *nsHost {
	t := c.t
	t.Helper()
	i := len(c.hosts) + 1
	h := &nsHost{
		c: c, idx: i, name: name,
		ns:      fmt.Sprintf("shoal-%d-%d", c.slot, i),
		ip:      c.subnet + strconv.Itoa(i),
		dataDir: filepath.Join(c.dir, name+"-data"),
	}
	h.agentLog = filepath.Join(c.dir, name+"-agent.log")
	h.backendLog = filepath.Join(c.dir, name+"-backend.log")
	veth := fmt.Sprintf("shl%d-%d", c.slot, i)
	nsMust(t, "ip", "netns", "add", h.ns)
	nsMust(t, "ip", "-n", h.ns, "link", "set", "lo", "up")
	nsMust(t, "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
	nsMust(t, "ip", "link", "set", veth, "master", c.bridge)
	nsMust(t, "ip", "link", "set", veth, "up")
	nsMust(t, "ip", "-n", h.ns, "addr", "add", h.ip+"/24", "dev", "eth0")
	nsMust(t, "ip", "-n", h.ns, "link", "set", "eth0", "up")
	c.hosts = append(c.hosts, h)
	return h
}

// nsNewCluster makes n hosts on a bridge of their own, each with a backend
// and an agent that joins the others, with extraAgentFlags (--dev for the
// fast gossip profile); it waits until all n see each other alive.
// Everything is removed when the test ends.
func nsNewCluster(t *testing.T, bins nsBins, n int, extraAgentFlags ...string) *nsCluster {
	t.Helper()
	c := nsNewNetwork(t, bins, n, extraAgentFlags...)
	c.startAll()
	return c
}

// nsNewNetwork makes the hosts of nsNewCluster, with nothing running on
// them yet: a test shapes the network or the hosts' flags, then calls
// startAll.
func nsNewNetwork(t *testing.T, bins nsBins, n int, extraAgentFlags ...string) *nsCluster {
	t.Helper()
	c := &nsCluster{t: t, bins: bins, slot: -1, dir: t.TempDir(), start: time.Now()}
	var lock *os.File
	for s := 0; s < nsMaxSlots && lock == nil; s++ {
		f, err := nsLockSlot(s)
		if err != nil {
			t.Fatalf("netns slot lock: %v", err)
		}
		if f != nil {
			lock, c.slot = f, s
		}
	}
	if lock == nil {
		t.Fatalf("all %d netns slots are taken", nsMaxSlots)
	}
	nsRemoveSlot(c.slot) // a crashed run's leftovers in a slot nobody held
	c.bridge = fmt.Sprintf("shlbr%d", c.slot)
	c.subnet = fmt.Sprintf("198.%d.%d.", 18+c.slot/256, c.slot%256)
	c.ctrlIP = c.subnet + "254"
	transport := &http.Transport{MaxIdleConnsPerHost: 8, IdleConnTimeout: 30 * time.Second}
	c.client = &http.Client{Timeout: 3 * time.Second, Transport: transport}
	c.writer = &http.Client{Timeout: 30 * time.Second, Transport: transport}
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range c.hosts {
				t.Logf("--- last lines of %s's agent log (%s):\n%s", h.name, h.agentLog, nsTail(h.agentLog, 25))
			}
		}
		for _, h := range c.hosts {
			h.mu.Lock()
			for _, p := range []*nsProc{h.agent, h.backend} {
				if p != nil {
					p.kill()
				}
			}
			h.mu.Unlock()
		}
		c.client.CloseIdleConnections()
		nsRemoveSlot(c.slot)
		lock.Close()
	})

	nsMust(t, "ip", "link", "add", c.bridge, "type", "bridge")
	nsMust(t, "ip", "addr", "add", c.ctrlIP+"/24", "dev", c.bridge)
	nsMust(t, "ip", "link", "set", c.bridge, "up")
	for i := 1; i <= n; i++ {
		c.addHost(fmt.Sprintf("h%d", i)).extra = extraAgentFlags
	}
	return c
}

// startAll starts every host's backend and agent and waits until all see
// each other alive.
func (c *nsCluster) startAll() {
	t := c.t
	t.Helper()
	for _, h := range c.hosts {
		h.startBackend()
		h.startAgent()
	}
	for _, h := range c.hosts {
		h.waitAPI(60 * time.Second)
	}
	took := c.waitStatuses(90*time.Second, c.hosts, c.allStatus(nsAlive))
	c.logf("cluster of %d on %s0/24 (slot %d) up, all alive everywhere after %v", len(c.hosts), c.subnet, c.slot, took.Round(time.Millisecond))
}

// logf logs with the time since the cluster was made.
func (c *nsCluster) logf(format string, args ...any) {
	c.t.Helper()
	c.t.Logf("%7.2fs %s", time.Since(c.start).Seconds(), fmt.Sprintf(format, args...))
}

// allStatus is the member view where every host has status st.
func (c *nsCluster) allStatus(st int) map[string]int {
	m := make(map[string]int, len(c.hosts))
	for _, h := range c.hosts {
		m[h.name] = st
	}
	return m
}

// host returns host i, 1-based.
func (c *nsCluster) host(i int) *nsHost { return c.hosts[i-1] }

// nsProc is one process started in a namespace.
type nsProc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
}

// nsStart runs argv in namespace ns (the test's own when ns is empty) with
// output appended to logPath.
func nsStart(t *testing.T, ns, logPath string, argv ...string) *nsProc {
	t.Helper()
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close() // the child holds its own copy
	fmt.Fprintf(logFile, "=== %s %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(argv, " "))
	// "ip netns exec" enters the namespace and execs argv: the pid is the
	// program's own, so signals reach it directly.
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
	if ns == "" {
		cmd = exec.Command(argv[0], argv[1:]...)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s in %s: %v", argv[0], ns, err)
	}
	p := &nsProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	return p
}

func (p *nsProc) signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

func (p *nsProc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill SIGKILLs the process (stopped or not) and waits for it.
func (p *nsProc) kill() {
	if !p.running() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (h *nsHost) gossipAddr() string { return net.JoinHostPort(h.ip, strconv.Itoa(nsGossip)) }
func (h *nsHost) apiURL() string     { return "http://" + net.JoinHostPort(h.ip, strconv.Itoa(nsHTTP)) }
func (h *nsHost) proxyURL() string {
	return "http://" + net.JoinHostPort(h.ip, strconv.Itoa(nsProxy)) + "/"
}
func (h *nsHost) backendAddr() (string, int) {
	return h.ip, nsBackend
}

// startAgent runs the host's agent: default (LAN) timing unless the
// cluster was given --dev, all other hosts as seeds, the same data dir and
// addresses on every (re)start.
func (h *nsHost) startAgent() {
	h.c.t.Helper()
	args := []string{h.c.bins.shoal, "agent", "--node", h.name,
		"--bind", h.gossipAddr(),
		"--http-addr", net.JoinHostPort(h.ip, strconv.Itoa(nsHTTP)),
		"--proxy-addr", net.JoinHostPort(h.ip, strconv.Itoa(nsProxy)),
		"--data-dir", h.dataDir}
	for _, o := range h.c.hosts {
		if o != h {
			args = append(args, "--join", o.gossipAddr())
		}
	}
	args = append(args, h.extra...)
	p := nsStart(h.c.t, h.ns, h.agentLog, args...)
	h.mu.Lock()
	h.agent = p
	h.mu.Unlock()
}

// startBackend runs the host's backend on IP:8080, answering its name.
func (h *nsHost) startBackend() {
	h.c.t.Helper()
	ip, port := h.backendAddr()
	p := nsStart(h.c.t, h.ns, h.backendLog, h.c.bins.backend, "-addr", net.JoinHostPort(ip, strconv.Itoa(port)), "-name", h.name)
	h.mu.Lock()
	h.backend = p
	h.mu.Unlock()
}

func (h *nsHost) agentProc() *nsProc {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.agent
}

// signalAgent sends sig to the running agent.
func (h *nsHost) signalAgent(sig syscall.Signal) {
	h.c.t.Helper()
	if err := h.agentProc().signal(sig); err != nil {
		h.c.t.Fatalf("%s: signal agent %v: %v", h.name, sig, err)
	}
}

// killAgent SIGKILLs the agent and waits for it to exit.
func (h *nsHost) killAgent() { h.agentProc().kill() }

// killBackend SIGKILLs the backend and waits for it to exit.
func (h *nsHost) killBackend() {
	h.mu.Lock()
	p := h.backend
	h.mu.Unlock()
	p.kill()
}

// waitAPI waits until the agent's HTTP API answers.
func (h *nsHost) waitAPI(timeout time.Duration) time.Duration {
	h.c.t.Helper()
	return nsPoll(h.c.t, timeout, 50*time.Millisecond, h.name+"'s API to answer", func() (bool, string) {
		if !h.agentProc().running() {
			h.c.t.Fatalf("%s: agent exited:\n%s", h.name, nsTail(h.agentLog, 20))
		}
		var self map[string]any
		if err := h.getJSON("/v1/agent/self", &self); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
}

// getJSON decodes the answer to GET path on the host's API.
func (h *nsHost) getJSON(path string, out any) error {
	resp, err := h.c.client.Get(h.apiURL() + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s GET %s: %s: %s", h.name, path, resp.Status, bytes.TrimSpace(b))
	}
	return json.Unmarshal(b, out)
}

// put sends PUT path with a JSON body and wants 200.
func (h *nsHost) put(path string, body any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(http.MethodPut, h.apiURL()+path, rd)
	if err != nil {
		return err
	}
	resp, err := h.c.writer.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s PUT %s: %s: %s", h.name, path, resp.Status, bytes.TrimSpace(b))
	}
	return nil
}

// register registers service instance id of service name on the host,
// pointing at the host's backend; withCheck adds an HTTP check of it every
// second.
func (h *nsHost) register(id, name string, withCheck bool) {
	t := h.c.t
	t.Helper()
	ip, port := h.backendAddr()
	def := map[string]any{"ID": id, "Name": name, "Address": ip, "Port": port}
	if withCheck {
		def["Check"] = map[string]any{
			"HTTP": fmt.Sprintf("http://%s/health", net.JoinHostPort(ip, strconv.Itoa(port))), "Interval": "1s", "Timeout": "1s",
		}
	}
	if err := h.put("/v1/agent/service/register", def); err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
}

// deregister removes service instance id from the host.
func (h *nsHost) deregister(id string) {
	t := h.c.t
	t.Helper()
	if err := h.put("/v1/agent/service/deregister/"+id, nil); err != nil {
		t.Fatalf("deregister %s: %v", id, err)
	}
}

// members returns the host's member view: name → status.
func (h *nsHost) members() (map[string]int, error) {
	var ms []struct {
		Name   string
		Status int
	}
	if err := h.getJSON("/v1/agent/members", &ms); err != nil {
		return nil, err
	}
	out := make(map[string]int, len(ms))
	for _, m := range ms {
		out[m.Name] = m.Status
	}
	return out, nil
}

// catalog returns every service instance in the host's replicated
// catalog as "node/serviceID", failed nodes' (critical) instances included.
func (h *nsHost) catalog() (map[string]bool, error) {
	var nodes []struct{ Node string }
	if err := h.getJSON("/v1/catalog/nodes", &nodes); err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, n := range nodes {
		var node *struct {
			Services map[string]struct{ ID string }
		}
		if err := h.getJSON("/v1/catalog/node/"+n.Node, &node); err != nil {
			return nil, err
		}
		if node == nil {
			continue // gone between the two calls
		}
		for id := range node.Services {
			out[n.Node+"/"+id] = true
		}
	}
	return out, nil
}

// passing returns the IDs of service name's instances that pass on the host.
func (h *nsHost) passing(name string) (map[string]bool, error) {
	var entries []struct{ Service struct{ ID string } }
	if err := h.getJSON("/v1/health/service/"+name+"?passing", &entries); err != nil {
		return nil, err
	}
	ids := make(map[string]bool, len(entries))
	for _, e := range entries {
		ids[e.Service.ID] = true
	}
	return ids, nil
}

// nsPoll polls cond every interval until it holds and returns how long
// that took; past timeout the test fails with the last state.
func nsPoll(t *testing.T, timeout, interval time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last state: %s", timeout, what, state)
		}
		time.Sleep(interval)
	}
}

// waitStatuses waits until every host in on sees exactly want (member →
// status) and returns how long it took.
func (c *nsCluster) waitStatuses(timeout time.Duration, on []*nsHost, want map[string]int) time.Duration {
	c.t.Helper()
	start := time.Now()
	for _, h := range on {
		nsPoll(c.t, timeout-time.Since(start), 100*time.Millisecond, fmt.Sprintf("%s to see members %v", h.name, want), func() (bool, string) {
			got, err := h.members()
			if err != nil {
				return false, err.Error()
			}
			if len(got) != len(want) {
				return false, fmt.Sprint(got)
			}
			for name, st := range want {
				if got[name] != st {
					return false, fmt.Sprint(got)
				}
			}
			return true, ""
		})
	}
	return time.Since(start)
}

// waitCatalog waits until every host in on holds exactly want in its
// catalog and returns how long it took.
func (c *nsCluster) waitCatalog(timeout time.Duration, on []*nsHost, want map[string]bool) time.Duration {
	c.t.Helper()
	start := time.Now()
	for _, h := range on {
		nsPoll(c.t, timeout-time.Since(start), 100*time.Millisecond, fmt.Sprintf("%s's catalog to hold %d instances", h.name, len(want)), func() (bool, string) {
			got, err := h.catalog()
			if err != nil {
				return false, err.Error()
			}
			return nsSameSet(got, want), nsSetDiff(got, want)
		})
	}
	return time.Since(start)
}

// nsSameSet reports whether a and b hold the same keys.
func nsSameSet(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// nsSetDiff describes how got differs from want.
func nsSetDiff(got, want map[string]bool) string {
	var extra, missing []string
	for k := range got {
		if !want[k] {
			extra = append(extra, k)
		}
	}
	for k := range want {
		if !got[k] {
			missing = append(missing, k)
		}
	}
	sort.Strings(extra)
	sort.Strings(missing)
	return fmt.Sprintf("%d instances; missing %v; unexpected %v", len(got), missing, extra)
}

// Fault injection. Rules live in the hosts' own namespaces (filter table)
// and match peer addresses, never the controller's; heal flushes them.

// ipt runs iptables in the host's namespace.
func (h *nsHost) ipt(args ...string) {
	h.c.t.Helper()
	nsMust(h.c.t, append([]string{"ip", "netns", "exec", h.ns, "iptables", "-w"}, args...)...)
}

// cutOneWay drops every packet from a to b (b's INPUT); b to a still flows.
func (c *nsCluster) cutOneWay(from, to *nsHost) {
	to.ipt("-A", "INPUT", "-s", from.ip, "-j", "DROP")
}

// cut drops every packet between a and b, both ways.
func (c *nsCluster) cut(a, b *nsHost) {
	c.cutOneWay(a, b)
	c.cutOneWay(b, a)
}

// blockUDP drops UDP between a and b, both ways; TCP still flows.
func (c *nsCluster) blockUDP(a, b *nsHost) {
	b.ipt("-A", "INPUT", "-s", a.ip, "-p", "udp", "-j", "DROP")
	a.ipt("-A", "INPUT", "-s", b.ip, "-p", "udp", "-j", "DROP")
}

// isolate cuts h off from every other host.
func (c *nsCluster) isolate(h *nsHost) {
	for _, o := range c.hosts {
		if o != h {
			c.cut(h, o)
		}
	}
}

// partition cuts every link between the two groups.
func (c *nsCluster) partition(left, right []*nsHost) {
	for _, a := range left {
		for _, b := range right {
			c.cut(a, b)
		}
	}
}

// loss drops a random share p of the packets every host receives from its
// peers (the controller's are spared).
func (c *nsCluster) loss(p float64) {
	for _, h := range c.hosts {
		h.ipt("-A", "INPUT", "-i", "eth0", "!", "-s", c.ctrlIP,
			"-m", "statistic", "--mode", "random", "--probability", strconv.FormatFloat(p, 'f', -1, 64), "-j", "DROP")
	}
}

// heal removes every fault rule.
func (c *nsCluster) heal() {
	for _, h := range c.hosts {
		h.ipt("-F", "INPUT")
		h.ipt("-F", "OUTPUT")
	}
}

// nsObservation is one member status a host reported.
type nsObservation struct {
	at               time.Duration
	observer, member string
	status           int
}

// nsMonitor polls the members of a set of hosts and records every status
// other than alive that any of them reports.
type nsMonitor struct {
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex // guards the fields below
	polls   int
	errors  int
	lastErr string
	bad     []nsObservation
}

// monitorMembers polls every host in on every interval, expecting every
// host of the cluster to be alive, until finish is called.
func (c *nsCluster) monitorMembers(on []*nsHost, interval time.Duration) *nsMonitor {
	m := &nsMonitor{stop: make(chan struct{}), done: make(chan struct{})}
	begin := time.Now()
	go func() {
		defer close(m.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-tick.C:
			}
			var wg sync.WaitGroup
			for _, h := range on {
				wg.Add(1)
				go func() {
					defer wg.Done()
					got, err := h.members()
					m.mu.Lock()
					defer m.mu.Unlock()
					m.polls++
					if err != nil {
						m.errors++
						m.lastErr = err.Error()
						return
					}
					for _, o := range c.hosts {
						if st := got[o.name]; st != nsAlive {
							m.bad = append(m.bad, nsObservation{time.Since(begin), h.name, o.name, st})
						}
					}
				}()
			}
			wg.Wait()
		}
	}()
	return m
}

// finish stops the monitor and returns the polls made, the failed polls
// and the non-alive observations.
func (m *nsMonitor) finish() (polls, errs int, lastErr string, bad []nsObservation) {
	close(m.stop)
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.polls, m.errors, m.lastErr, m.bad
}

// checkNoFlaps stops m and fails the test if any host saw a member other
// than alive, or if too few polls got through to mean anything.
func (c *nsCluster) checkNoFlaps(t *testing.T, m *nsMonitor, window time.Duration) (polls int) {
	t.Helper()
	polls, errs, lastErr, bad := m.finish()
	c.logf("membership monitor: %d polls over %v, %d failed (last: %q), %d non-alive observations", polls, window.Round(time.Second), errs, lastErr, len(bad))
	if len(bad) > 0 {
		for i, o := range bad {
			if i == 20 {
				t.Errorf("... and %d more", len(bad)-20)
				break
			}
			t.Errorf("at %.2fs %s saw %s with status %d, want alive (1)", o.at.Seconds(), o.observer, o.member, o.status)
		}
	}
	if errs > polls/10 {
		t.Errorf("%d of %d member polls failed (last: %s): the monitor saw too little", errs, polls, lastErr)
	}
	return polls
}

// nsLoad is an open-loop GET load through one host's proxy: a fixed rate,
// whatever the answers' latency, with every failure counted.
type nsLoad struct {
	stop chan struct{}
	done chan struct{}

	mu        sync.Mutex // guards the fields below
	sent, ok  int
	failed    int
	errs      []string
	byBackend map[string]int
	lats      []nsSample
	begin     time.Time
	end       time.Time
}

// nsSample is one request: when it started, after the load's start, how
// long it took, and the backend that answered ("" if none did).
type nsSample struct {
	at, lat time.Duration
	by      string
}

// nsLoadResult sums up a load run.
type nsLoadResult struct {
	sent, ok, failed int
	errs             []string
	byBackend        map[string]int
	rate             float64 // requests sent per second
	p50, p99, max    time.Duration
	samples          []nsSample // sorted by latency
}

// maxIn returns the highest latency of the requests started in [from, to)
// after the load's start.
func (r nsLoadResult) maxIn(from, to time.Duration) time.Duration {
	var m time.Duration
	for _, s := range r.samples {
		if s.at >= from && s.at < to {
			m = max(m, s.lat)
		}
	}
	return m.Round(100 * time.Microsecond)
}

func (r nsLoadResult) String() string {
	return fmt.Sprintf("%d sent (%.0f/s), %d ok, %d failed; latency p50 %v p99 %v max %v; served by %v",
		r.sent, r.rate, r.ok, r.failed, r.p50, r.p99, r.max, r.byBackend)
}

// startLoad sends rps GETs per second for service to the proxy of via.
// Each request has 30 s to succeed.
func (c *nsCluster) startLoad(via *nsHost, service string, rps int) *nsLoad {
	l := &nsLoad{stop: make(chan struct{}), done: make(chan struct{}), byBackend: map[string]int{}, begin: time.Now()}
	client := &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     30 * time.Second,
			DisableCompression:  true,
		},
	}
	url := via.proxyURL()
	one := func() {
		t0 := time.Now()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Host = service
		resp, err := client.Do(req)
		var body []byte
		if err == nil {
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		lat := time.Since(t0)
		l.mu.Lock()
		defer l.mu.Unlock()
		sample := nsSample{at: t0.Sub(l.begin), lat: lat}
		if err == nil && resp.StatusCode == http.StatusOK {
			sample.by = strings.TrimSpace(string(body))
		}
		l.lats = append(l.lats, sample)
		switch {
		case err != nil:
			l.failed++
			if len(l.errs) < 10 {
				l.errs = append(l.errs, fmt.Sprintf("%.2fs: %v", t0.Sub(l.begin).Seconds(), err))
			}
		case resp.StatusCode != http.StatusOK:
			l.failed++
			if len(l.errs) < 10 {
				l.errs = append(l.errs, fmt.Sprintf("%.2fs: %s: %s", t0.Sub(l.begin).Seconds(), resp.Status, bytes.TrimSpace(body)))
			}
		default:
			l.ok++
			l.byBackend[strings.TrimSpace(string(body))]++
		}
	}
	go func() {
		defer close(l.done)
		defer client.CloseIdleConnections()
		end := nsPace(l.begin, rps, l.stop, func(int) {
			l.mu.Lock()
			l.sent++
			l.mu.Unlock()
			one()
		})
		l.mu.Lock()
		l.end = end
		l.mu.Unlock()
	}()
	return l
}

// nsPace calls fire(i) for the i-th request, each on a goroutine of its
// own, rps a second on the schedule that starts at begin (a late tick sends
// what is due), until stop is closed; then it waits for every call to return
// and gives the time the load stopped.
func nsPace(begin time.Time, rps int, stop <-chan struct{}, fire func(i int)) time.Time {
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for sent := 0; ; {
		select {
		case <-stop:
			wg.Wait()
			return time.Now()
		case <-tick.C:
		}
		for due := int(time.Since(begin).Seconds() * float64(rps)); sent < due; sent++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				fire(i)
			}(sent)
		}
	}
}

// finish stops the load, waits for the requests in flight and sums up.
func (l *nsLoad) finish() nsLoadResult {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	r := nsLoadResult{sent: l.sent, ok: l.ok, failed: l.failed, errs: l.errs, byBackend: l.byBackend, samples: l.lats}
	r.rate = float64(l.sent) / l.end.Sub(l.begin).Seconds()
	sort.Slice(l.lats, func(i, j int) bool { return l.lats[i].lat < l.lats[j].lat })
	if n := len(l.lats); n > 0 {
		r.p50 = l.lats[n/2].lat.Round(100 * time.Microsecond)
		r.p99 = l.lats[n*99/100].lat.Round(100 * time.Microsecond)
		r.max = l.lats[n-1].lat.Round(100 * time.Microsecond)
	}
	return r
}

// elapsed is the time since the load started.
func (l *nsLoad) elapsed() time.Duration { return time.Since(l.begin) }

// progress reports how many requests the load sent and failed so far.
func (l *nsLoad) progress() (sent, failed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sent, l.failed
}

// nsTail returns the last n lines of the file at path.
func nsTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
