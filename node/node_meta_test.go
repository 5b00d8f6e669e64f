package node

import (
	"fmt"
	"strings"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

func TestValidateNodeMeta(t *testing.T) {
	many := make(map[string]string)
	for i := range 65 {
		many[fmt.Sprintf("k%d", i)] = ""
	}
	cases := []struct {
		name string
		meta map[string]string
		want string // "" means valid
	}{
		{"none", nil, ""},
		{"plain", map[string]string{"rack": "r1", "zone": "eu-1"}, ""},
		{"bad key", map[string]string{"ra ck": "r1"}, "letters, digits"},
		{"empty key", map[string]string{"": "r1"}, "letters, digits"},
		{"long key", map[string]string{strings.Repeat("k", 129): "v"}, "letters, digits"},
		{"reserved", map[string]string{"consul-network-segment": "x"}, "consul- prefix is reserved"},
		{"long value", map[string]string{"k": strings.Repeat("v", 513)}, "over the limit of 512"},
		{"control char", map[string]string{"k": "a\nb"}, "forbidden character"},
		{"too many", many, "65 pairs, over the limit of 64"},
		{"over the tag budget", map[string]string{"k": strings.Repeat("v", 200)}, "bytes of gossip tags"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			errs := validateNodeMeta(c.meta)
			if c.want == "" {
				if len(errs) != 0 {
					t.Fatalf("errors %v, want none", errs)
				}
				return
			}
			if len(errs) == 0 || !strings.Contains(fmt.Sprint(errs), c.want) {
				t.Fatalf("errors %v, want one containing %q", errs, c.want)
			}
		})
	}
}

func TestParseNodeMeta(t *testing.T) {
	got, err := ParseNodeMeta([]string{"rack=r1", "note=a=b", "empty="})
	if err != nil || got["rack"] != "r1" || got["note"] != "a=b" || got["empty"] != "" || len(got) != 3 {
		t.Fatalf("ParseNodeMeta = %v, %v", got, err)
	}
	for _, bad := range [][]string{{"rack"}, {"=r1"}, {"a=1", "a=2"}} {
		if _, err := ParseNodeMeta(bad); err == nil {
			t.Errorf("ParseNodeMeta(%q): no error", bad)
		}
	}
}

// TestNodeMeta starts agents with node meta and reads it back through the
// Consul client: shown as NodeMeta and Meta, selected by ?node-meta=.
func TestNodeMeta(t *testing.T) {
	// The largest meta the budget allows must still fit serf's tag limit.
	full := map[string]string{"rack": "r1", "pad": strings.Repeat("p", maxNodeMetaBytes-len("m:rack")-len("r1")-len("m:pad")-8)}
	if errs := validateNodeMeta(full); len(errs) != 0 {
		t.Fatalf("full meta: %v", errs)
	}
	as := startAgentsWith(t, 3, func(i int, c *Config) {
		switch i {
		case 1:
			c.NodeMeta = full
		case 2:
			c.NodeMeta = map[string]string{"rack": "r2"}
		}
	})
	for _, a := range as {
		reg := &consul.AgentServiceRegistration{Name: "web", ID: "web-" + a.NodeName(), Port: 8080}
		if err := consulClient(t, a).Agent().ServiceRegister(reg); err != nil {
			t.Fatal(err)
		}
	}
	c := consulClient(t, as[0])
	testutil.Wait(t, 10*time.Second, "three web instances", func() bool {
		s, _, err := c.Catalog().Service("web", "", nil)
		return err == nil && len(s) == 3
	})
	r1 := &consul.QueryOptions{NodeMeta: map[string]string{"rack": "r1"}}

	n, _, err := c.Catalog().Node("n1", nil)
	if err != nil || n.Node.Meta["rack"] != "r1" || n.Node.Meta["pad"] != full["pad"] {
		t.Fatalf("Node(n1) meta = %v, %v", n.Node.Meta, err)
	}
	nodes, _, err := c.Catalog().Nodes(r1)
	if err != nil || len(nodes) != 1 || nodes[0].Node != "n1" {
		t.Fatalf("Nodes(rack:r1) = %v, %v, want n1", nodes, err)
	}
	svc, _, err := c.Catalog().Service("web", "", r1)
	if err != nil || len(svc) != 1 || svc[0].Node != "n1" || svc[0].NodeMeta["rack"] != "r1" {
		t.Fatalf("Service(rack:r1) = %v, %v", svc, err)
	}
	entries, _, err := c.Health().Service("web", "", false, &consul.QueryOptions{NodeMeta: map[string]string{"rack": "r2"}})
	if err != nil || len(entries) != 1 || entries[0].Node.Node != "n2" {
		t.Fatalf("Health().Service(rack:r2) = %v, %v", entries, err)
	}
	services, _, err := c.Catalog().Services(r1)
	if err != nil || len(services) != 1 {
		t.Fatalf("Services(rack:r1) = %v, %v", services, err)
	}
	none, _, err := c.Catalog().Nodes(&consul.QueryOptions{NodeMeta: map[string]string{"rack": "r1", "zone": "z"}})
	if err != nil || len(none) != 0 {
		t.Fatalf("Nodes(rack:r1, zone:z) = %v, %v, want none: every pair must match", none, err)
	}
	self, err := consulClient(t, as[2]).Agent().Self()
	if err != nil || self["Meta"]["rack"] != "r2" {
		t.Fatalf("Self() Meta = %v, %v, want rack r2", self["Meta"], err)
	}
	// Filters see the meta too.
	nodes, _, err = c.Catalog().Nodes(&consul.QueryOptions{Filter: `Meta.rack == "r2"`})
	if err != nil || len(nodes) != 1 || nodes[0].Node != "n2" {
		t.Fatalf("Nodes(filter Meta.rack) = %v, %v", nodes, err)
	}
}
