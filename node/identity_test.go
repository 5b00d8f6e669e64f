package node

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/node/pki"
	"github.com/shoal-mesh/shoal/testdata/testutil"
)

func testIdentities(t *testing.T, ttl time.Duration) (*identities, *time.Time) {
	t.Helper()
	p := newTestPKI(t, "ids.test")
	cert, key := p.node("n0")
	b, err := pki.LoadBundle(p.caFile, cert, key, "n0", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ids := &identities{ttl: ttl, log: slog.New(slog.DiscardHandler), now: func() time.Time { return now },
		leaves: map[string]*issued{}, changed: make(chan struct{})}
	ids.bundle.Store(b)
	empty := map[string]*issued{}
	ids.byName.Store(&empty)
	if err := ids.ensure(""); err != nil {
		t.Fatal(err)
	}
	return ids, &now
}

// TestLeavesRenewAtHalfLife: nothing is renewed before half of a leaf's
// life, everything after, and a waiting reader is woken.
func TestLeavesRenewAtHalfLife(t *testing.T) {
	ids, now := testIdentities(t, time.Hour)
	ids.sync(map[string]bool{"web": true, "db": true})
	first := ids.leaf("web")
	if first == nil || ids.leaf("db") == nil || ids.leaf("") == nil {
		t.Fatal("missing leaves after sync")
	}
	if got := first.NotAfter.Sub(*now); got > time.Hour || got < 59*time.Minute {
		t.Errorf("leaf lives %v, want the 1h TTL", got)
	}
	*now = now.Add(25 * time.Minute) // the leaf's NotBefore is a minute back: half-life is at 29m30s
	if n := ids.renewDue(); n != 0 {
		t.Errorf("renewed %d leaves before their half-life", n)
	}
	_, changed := ids.get("web")
	*now = now.Add(5 * time.Minute)
	if n := ids.renewDue(); n != 3 {
		t.Errorf("renewed %d leaves past their half-life, want 3", n)
	}
	select {
	case <-changed:
	default:
		t.Error("a renewal did not wake waiting readers")
	}
	if ids.leaf("web").Serial.Cmp(first.Serial) == 0 {
		t.Error("web's leaf was not replaced")
	}
	// A service no longer hosted loses its identity; the node keeps its own.
	ids.sync(map[string]bool{"db": true})
	if ids.leaf("web") != nil || ids.leaf("db") == nil || ids.leaf("") == nil {
		t.Error("sync kept or dropped the wrong leaves")
	}
}

// TestLeafNeedsTheToken: a leaf answer carries its private key, so with
// --http-token it takes the token, even though it is a read.
func TestLeafNeedsTheToken(t *testing.T) {
	p := newTestPKI(t, "mesh.test")
	a := startAgent(t, "n0", func(c *Config) {
		p.configure(c, "n0")
		c.HTTP.Token = "s3cret"
	})
	req, _ := http.NewRequest("PUT", "http://"+a.HTTPAddr()+"/v1/agent/service/register", strings.NewReader(`{"Name":"web","Port":80}`))
	req.Header.Set("X-Consul-Token", "s3cret")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("register: %v %v", resp, err)
	}
	if code, _ := do(t, a, "GET", "/v1/agent/connect/ca/leaf/web", nil); code != http.StatusForbidden {
		t.Errorf("leaf without the token: %d, want 403", code)
	}
	if code, _ := do(t, a, "GET", "/v1/agent/connect/ca/roots", nil); code != http.StatusOK {
		t.Errorf("roots without the token: %d, want 200 (public)", code)
	}
	if code, _ := do(t, a, "GET", "/v1/agent/connect/ca/leaf/web?token=s3cret", nil); code != http.StatusOK {
		t.Errorf("leaf with the token: %d", code)
	}
}

// TestSidecarUpstreamSurvivesRestart: an answered registration comes back
// from the data dir with its upstream listener.
func TestSidecarUpstreamSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	up := testutil.FreePort(t)
	a := startAgent(t, "n0", func(c *Config) { c.DataDir = dir })
	registerDef(t, a, map[string]any{"ID": "api-1", "Name": "api", "Port": 1,
		"Connect": map[string]any{"SidecarService": map[string]any{"Proxy": map[string]any{
			"Upstreams": []map[string]any{{"DestinationName": "web", "LocalBindPort": up}}}}}})
	a.Shutdown()
	b := startAgent(t, "n0", func(c *Config) { c.DataDir = dir })
	if got := b.Proxy().UpstreamAddr("web"); got != fmt.Sprintf("127.0.0.1:%d", up) {
		t.Errorf("after a restart the upstream of api listens on %q", got)
	}
}
