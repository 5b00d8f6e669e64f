package node

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// passingSet returns the sorted IDs of name's instances in ?passing on a.
func passingSet(t *testing.T, a *Agent, name string) string {
	t.Helper()
	var ids []string
	for _, e := range healthEntries(t, a, name, "?passing") {
		ids = append(ids, e.Service.ID)
	}
	sort.Strings(ids)
	return strings.Join(ids, ",")
}

// waitPassingEverywhere polls every agent until name's passing instances
// are exactly want (comma-separated, sorted).
func waitPassingEverywhere(t *testing.T, as []*Agent, name, want string, timeout time.Duration) {
	t.Helper()
	for _, a := range as {
		var got string
		testutil.Wait(t, timeout, fmt.Sprintf("%s passing = [%s] on %s", name, want, a.NodeName()), func() bool {
			got = passingSet(t, a, name)
			return got == want
		})
	}
}

// healthCheckOf returns check id of instance sid in /v1/health/service/name
// on a, or false.
func healthCheckOf(t *testing.T, a *Agent, name, sid, id string) (HealthCheck, bool) {
	t.Helper()
	for _, e := range healthEntries(t, a, name, "") {
		if e.Service.ID != sid {
			continue
		}
		for _, c := range e.Checks {
			if c.CheckID == id {
				return c, true
			}
		}
	}
	return HealthCheck{}, false
}

func TestServiceMaintenance(t *testing.T) {
	as := startAgents(t, 3)
	owner := as[1]
	web1 := map[string]any{"ID": "web-1", "Name": "web", "Port": 8080}
	putOK(t, owner, "/v1/agent/service/register", web1)
	putOK(t, owner, "/v1/agent/service/register", map[string]any{"ID": "web-2", "Name": "web", "Port": 8081})
	putOK(t, as[2], "/v1/agent/service/register", map[string]any{"ID": "web-3", "Name": "web", "Port": 8082})
	waitPassingEverywhere(t, as, "web", "web-1,web-2,web-3", 10*time.Second)

	putOK(t, owner, "/v1/agent/service/maintenance/web-1?enable=true&reason=deploy", nil)
	waitPassingEverywhere(t, as, "web", "web-2,web-3", 10*time.Second)
	for _, a := range as {
		c, ok := healthCheckOf(t, a, "web", "web-1", "_service_maintenance:web-1")
		if !ok || c.Status != "critical" || c.Notes != "deploy" || c.Type != "maintenance" || c.Node != "n1" {
			t.Errorf("%s: maintenance check = %+v (found %v), want critical with notes deploy", a.NodeName(), c, ok)
		}
	}
	if c, ok := agentChecksOf(t, owner)["_service_maintenance:web-1"]; !ok || c.ServiceID != "web-1" || c.Notes != "deploy" {
		t.Errorf("owner's /v1/agent/checks: %+v (found %v), want web-1's, notes deploy", c, ok)
	}
	if _, ok := owner.reg.current().Services["web-1"]; !ok {
		t.Fatal("web-1 lost its registration in maintenance")
	}
	// Enabling again is idempotent; a new reason replaces the old one.
	putOK(t, owner, "/v1/agent/service/maintenance/web-1?enable=true&reason=deploy", nil)
	putOK(t, owner, "/v1/agent/service/maintenance/web-1?enable=true&reason=deploy+2", nil)
	if c := agentChecksOf(t, owner)["_service_maintenance:web-1"]; c.Notes != "deploy 2" {
		t.Errorf("notes after a new reason = %q, want \"deploy 2\"", c.Notes)
	}

	// Registering the service again keeps it in maintenance.
	putOK(t, owner, "/v1/agent/service/register", web1)
	if c, ok := agentChecksOf(t, owner)["_service_maintenance:web-1"]; !ok || c.Status != "critical" {
		t.Fatalf("maintenance after re-registration: %+v (found %v)", c, ok)
	}
	if got := passingSet(t, owner, "web"); got != "web-2,web-3" {
		t.Errorf("owner passing after re-registration = [%s], want web-2,web-3", got)
	}

	putOK(t, owner, "/v1/agent/service/maintenance/web-1?enable=false", nil)
	waitPassingEverywhere(t, as, "web", "web-1,web-2,web-3", 10*time.Second)
	for _, a := range as {
		if c, ok := healthCheckOf(t, a, "web", "web-1", "_service_maintenance:web-1"); ok {
			t.Errorf("%s: maintenance check still there: %+v", a.NodeName(), c)
		}
	}
	// Disabling when not enabled is a no-op.
	putOK(t, owner, "/v1/agent/service/maintenance/web-1?enable=false", nil)

	// Without a reason, Consul's default notes.
	putOK(t, owner, "/v1/agent/service/maintenance/web-2?enable=true", nil)
	if c := agentChecksOf(t, owner)["_service_maintenance:web-2"]; !strings.Contains(c.Notes, "no reason was provided") {
		t.Errorf("default notes = %q", c.Notes)
	}
	putOK(t, owner, "/v1/agent/service/maintenance/web-2?enable=false", nil)
	waitPassingEverywhere(t, as, "web", "web-1,web-2,web-3", 10*time.Second)
}

func TestNodeMaintenance(t *testing.T) {
	as := startAgents(t, 3)
	owner := as[1]
	putOK(t, owner, "/v1/agent/service/register", map[string]any{"ID": "web-1", "Name": "web"})
	putOK(t, owner, "/v1/agent/service/register", map[string]any{"ID": "db-1", "Name": "db"})
	putOK(t, as[2], "/v1/agent/service/register", map[string]any{"ID": "web-2", "Name": "web"})
	waitPassingEverywhere(t, as, "web", "web-1,web-2", 10*time.Second)
	waitPassingEverywhere(t, as, "db", "db-1", 10*time.Second)

	putOK(t, owner, "/v1/agent/maintenance?enable=true&reason=kernel+upgrade", nil)
	waitPassingEverywhere(t, as, "web", "web-2", 10*time.Second)
	waitPassingEverywhere(t, as, "db", "", 10*time.Second)
	for _, a := range as {
		for name, sid := range map[string]string{"web": "web-1", "db": "db-1"} {
			c, ok := healthCheckOf(t, a, name, sid, "_node_maintenance")
			if !ok || c.Status != "critical" || c.Notes != "kernel upgrade" {
				t.Errorf("%s: %s node maintenance check = %+v (found %v)", a.NodeName(), sid, c, ok)
			}
		}
	}
	c, ok := agentChecksOf(t, owner)["_node_maintenance"]
	if !ok || c.ServiceID != "" || c.Type != "maintenance" {
		t.Errorf("owner's node maintenance check = %+v (found %v), want a node check", c, ok)
	}
	if n := len(owner.reg.current().Services); n != 2 {
		t.Errorf("owner has %d services in maintenance, want both kept", n)
	}
	// A service registered during node maintenance is in it too.
	putOK(t, owner, "/v1/agent/service/register", map[string]any{"ID": "web-3", "Name": "web"})
	if got := passingSet(t, owner, "web"); got != "web-2" {
		t.Errorf("passing with a new service in node maintenance = [%s], want web-2", got)
	}

	putOK(t, owner, "/v1/agent/maintenance?enable=false", nil)
	waitPassingEverywhere(t, as, "web", "web-1,web-2,web-3", 10*time.Second)
	waitPassingEverywhere(t, as, "db", "db-1", 10*time.Second)
	if _, ok := agentChecksOf(t, owner)["_node_maintenance"]; ok {
		t.Error("node maintenance check left behind")
	}
}

func TestMaintenanceErrors(t *testing.T) {
	a := startAgent(t, "n0", nil)
	putOK(t, a, "/v1/agent/service/register", map[string]any{"ID": "web-1", "Name": "web"})
	for _, tt := range []struct {
		path string
		code int
	}{
		{"/v1/agent/service/maintenance/web-1", http.StatusBadRequest},
		{"/v1/agent/service/maintenance/web-1?enable=", http.StatusBadRequest},
		{"/v1/agent/service/maintenance/web-1?enable=maybe", http.StatusBadRequest},
		{"/v1/agent/maintenance", http.StatusBadRequest},
		{"/v1/agent/maintenance?enable=yes", http.StatusBadRequest},
		{"/v1/agent/service/maintenance/nope?enable=true", http.StatusNotFound},
		{"/v1/agent/service/maintenance/nope?enable=false", http.StatusNotFound},
		{"/v1/agent/service/maintenance/web-1?enable=true&reason=%07bell", http.StatusBadRequest},
	} {
		code, body := do(t, a, "PUT", tt.path, nil)
		if code != tt.code {
			t.Errorf("PUT %s: %d %s, want %d", tt.path, code, body, tt.code)
		}
	}
	if code, _ := do(t, a, "GET", "/v1/agent/maintenance?enable=true", nil); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/agent/maintenance: %d, want 405", code)
	}
	if m := agentChecksOf(t, a); len(m) != 0 {
		t.Errorf("checks after failed requests: %v", m)
	}
}
