package node

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// withDataDir returns a startAgent adjustment that sets the data dir.
func withDataDir(dir string) func(*Config) {
	return func(c *Config) { c.DataDir = dir }
}

// readCatalogFile reads and decodes catalog.json from a data dir.
func readCatalogFile(t *testing.T, dir string) *registryState {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, catalogFile))
	if err != nil {
		t.Fatal(err)
	}
	var st registryState
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("%s is not valid JSON: %v\n%s", catalogFile, err, b)
	}
	return &st
}

// agentNodeID reads the node ID an agent reports in /v1/agent/self.
func agentNodeID(t *testing.T, a *Agent) string {
	t.Helper()
	code, body := do(t, a, "GET", "/v1/agent/self", nil)
	if code != http.StatusOK {
		t.Fatalf("agent/self: %d %s", code, body)
	}
	var self struct{ Config struct{ NodeID string } }
	if err := json.Unmarshal(body, &self); err != nil {
		t.Fatal(err)
	}
	return self.Config.NodeID
}

// TestRestartRestoresServices restarts an agent on its data dir without
// leaving (as after a crash): its services, tombstones and node ID are back,
// and its catalog version has moved on.
func TestRestartRestoresServices(t *testing.T) {
	dir := t.TempDir()
	a := startAgent(t, "p0", withDataDir(dir))
	register(t, a, `{"Name":"web","ID":"web-1","Port":8080,"Tags":["v1"],"Meta":{"team":"a"}}`)
	register(t, a, `{"Name":"db","Port":5432,"Check":{"TTL":"1h","Status":"passing"}}`)
	register(t, a, `{"Name":"gone","Port":1}`)
	if code, body := do(t, a, "PUT", "/v1/agent/service/deregister/gone", nil); code != http.StatusOK {
		t.Fatalf("deregister: %d %s", code, body)
	}
	services, version, id := agentServicesRaw(t, a), a.reg.current().Version, agentNodeID(t, a)
	if id == "" {
		t.Fatal("no node ID")
	}
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}

	for restart := 1; restart <= 2; restart++ {
		b := startAgent(t, "p0", withDataDir(dir))
		if got := agentServicesRaw(t, b); !bytes.Equal(got, services) {
			t.Errorf("restart %d: services\n%s\nwant\n%s", restart, got, services)
		}
		if v := b.reg.current().Version; v <= version {
			t.Errorf("restart %d: catalog version %d, want > %d", restart, v, version)
		} else {
			version = v
		}
		if got := agentNodeID(t, b); got != id {
			t.Errorf("restart %d: node ID %q, want %q", restart, got, id)
		}
		if _, ok := b.reg.current().Tombstones["gone"]; !ok {
			t.Errorf("restart %d: tombstone of gone lost: %v", restart, b.reg.current().Tombstones)
		}
		if e := healthEntries(t, b, "gone", ""); len(e) != 0 {
			t.Errorf("restart %d: deregistered service is back: %+v", restart, e)
		}
		if e := healthEntries(t, b, "web", "?passing"); len(e) != 1 || e[0].Service.ID != "web-1" {
			t.Errorf("restart %d: web-1 not passing in the catalog: %+v", restart, e)
		}
		if err := b.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}

	other := startAgent(t, "p0", withDataDir(t.TempDir()))
	if got := agentNodeID(t, other); got == id || got == "" {
		t.Errorf("new data dir: node ID %q, want a fresh one (old %q)", got, id)
	}
}

// TestCatalogFileWrittenBeforeAnswer reads catalog.json the moment each change
// is answered: it must already hold the change, as valid JSON, at the
// version the agent serves. A crash right after the answer loses nothing.
func TestCatalogFileWrittenBeforeAnswer(t *testing.T) {
	dir := t.TempDir()
	a := startAgent(t, "p0", withDataDir(dir))
	if st := readCatalogFile(t, dir); st.Version != a.reg.current().Version {
		t.Fatalf("after start: file at version %d, agent at %d", st.Version, a.reg.current().Version)
	}
	for _, step := range []struct {
		method, path, body string
		present, absent    string
	}{
		{"PUT", "/v1/agent/service/register", `{"Name":"web","ID":"web-1","Port":80}`, "web-1", ""},
		{"PUT", "/v1/agent/service/register", `{"Name":"web","ID":"web-2","Port":81}`, "web-2", ""},
		{"PUT", "/v1/agent/service/register", `{"Name":"web","ID":"web-1","Port":82,"Tags":["new"]}`, "web-1", ""},
		{"PUT", "/v1/agent/service/deregister/web-2", "", "", "web-2"},
		{"PUT", "/v1/agent/service/register", `{"Name":"db","Meta":{"k":"` + strings.Repeat("v", 1024) + `"}}`, "db", ""},
	} {
		code, body := do(t, a, step.method, step.path, step.body)
		if code != http.StatusOK {
			t.Fatalf("%s %s: %d %s", step.method, step.path, code, body)
		}
		st := readCatalogFile(t, dir)
		if cur := a.reg.current(); st.Version != cur.Version {
			t.Errorf("%s %s: file at version %d, agent serves %d", step.method, step.path, st.Version, cur.Version)
		}
		if step.present != "" {
			ls := st.Services[step.present]
			if ls == nil {
				t.Errorf("%s %s: %s missing from %s", step.method, step.path, step.present, catalogFile)
			} else if ls.Version != st.Version {
				t.Errorf("%s %s: %s at version %d in the file, want %d", step.method, step.path, step.present, ls.Version, st.Version)
			}
		}
		if step.absent != "" {
			if _, ok := st.Services[step.absent]; ok {
				t.Errorf("%s %s: %s still in %s", step.method, step.path, step.absent, catalogFile)
			}
			if v := st.Tombstones[step.absent]; v != st.Version {
				t.Errorf("%s %s: tombstone of %s at %d, want %d", step.method, step.path, step.absent, v, st.Version)
			}
		}
	}
	if st := readCatalogFile(t, dir); st.Services["web-1"].Def.Tags[0] != "new" || *st.Services["web-1"].Def.Port != 82 {
		t.Errorf("re-registration not persisted: %+v", st.Services["web-1"].Def)
	}
	tmp, _ := filepath.Glob(filepath.Join(dir, catalogFile+".tmp-*"))
	if len(tmp) != 0 {
		t.Errorf("temporary files left behind: %v", tmp)
	}
}

// TestRejectedChangeNotPersisted checks that a rejected registration does
// not touch the file.
func TestRejectedChangeNotPersisted(t *testing.T) {
	dir := t.TempDir()
	a := startAgent(t, "p0", withDataDir(dir))
	register(t, a, `{"Name":"web"}`)
	before, err := os.ReadFile(filepath.Join(dir, catalogFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{`{"Name":"bad name"}`, `{"Name":"web","Port":0}`, `{"Name":`} {
		if code, _ := do(t, a, "PUT", "/v1/agent/service/register", body); code != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", body, code)
		}
	}
	if code, _ := do(t, a, "PUT", "/v1/agent/service/deregister/nope", nil); code != http.StatusNotFound {
		t.Errorf("deregister nope: status %d, want 404", code)
	}
	after, err := os.ReadFile(filepath.Join(dir, catalogFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Errorf("%s changed by rejected requests:\nbefore %s\nafter  %s", catalogFile, before, after)
	}
}

// TestCorruptCatalogFailsStart checks that an agent refuses to start on a
// catalog it cannot read, rather than starting empty and tombstoning nothing:
// its old services would then live on in peers' replicas.
func TestCorruptCatalogFailsStart(t *testing.T) {
	for _, tc := range []struct{ name, content string }{
		{"garbage", "not json at all"},
		{"torn write", `{"version":1700000000000000,"services":{"web":{"def":{"ID":"web","Na`},
		{"empty file", ""},
		{"wrong shape", `{"services":[1,2,3]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, catalogFile), []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := TestConfig("p0")
			cfg.DataDir = dir
			a, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			err = a.Start()
			if err == nil {
				a.Shutdown()
				t.Fatal("Start succeeded on a corrupt catalog")
			}
			defer a.Shutdown()
			if !strings.Contains(err.Error(), filepath.Join(dir, catalogFile)) {
				t.Errorf("error %q does not name the file %s", err, filepath.Join(dir, catalogFile))
			}
			t.Logf("error: %v", err)
		})
	}
}

// TestCatalogSaveMetrics: every committed change is one fsynced save,
// counted and timed in /metrics; a refused registration saves nothing, and
// an agent without a data dir exports no save series.
func TestCatalogSaveMetrics(t *testing.T) {
	a := startAgent(t, "p0", withDataDir(t.TempDir()))
	before, ok := metricValue(scrapeMetrics(t, a, "/metrics"), "shoal_catalog_saves_total", nil)
	if !ok || before < 1 {
		t.Fatalf("shoal_catalog_saves_total = %v (present %v) after start, want ≥ 1 (the start's bump)", before, ok)
	}
	putOK(t, a, "/v1/agent/service/register", map[string]any{"Name": "web", "ID": "web-1", "Port": 80})
	if code, body := do(t, a, "PUT", "/v1/agent/service/register", map[string]any{"Name": "web", "Port": -1}); code != http.StatusBadRequest {
		t.Fatalf("bad registration answered %d %s, want 400", code, body)
	}
	fams := scrapeMetrics(t, a, "/metrics")
	wantMetric(t, fams, "shoal_catalog_saves_total", nil, before+1)
	if secs, ok := metricValue(fams, "shoal_catalog_save_seconds_total", nil); !ok || secs <= 0 {
		t.Errorf("shoal_catalog_save_seconds_total = %v (present %v), want > 0", secs, ok)
	}

	dev := startAgent(t, "d0", nil)
	if _, ok := metricValue(scrapeMetrics(t, dev, "/metrics"), "shoal_catalog_saves_total", nil); ok {
		t.Error("an agent without a data dir exports shoal_catalog_saves_total")
	}
}
