package node

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// TestUIStateConfig: the page's state lists the config entries (kind,
// name, ModifyIndex as the config API answers it, writer) and the
// intentions by precedence, says whether this agent enforces them, and a
// blocking read of it returns when only an entry changes.
func TestUIStateConfig(t *testing.T) {
	as := startAgents(t, 2)
	c0 := consulClient(t, as[0])
	putOK(t, as[1], "/v1/config", map[string]any{"Kind": "service-defaults", "Name": "web", "Protocol": "http",
		"LoadBalancer": map[string]any{"Policy": "least_request"}})
	putOK(t, as[0], "/v1/connect/intentions/exact?source=web&destination=db", map[string]any{"Action": "deny", "Description": "no <b>db</b>"})
	putOK(t, as[0], "/v1/connect/intentions/exact?source=*&destination=db", map[string]any{"Action": "allow"})
	var st UIState
	testutil.Wait(t, 5*time.Second, "both entries in n0's state", func() bool {
		st = uiGetState(t, as[0], "")
		return len(st.Config.Entries) == 2 && len(st.Config.Intentions) == 2
	})
	cfg := st.Config
	if cfg.Enforced || cfg.DefaultIntention != actionAllow {
		t.Errorf("without the PKI: Enforced %v, default %q; want false, allow", cfg.Enforced, cfg.DefaultIntention)
	}
	sd, _, err := c0.ConfigEntries().Get(consul.ServiceDefaults, "web", nil)
	if err != nil {
		t.Fatal(err)
	}
	e := cfg.Entries[0]
	if e.Kind != kindServiceDefaults || e.Name != "web" || e.Writer != "n1" || e.ModifyIndex != sd.GetModifyIndex() ||
		e.CreateIndex != sd.GetCreateIndex() || e.Summary != "protocol http, balancing least_request" {
		t.Errorf("entry 0 = %+v; want service-defaults/web by n1 at ModifyIndex %d", e, sd.GetModifyIndex())
	}
	if e := cfg.Entries[1]; e.Kind != kindServiceIntentions || e.Name != "db" || e.Writer != "n0" || e.Summary != "1 allow, 1 deny" {
		t.Errorf("entry 1 = %+v; want service-intentions/db by n0", e)
	}
	want := []UIIntention{
		{Source: "web", Destination: "db", Action: actionDeny, Precedence: 9, Description: "no <b>db</b>"},
		{Source: "*", Destination: "db", Action: actionAllow, Precedence: 8},
	}
	for i, w := range want {
		got := cfg.Intentions[i]
		w.ModifyIndex = cfg.Entries[1].ModifyIndex
		if got != w {
			t.Errorf("intention %d = %+v, want %+v", i, got, w)
		}
	}

	// A blocking read returns on an entry's change alone, with a higher
	// index, and shows it.
	idx := uiIndex(t, as[0], "")
	type answer struct {
		idx uint64
		err error
	}
	done := make(chan answer, 1)
	go func() {
		resp, err := http.Get("http://" + as[0].HTTPAddr() + "/v1/shoal/ui/state?index=" + strconv.FormatUint(idx, 10) + "&wait=10s")
		if err != nil {
			done <- answer{err: err}
			return
		}
		resp.Body.Close()
		n, err := strconv.ParseUint(resp.Header.Get("X-Consul-Index"), 10, 64)
		done <- answer{n, err}
	}()
	start := time.Now()
	if code, body := do(t, as[1], "DELETE", "/v1/config/service-defaults/web", nil); code != http.StatusOK {
		t.Fatalf("delete: %d %s", code, body)
	}
	a := <-done
	if a.err != nil || a.idx <= idx {
		t.Fatalf("blocking read answered index %d (%v) after %d", a.idx, a.err, idx)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the blocking read returned %v after the delete: it waited for its timeout", took)
	}
	testutil.Wait(t, 5*time.Second, "the delete in n0's state", func() bool {
		st = uiGetState(t, as[0], "")
		return len(st.Config.Entries) == 1 && st.Config.Entries[0].Kind == kindServiceIntentions
	})
}

// TestUIStateConfigEnforced: with the node PKI and default-intention deny,
// the page's state says intentions are enforced and the default is deny.
func TestUIStateConfigEnforced(t *testing.T) {
	p := newTestPKI(t, "mesh.test")
	a := startAgent(t, "n0", func(c *Config) {
		p.configure(c, "n0")
		c.DefaultIntention = actionDeny
	})
	st := uiGetState(t, a, "")
	if !st.Config.Enforced || st.Config.DefaultIntention != actionDeny || st.Config.Entries == nil || st.Config.Intentions == nil {
		t.Errorf("config = %+v; want enforced, default deny, empty lists", st.Config)
	}
}
