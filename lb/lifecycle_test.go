package lb

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

func TestProxyLiveView(t *testing.T) {
	v := newFakeView()
	a, b, c := newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "c")
	release := make(chan struct{})
	a.handle(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		io.WriteString(w, "a")
	})
	v.Set("web", a.instance())
	p := startProxy(t, roundRobinConfig(), v)
	pc := newProxyClient(t, p)

	slow := make(chan string, 1)
	go func() {
		status, body := pc.get(t, "web", "/slow")
		slow <- fmt.Sprint(status, " ", body)
	}()
	waitFor(t, 5*time.Second, "the slow request to reach a", func() bool { return a.hits.Load() == 1 })

	v.Set("web", b.instance(), c.instance()) // a leaves the view mid-request
	seen := map[string]int{}
	for range 20 {
		_, body := pc.get(t, "web", "/")
		seen[body]++
	}
	if seen["a"] != 0 || seen["b"] != 10 || seen["c"] != 10 {
		t.Fatalf("after the view changed: %v, want b and c only", seen)
	}
	close(release)
	select {
	case got := <-slow:
		if got != "200 a" {
			t.Fatalf("in-flight request on the removed instance: %s", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("in-flight request on the removed instance never finished")
	}
}

func TestProxyViewChurnUnderLoad(t *testing.T) {
	v := newFakeView()
	bs := []*backend{newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "c")}
	sets := [][]Instance{
		{bs[0].instance(), bs[1].instance()},
		{bs[1].instance(), bs[2].instance()},
		{bs[2].instance(), bs[0].instance()},
		{bs[0].instance(), bs[1].instance(), bs[2].instance()},
	}
	v.Set("web", sets[0]...)
	p := startProxy(t, testConfig(), v)
	pc := newProxyClient(t, p)

	stop := make(chan struct{})
	var requests, failed atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if status, _, err := pc.try(http.MethodGet, "web", "/", nil); err != nil || status != http.StatusOK {
					failed.Add(1)
				}
				requests.Add(1)
			}
		}()
	}
	for i := range 40 {
		v.Set("web", sets[i%len(sets)]...)
		n := requests.Load()
		waitFor(t, 5*time.Second, "requests on the new generation", func() bool { return requests.Load() >= n+5 })
	}
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed while the view changed", failed.Load(), requests.Load())
	}
}

func TestProxyGracefulShutdown(t *testing.T) {
	v := newFakeView()
	a := newBackend(t, "a")
	release := make(chan struct{})
	a.handle(func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, "a")
	})
	v.Set("web", a.instance())
	p := startProxy(t, testConfig(), v)
	pc := newProxyClient(t, p)

	slow := make(chan string, 1)
	go func() {
		status, body := pc.get(t, "web", "/slow")
		slow <- fmt.Sprint(status, " ", body)
	}()
	waitFor(t, 5*time.Second, "the slow request to arrive", func() bool { return a.hits.Load() == 1 })

	shutdown := make(chan error, 1)
	go func() { shutdown <- p.Shutdown(context.Background()) }()
	waitFor(t, 5*time.Second, "the listener to close", func() bool {
		c, err := net.DialTimeout("tcp", p.HTTPAddr(), time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned (%v) with a request in flight", err)
	default:
	}
	close(release)
	if got := <-slow; got != "200 a" {
		t.Fatalf("in-flight request during Shutdown: %s", got)
	}
	select {
	case err := <-shutdown:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the last request")
	}
	if _, err := net.DialTimeout("tcp", p.HTTPAddr(), time.Second); err == nil {
		t.Fatal("proxy accepts connections after Shutdown")
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
}

func TestProxyStartAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := testConfig()
	cfg.HTTPAddr = ln.Addr().String()
	p := newTestProxy(t, cfg, newFakeView())
	if err := p.Start(); err == nil {
		p.Shutdown(context.Background())
		t.Fatal("Start succeeded on a taken address")
	}

	cfg = testConfig()
	cfg.Upstreams = map[string]string{"db": ln.Addr().String()}
	p = newTestProxy(t, cfg, newFakeView())
	if err := p.Start(); err == nil || !strings.Contains(err.Error(), "db") {
		p.Shutdown(context.Background())
		t.Fatalf("Start with a taken upstream address: %v", err)
	}
}

// TestProxyShutdownWithHalfSniffedConn: a client that was still sending its
// first bytes when Shutdown began must not be served after Shutdown returned.
func TestProxyShutdownWithHalfSniffedConn(t *testing.T) {
	v := newFakeView()
	a := newBackend(t, "a")
	v.Set("web", a.instance())
	cfg := testConfig()
	cfg.ShutdownTimeout = time.Second
	p := startProxy(t, cfg, v)

	c, err := net.Dial("tcp", p.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	preface := "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	io.WriteString(c, preface[:10])
	// Let the proxy accept it and start sniffing.
	waitFor(t, 5*time.Second, "the proxy to accept", func() bool {
		c2, err := net.Dial("tcp", p.HTTPAddr())
		if err == nil {
			c2.Close()
		}
		return err == nil
	})
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Finish the preface and ask for something over HTTP/2.
	io.WriteString(c, preface[10:])
	tr := &http2.Transport{AllowHTTP: true}
	cc, err := tr.NewClientConn(&prefaceSentConn{Conn: c})
	if err != nil {
		return // closed: good
	}
	req, _ := http.NewRequest("GET", "http://web/", nil)
	c.SetDeadline(time.Now().Add(3 * time.Second))
	resp, err := cc.RoundTrip(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("served %s after Shutdown returned", resp.Status)
	}
}

// prefaceSentConn drops the client preface the http2 transport writes,
// because the test wrote it by hand.
type prefaceSentConn struct {
	net.Conn
	skipped int
}

func (c *prefaceSentConn) Write(b []byte) (int, error) {
	const n = len("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	if c.skipped < n {
		k := min(n-c.skipped, len(b))
		c.skipped += k
		if _, err := c.Conn.Write(b[k:]); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	return c.Conn.Write(b)
}

// TestProxyShutdownWithTunnelsOpening shuts down while CONNECT tunnels are
// being set up and held open: Shutdown must close them once its grace
// period is over and return.
func TestProxyShutdownWithTunnelsOpening(t *testing.T) {
	v := newFakeView()
	b := newEchoBackend(t, "a")
	v.Set("web", b.instance())
	cfg := testConfig()
	cfg.ShutdownTimeout = 300 * time.Millisecond
	p := startProxy(t, cfg, v)

	// The clients hold their tunnels open until the test ends.
	stop := make(chan struct{})
	var opened atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var conns []net.Conn
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.DialTimeout("tcp", p.HTTPAddr(), time.Second)
				if err != nil {
					select {
					case <-stop:
						return
					case <-time.After(time.Millisecond):
					}
					continue
				}
				conns = append(conns, c)
				c.SetDeadline(time.Now().Add(5 * time.Second))
				io.WriteString(c, "CONNECT web:443 HTTP/1.1\r\nHost: web:443\r\n\r\nhi\n")
				if line, _ := bufio.NewReader(c).ReadString('\n'); strings.HasPrefix(line, "HTTP/1.1 200") {
					opened.Add(1)
				}
			}
		}()
	}
	release := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer release()
	waitFor(t, 5*time.Second, "some tunnels", func() bool { return opened.Load() >= 20 })
	done := make(chan error, 1)
	go func() { done <- p.Shutdown(context.Background()) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		release() // let the held tunnels go so that Shutdown (and the test) can end
		<-done
		t.Fatalf("Shutdown ignored its %v grace period with tunnels held open", cfg.ShutdownTimeout)
	}
}
