package node

import (
	"fmt"
	"strings"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// TestForceLeave kills two agents without a leave and forces them out
// through the Consul client: a failed node goes to left on every agent,
// its instances with it, and prune forgets it at once. Alive and unknown
// nodes are refused.
func TestForceLeave(t *testing.T) {
	as := startAgents(t, 4)
	for _, a := range as[2:] {
		reg := &consul.AgentServiceRegistration{Name: "web", ID: "web-" + a.NodeName(), Port: 8080}
		if err := consulClient(t, a).Agent().ServiceRegister(reg); err != nil {
			t.Fatal(err)
		}
	}
	c0, c1 := consulClient(t, as[0]), consulClient(t, as[1])
	testutil.Wait(t, 10*time.Second, "both web instances at n1", func() bool {
		s, _, err := c1.Catalog().Service("web", "", nil)
		return err == nil && len(s) == 2
	})

	if err := c0.Agent().ForceLeave("n1"); err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "not failed") {
		t.Errorf("ForceLeave(alive n1): %v, want 400 not failed", err)
	}
	if err := c0.Agent().ForceLeave("n0"); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("ForceLeave(self): %v, want 400", err)
	}
	if err := c0.Agent().ForceLeave("nope"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("ForceLeave(nope): %v, want 404", err)
	}

	as[2].Shutdown()
	as[3].Shutdown()
	status := func(a *Agent, name string) string {
		m, ok := a.Cluster().Catalog().Member(name)
		if !ok {
			return "gone"
		}
		return m.Status.String()
	}
	testutil.Wait(t, 15*time.Second, "n2 and n3 failed at n0 and n1", func() bool {
		for _, a := range as[:2] {
			if status(a, "n2") != "failed" || status(a, "n3") != "failed" {
				return false
			}
		}
		return true
	})

	if err := c0.Agent().ForceLeave("n2"); err != nil {
		t.Fatalf("ForceLeave(n2): %v", err)
	}
	if err := c0.Agent().ForceLeavePrune("n3"); err != nil {
		t.Fatalf("ForceLeavePrune(n3): %v", err)
	}
	testutil.WaitState(t, 10*time.Second, 5*time.Millisecond, "n2 left and n3 gone everywhere, with their instances", func() (bool, string) {
		for _, a := range as[:2] {
			if status(a, "n2") != "left" || status(a, "n3") != "gone" {
				return false, fmt.Sprintf("at %s: n2 %s, n3 %s", a.NodeName(), status(a, "n2"), status(a, "n3"))
			}
			s, _, err := consulClient(t, a).Catalog().Service("web", "", nil)
			if err != nil || len(s) != 0 {
				return false, fmt.Sprintf("at %s: web instances %d, err %v", a.NodeName(), len(s), err)
			}
		}
		return true, ""
	})
	ms, err := c1.Agent().Members(false)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Name == "n3" {
			t.Errorf("pruned n3 still a member: %+v", m)
		}
		if m.Name == "n2" && m.Status != 3 {
			t.Errorf("n2 status %d, want 3 (left)", m.Status)
		}
	}
	// Again on a left node: nothing to do, no error.
	if err := c0.Agent().ForceLeave("n2"); err != nil {
		t.Errorf("ForceLeave(left n2): %v", err)
	}
}
