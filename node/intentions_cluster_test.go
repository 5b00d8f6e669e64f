package node

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// upstreamProbe sends one HTTP request over a new TCP connection to addr (a
// sidecar upstream listener, a TCP path) and reports what came back: the
// answer's first line, or "" when the connection was closed unanswered.
func upstreamProbe(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET /tcp HTTP/1.1\r\nHost: db\r\nConnection: close\r\n\r\n"); err != nil {
		return "", nil // closed before the request went out: refused too
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if line == "" && (errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err)) {
		return "", nil
	}
	return strings.TrimSpace(line), err
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// keptConn is a TCP connection through a sidecar upstream that stays open
// across requests, as a client's keep-alive connection does.
type keptConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialKept(t *testing.T, addr string) *keptConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &keptConn{c: c, br: bufio.NewReader(c)}
}

// get sends one keep-alive request and reads its answer's status.
func (k *keptConn) get() (int, error) {
	_ = k.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(k.c, "GET /kept HTTP/1.1\r\nHost: db\r\n\r\n"); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(k.br, nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

// closed reports whether the far side closed the connection.
func (k *keptConn) closed() bool {
	_ = k.c.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
	_, err := k.br.Peek(1)
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// TestIntentionsOnEveryNode: with the PKI on five agents, "db" on n0 and
// "web" on the four others, each web with a sidecar upstream to db (a TCP
// path that carries web's identity) and each node's shared proxy (HTTP,
// the node's identity). It measures, per calling node, the time from the
// intention's write on n4 until the mesh refuses:
//
//   - web → db deny: a new TCP connection through web's upstream is closed
//     unanswered, and a connection opened before the write is closed; the
//     node's shared proxy is still allowed;
//   - * → db deny: the shared proxy's requests, on keep-alive connections
//     opened before, get 403 naming the intention;
//   - both lifted: every path works again.
//
// The goal is every node within 1 s; decisions and refusals are counted
// in db's agent's /metrics.
func TestIntentionsOnEveryNode(t *testing.T) {
	p := newTestPKI(t, "mesh.test")
	as := startMesh(t, p, 5)
	db, callers, writer := as[0], as[1:], as[4]
	_, port := backend(t, "db-on-n0")
	registerDef(t, db, map[string]any{"ID": "db-1", "Name": "db", "Address": "127.0.0.1", "Port": port})
	ups := make([]string, len(callers))
	for i, a := range callers {
		upPort := testutil.FreePort(t)
		ups[i] = fmt.Sprintf("127.0.0.1:%d", upPort)
		_, wport := backend(t, "web-on-"+a.NodeName())
		registerDef(t, a, map[string]any{"ID": "web-" + a.NodeName(), "Name": "web", "Address": "127.0.0.1", "Port": wport,
			"Connect": map[string]any{"SidecarService": map[string]any{"Proxy": map[string]any{
				"Upstreams": []map[string]any{{"DestinationName": "db", "LocalBindPort": upPort}}}}}})
	}
	testutil.Wait(t, 10*time.Second, "db on every caller, every web on n0", func() bool {
		for _, a := range callers {
			if !visibleOn(t, a, "db", 1)() {
				return false
			}
		}
		return visibleOn(t, db, "web", len(callers))()
	})
	clients := make([]*http.Client, len(callers))
	kept := make([]*keptConn, len(callers))
	for i, a := range callers {
		clients[i] = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 2}}
		t.Cleanup(clients[i].CloseIdleConnections)
		if code, body, err := proxyGet(clients[i], a, "db", "/"); err != nil || code != http.StatusOK {
			t.Fatalf("%s's proxy to db before any intention: %d %q %v", a.NodeName(), code, body, err)
		}
		if line, err := upstreamProbe(ups[i]); err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
			t.Fatalf("%s's web upstream to db before any intention: %q %v", a.NodeName(), line, err)
		}
		kept[i] = dialKept(t, ups[i])
		if code, err := kept[i].get(); err != nil || code != http.StatusOK {
			t.Fatalf("%s's kept connection: %d %v", a.NodeName(), code, err)
		}
	}

	// every polls cond for each caller until it holds for all, and returns
	// the time from start at which it first held for each.
	every := func(what string, start time.Time, cond func(i int) bool) []time.Duration {
		t.Helper()
		took := make([]time.Duration, len(callers))
		left := len(callers)
		for left > 0 {
			for i := range callers {
				if took[i] == 0 && cond(i) {
					took[i] = time.Since(start)
					left--
				}
			}
			if left > 0 && time.Since(start) > 10*time.Second {
				t.Fatalf("%s: after 10s, per caller %v (0: not yet)", what, took)
			}
			time.Sleep(2 * time.Millisecond)
		}
		slow := time.Duration(0)
		for _, d := range took {
			slow = max(slow, d)
		}
		t.Logf("%s: n1..n4 %v; the slowest %v", what, took, slow.Round(time.Microsecond))
		if slow > time.Second {
			t.Errorf("%s took %v on the slowest node, over the goal of 1 s", what, slow)
		}
		return took
	}
	write := func(path, body string) time.Time {
		t.Helper()
		code, out := request(t, writer, "PUT", path, body, nil)
		if code != http.StatusOK {
			t.Fatalf("PUT %s: %d %s", path, code, out)
		}
		return time.Now()
	}
	proxyCode := func(i int) (int, string) {
		code, body, err := proxyGet(clients[i], callers[i], "db", "/")
		if err != nil {
			t.Fatalf("%s's proxy: %v", callers[i].NodeName(), err)
		}
		return code, body
	}

	// web → db: the TCP paths that carry web's identity close.
	start := write("/v1/connect/intentions/exact?source=web&destination=db", `{"Action":"deny"}`)
	every("web → db deny: a new TCP connection through web's upstream closed unanswered", start, func(i int) bool {
		line, err := upstreamProbe(ups[i])
		return err == nil && line == ""
	})
	every("web → db deny: the connection opened before closed", start, func(i int) bool { return kept[i].closed() })
	for i := range callers {
		if code, body := proxyCode(i); code != http.StatusOK {
			t.Errorf("%s's shared proxy (node identity) refused by web → db: %d %q", callers[i].NodeName(), code, body)
		}
	}

	// * → db: the shared proxies' keep-alive requests get 403.
	start = write("/v1/connect/intentions/exact?source=*&destination=db", `{"Action":"deny"}`)
	var bodies []string
	every("* → db deny: 403 through each node's shared proxy", start, func(i int) bool {
		code, body := proxyCode(i)
		if code == http.StatusForbidden {
			bodies = append(bodies, strings.TrimSpace(body))
		}
		return code == http.StatusForbidden
	})
	for _, b := range bodies {
		if !strings.Contains(b, "intention * => db (deny)") {
			t.Errorf("403 body %q does not name the intention", b)
		}
	}

	// Lifted: web → db allowed, * → db gone.
	write("/v1/connect/intentions/exact?source=web&destination=db", `{"Action":"allow"}`)
	code, out := request(t, writer, "DELETE", "/v1/connect/intentions/exact?source=*&destination=db", "", nil)
	if code != http.StatusOK {
		t.Fatalf("delete * → db: %d %s", code, out)
	}
	start = time.Now()
	every("lifted: the shared proxy answers 200 again", start, func(i int) bool { c, _ := proxyCode(i); return c == http.StatusOK })
	every("lifted: web's upstream answers again", start, func(i int) bool {
		line, err := upstreamProbe(ups[i])
		return err == nil && strings.HasPrefix(line, "HTTP/1.1 200")
	})

	// Counted where the traffic arrives.
	_, metrics := request(t, db, "GET", "/metrics", "", nil)
	for _, want := range []string{
		`shoal_mesh_intention_decisions_total{decision="denied",destination="db",source="web"}`,
		`shoal_mesh_intention_decisions_total{decision="allowed",destination="db",source="web"}`,
		`shoal_mesh_intention_decisions_total{decision="denied",destination="db",source="node:n1"}`,
		`shoal_mesh_intention_decisions_total{decision="allowed",destination="db",source="node:n4"}`,
		`shoal_mesh_refused_total{reason="intention"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("n0's /metrics lacks %s", want)
		}
	}
}
