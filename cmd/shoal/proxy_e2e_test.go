package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// killableBackend is a backend whose "SIGKILL" is what the network sees of
// one: the listener goes away (connects are refused) and every open
// connection is reset.
type killableBackend struct {
	name string
	ln   net.Listener
	srv  *http.Server
	hits atomic.Int64

	mu    sync.Mutex // guards conns
	conns map[net.Conn]struct{}
}

func startBackend(t *testing.T, name string) *killableBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &killableBackend{name: name, ln: ln, conns: make(map[net.Conn]struct{})}
	b.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b.hits.Add(1)
			io.WriteString(w, b.name)
		}),
		ConnState: func(c net.Conn, s http.ConnState) {
			b.mu.Lock()
			defer b.mu.Unlock()
			if s == http.StateNew {
				b.conns[c] = struct{}{}
			} else if s == http.StateClosed || s == http.StateHijacked {
				delete(b.conns, c)
			}
		},
	}
	go b.srv.Serve(ln)
	t.Cleanup(b.kill)
	return b
}

func (b *killableBackend) port() int { return b.ln.Addr().(*net.TCPAddr).Port }

func (b *killableBackend) kill() {
	b.ln.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	for c := range b.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // reset, as the kernel does for a killed process
		}
		c.Close()
	}
}

// echoBackend is a line-echo TCP server that prefixes each line with its
// name, and counts connections.
type echoBackend struct {
	name  string
	ln    net.Listener
	conns atomic.Int64
}

func startEcho(t *testing.T, name string) *echoBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echoBackend{name: name, ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.conns.Add(1)
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					fmt.Fprintf(c, "%s %s\n", e.name, sc.Text())
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return e
}

// proxyAgent runs "shoal agent" with the extra flags a proxy test needs.
type proxyAgent struct {
	name, httpAddr, proxyAddr, gossipAddr string
	cmd                                   *exec.Cmd
	exited                                chan struct{}
}

func startProxyAgent(t *testing.T, bin, name string, ports agentPorts, extra []string, join ...string) *proxyAgent {
	t.Helper()
	dir := t.TempDir()
	a := &proxyAgent{
		name:       name,
		gossipAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports.gossip)),
		httpAddr:   net.JoinHostPort("127.0.0.1", strconv.Itoa(ports.http)),
		proxyAddr:  net.JoinHostPort("127.0.0.1", strconv.Itoa(ports.proxy)),
		exited:     make(chan struct{}),
	}
	args := append([]string{"agent", "--dev", "--node", name, "--bind", a.gossipAddr, "--http-addr", a.httpAddr,
		"--proxy-addr", a.proxyAddr, "--dns-addr", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "data"), "--log-level", "warn"}, extra...)
	for _, j := range join {
		args = append(args, "--join", j)
	}
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	a.cmd = exec.Command(bin, args...)
	a.cmd.Env = childEnv()
	a.cmd.Stdout, a.cmd.Stderr = logFile, logFile
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logFile.Close()
	go func() { a.cmd.Wait(); close(a.exited) }()
	t.Cleanup(func() {
		a.sigkill()
		if t.Failed() {
			t.Logf("--- last lines of %s's log:\n%s", name, tailFile(logPath, 30))
		}
	})
	return a
}

func (a *proxyAgent) sigkill() {
	a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.exited
}

func (a *proxyAgent) register(t *testing.T, def map[string]any) {
	t.Helper()
	body, _ := json.Marshal(def)
	req, _ := http.NewRequest(http.MethodPut, "http://"+a.httpAddr+"/v1/agent/service/register", bytes.NewReader(body))
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			t.Fatalf("register on %s: %s %s", a.name, resp.Status, b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("register on %s: %v", a.name, err)
		}
		time.Sleep(50 * time.Millisecond)
		req, _ = http.NewRequest(http.MethodPut, "http://"+a.httpAddr+"/v1/agent/service/register", bytes.NewReader(body))
	}
}

// proxyGet sends GET path for service host through the agent's proxy.
func proxyGet(c *http.Client, a *proxyAgent, host, path string) (int, string, error) {
	req, _ := http.NewRequest(http.MethodGet, "http://"+a.proxyAddr+path, nil)
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// loadResult counts the outcome of a constant-rate load.
type loadResult struct {
	sent, failed atomic.Int64
	firstErr     atomic.Value
}

// constantLoad sends rps GETs per second through the proxy for d, and calls
// during once, at offset at. Pacing catches up after a scheduling hiccup, so
// the average rate holds on a busy machine.
func constantLoad(a *proxyAgent, host string, rps int, d time.Duration, at time.Duration, during func()) *loadResult {
	res := &loadResult{}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 128}}
	var wg sync.WaitGroup
	start := time.Now()
	fired := false
	for {
		elapsed := time.Since(start)
		if elapsed >= d {
			break
		}
		if !fired && elapsed >= at {
			fired = true
			go during()
		}
		for due := int64(elapsed.Seconds() * float64(rps)); res.sent.Load() < due; {
			wg.Add(1)
			res.sent.Add(1)
			go func() {
				defer wg.Done()
				code, body, err := proxyGet(client, a, host, "/")
				if err != nil || code != http.StatusOK {
					res.failed.Add(1)
					res.firstErr.CompareAndSwap(nil, fmt.Sprintf("%d %q %v", code, strings.TrimSpace(body), err))
				}
			}()
		}
		time.Sleep(2 * time.Millisecond)
	}
	wg.Wait()
	return res
}

// TestProxyE2E runs three agents as processes, each owning one instance of
// "web" and of a TCP "echo" service, and drives traffic through the first
// agent's proxy: round robin spreads evenly, and neither a killed backend
// nor a killed node (agent and backend) costs a single request.
func TestProxyE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds the binary and runs agents as processes")
	}
	bin := buildShoal(t, t.TempDir())
	ports := freePorts(t, 3)
	var echoPort int
	{
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		echoPort = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	names := []string{"pa", "pb", "pc"}
	var agents []*proxyAgent
	var webs []*killableBackend
	var echos []*echoBackend
	for i, name := range names {
		var extra []string
		if i == 0 {
			extra = []string{"--upstream", fmt.Sprintf("echo=127.0.0.1:%d", echoPort)}
		}
		var join []string
		if i > 0 {
			join = []string{agents[0].gossipAddr}
		}
		agents = append(agents, startProxyAgent(t, bin, name, ports[i], extra, join...))
		webs = append(webs, startBackend(t, "web-"+name))
		echos = append(echos, startEcho(t, "echo-"+name))
	}
	for i, a := range agents {
		a.register(t, map[string]any{"ID": "web-" + a.name, "Name": "web", "Address": "127.0.0.1",
			"Port": webs[i].port(), "Meta": map[string]string{"lb_policy": "round_robin"}})
		a.register(t, map[string]any{"ID": "echo-" + a.name, "Name": "echo", "Address": "127.0.0.1",
			"Port": echos[i].ln.Addr().(*net.TCPAddr).Port, "Meta": map[string]string{"lb_policy": "round_robin"}})
	}
	client := &http.Client{Timeout: 5 * time.Second}
	testutil.WaitState(t, 30*time.Second, 100*time.Millisecond, "the first proxy to reach all three web instances", func() (bool, string) {
		seen := map[string]bool{}
		for range 12 {
			if code, body, err := proxyGet(client, agents[0], "web", "/"); err == nil && code == http.StatusOK {
				seen[body] = true
			}
		}
		return len(seen) == 3, fmt.Sprint(seen)
	})

	t.Run("round robin spreads 3000 requests evenly", func(t *testing.T) {
		for _, w := range webs {
			w.hits.Store(0)
		}
		counts := map[string]int{}
		for range 3000 {
			code, body, err := proxyGet(client, agents[0], "web.service.shoal", "/")
			if err != nil || code != http.StatusOK {
				t.Fatalf("request failed: %d %q %v", code, body, err)
			}
			counts[body]++
		}
		t.Logf("per instance: %v", counts)
		for _, w := range webs {
			if n := counts[w.name]; n < 900 || n > 1100 {
				t.Errorf("%s got %d of 3000 requests, want 1000 ± 10%%", w.name, n)
			}
		}
	})

	t.Run("tcp upstream balances connections and survives a backend kill", func(t *testing.T) {
		up := fmt.Sprintf("127.0.0.1:%d", echoPort)
		dialEcho := func() (string, error) {
			c, err := net.DialTimeout("tcp", up, 2*time.Second)
			if err != nil {
				return "", err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(c, "ping\n"); err != nil {
				return "", err
			}
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				return "", fmt.Errorf("read: %w", err)
			}
			return strings.Fields(line)[0], nil
		}
		counts := map[string]int{}
		for range 30 {
			who, err := dialEcho()
			if err != nil {
				t.Fatal(err)
			}
			counts[who]++
		}
		t.Logf("connections per echo instance: %v", counts)
		for _, e := range echos {
			if counts[e.name] < 5 {
				t.Errorf("%s got %d of 30 connections", e.name, counts[e.name])
			}
		}
		echos[2].ln.Close()
		for i := range 30 {
			who, err := dialEcho()
			if err != nil {
				t.Fatalf("connection %d after the kill: %v", i, err)
			}
			if who == echos[2].name {
				t.Fatalf("connection %d reached the killed instance", i)
			}
		}
	})

	t.Run("a backend killed under 500 rps costs no request", func(t *testing.T) {
		res := constantLoad(agents[0], "web", 500, 20*time.Second, 5*time.Second, webs[1].kill)
		t.Logf("sent %d, failed %d", res.sent.Load(), res.failed.Load())
		if n := res.failed.Load(); n != 0 {
			t.Fatalf("%d of %d requests failed; first: %v", n, res.sent.Load(), res.firstErr.Load())
		}
	})

	t.Run("a whole node killed under 500 rps costs no request", func(t *testing.T) {
		killNode := func() {
			agents[2].sigkill()
			webs[2].kill()
		}
		res := constantLoad(agents[0], "web", 500, 20*time.Second, 5*time.Second, killNode)
		t.Logf("sent %d, failed %d", res.sent.Load(), res.failed.Load())
		if n := res.failed.Load(); n != 0 {
			t.Fatalf("%d of %d requests failed; first: %v", n, res.sent.Load(), res.firstErr.Load())
		}
	})
}
