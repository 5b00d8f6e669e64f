//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nsKillLoop: 100 times, register a service, and within 10 ms of the 200
// answer SIGKILL the agent; restart it from its data dir: every service
// ever acknowledged is there. One agent, in a namespace of its own where
// the harness can run: its fixed ports there are nobody else's, so no
// other process on a busy machine can take one between a kill and the
// restart. Without root it runs on loopback, on ports found free.
func nsKillLoop(t *testing.T, bins nsBins) {
	var (
		api, logPath string
		start        func()
		agent        func() *nsProc
	)
	if nsUnavailable() == "" {
		h := nsNewCluster(t, bins, 1).host(1)
		api, logPath, start, agent = h.apiURL(), h.agentLog, h.startAgent, h.agentProc
	} else {
		gossipPort, httpPort := nsLoopbackPorts(t)
		dir := t.TempDir()
		logPath = filepath.Join(dir, "agent.log")
		args := []string{bins.shoal, "agent", "--dev", "--node", "k1",
			"--bind", net.JoinHostPort("127.0.0.1", strconv.Itoa(gossipPort)),
			"--http-addr", net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort)),
			"--proxy-addr", "", "--dns-addr", "", "--data-dir", filepath.Join(dir, "data")}
		api = "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort))
		var p *nsProc
		start = func() { p = nsStart(t, "", logPath, args...) }
		agent = func() *nsProc { return p }
		t.Cleanup(func() {
			if p != nil {
				p.kill()
			}
			if t.Failed() {
				t.Logf("--- last lines of the agent's log:\n%s", nsTail(logPath, 30))
			}
		})
		start()
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	// services returns the IDs the agent owns, once its API answers.
	services := func() map[string]bool {
		t.Helper()
		var own map[string]json.RawMessage
		nsPoll(t, 30*time.Second, 10*time.Millisecond, "the agent's API", func() (bool, string) {
			if !agent().running() {
				t.Fatalf("agent exited:\n%s", nsTail(logPath, 20))
			}
			resp, err := client.Get(api + "/v1/agent/services")
			if err != nil {
				return false, err.Error()
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				return false, resp.Status
			}
			own = nil
			return json.Unmarshal(b, &own) == nil, string(b)
		})
		ids := make(map[string]bool, len(own))
		for id := range own {
			ids[id] = true
		}
		return ids
	}

	// A round counts when the SIGKILL left within 10 ms of the 200; on a
	// loaded machine the test process is sometimes descheduled for longer,
	// and such a round is checked all the same but run again.
	const rounds, maxAttempts = 100, 300
	begin := time.Now()
	var gaps []time.Duration
	var maxRestart time.Duration
	counted := 0
	services()
	for i := 0; counted < rounds; i++ {
		if i == maxAttempts {
			t.Fatalf("only %d of %d rounds killed the agent within 10 ms of the 200; gaps %v", counted, i, gaps)
		}
		id := fmt.Sprintf("k-%03d", i)
		p := agent()
		gap := nsRegisterThenKill(t, api, id, 1000+i, p.cmd.Process)
		gaps = append(gaps, gap)
		if gap <= 10*time.Millisecond {
			counted++
		}
		<-p.done
		t0 := time.Now()
		start()
		ids := services()
		maxRestart = max(maxRestart, time.Since(t0))
		for j := 0; j <= i; j++ {
			if want := fmt.Sprintf("k-%03d", j); !ids[want] {
				t.Fatalf("round %d: %s, acknowledged before a SIGKILL, lost after the restart; the agent owns %d services", i, want, len(ids))
			}
		}
		if len(ids) != i+1 {
			t.Fatalf("round %d: the agent owns %d services, want %d", i, len(ids), i+1)
		}
	}
	sort.Slice(gaps, func(i, j int) bool { return gaps[i] < gaps[j] })
	t.Logf("RESULT kill after register: %d rounds (%d of them with the SIGKILL within 10 ms of the 200) in %v, 0 lost; "+
		"200 to SIGKILL p50 %v max %v; restart to API answering at most %v",
		len(gaps), counted, time.Since(begin).Round(time.Millisecond), gaps[len(gaps)/2].Round(time.Microsecond),
		gaps[len(gaps)-1].Round(time.Microsecond), maxRestart.Round(time.Millisecond))
}

// nsRegisterThenKill registers service instance id over a raw connection
// and SIGKILLs proc the moment the status line reads 200; it returns the
// time from reading the status line to the kill.
func nsRegisterThenKill(t *testing.T, api, id string, port int, proc *os.Process) time.Duration {
	t.Helper()
	body := fmt.Sprintf(`{"ID":%q,"Name":"k","Port":%d}`, id, port)
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(api, "http://"), 5*time.Second)
	if err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "PUT /v1/agent/service/register HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"+
		"Content-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	status := make([]byte, len("HTTP/1.1 200"))
	if _, err := io.ReadFull(conn, status); err != nil {
		t.Fatalf("register %s: reading the answer: %v", id, err)
	}
	got := time.Now()
	if string(status) != "HTTP/1.1 200" {
		rest, _ := io.ReadAll(conn)
		t.Fatalf("register %s: %s%s", id, status, rest)
	}
	proc.Signal(syscall.SIGKILL)
	return time.Since(got)
}

// nsLoopbackPorts picks a free gossip port (UDP and TCP, with the catalog
// port above it free too) and a free HTTP port on 127.0.0.1.
func nsLoopbackPorts(t *testing.T) (gossip, httpPort int) {
	t.Helper()
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for attempt := 0; attempt < 50; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, ln)
		p := ln.Addr().(*net.TCPAddr).Port
		udp, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		held = append(held, udp)
		rpc, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+1)))
		if err != nil {
			continue
		}
		held = append(held, rpc)
		h, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, h)
		return p, h.Addr().(*net.TCPAddr).Port
	}
	t.Fatal("no free gossip port with a free catalog port above it on 127.0.0.1")
	return 0, 0
}
