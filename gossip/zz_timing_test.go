package gossip

import (
	"runtime"
	"testing"
	"time"
)

func TestZZTiming(t *testing.T) {
	cs := startCluster(t, 5)
	p := newPublisher(cs[2])
	p.put(&Service{ID: "web-1", Name: "web", Port: 8080})
	waitFor(t, 5*time.Second, "web-1 everywhere", func() bool {
		for _, c := range cs {
			if !hasInstance(c, "web", "web-1") {
				return false
			}
		}
		return true
	})
	for i := len(cs) - 1; i >= 0; i-- {
		c := cs[i]
		t0 := time.Now()
		close(c.stop)
		t.Logf("close %v", time.Since(t0))
		t0 = time.Now()
		c.serf.Shutdown()
		t.Logf("serf %v", time.Since(t0))
		c.ln.Close()
		t0 = time.Now()
		done := make(chan struct{})
		go func() { c.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(500 * time.Millisecond):
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Logf("%s", buf[:n])
			<-done
		}
		t.Logf("wg %v", time.Since(t0))
		c.shutdownOnce.Do(func() {})
	}
}
