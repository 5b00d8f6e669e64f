package node

import (
	"slices"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// TestNear checks ?near=: results come nearest first by the Vivaldi
// estimate from the named node, and an unknown node leaves them as they
// are.
func TestNear(t *testing.T) {
	as := startAgents(t, 3)
	for i, a := range as {
		reg := &consul.AgentServiceRegistration{Name: "web", ID: "web-" + a.NodeName(), Port: 8000 + i}
		if err := consulClient(t, a).Agent().ServiceRegister(reg); err != nil {
			t.Fatal(err)
		}
	}
	c := consulClient(t, as[0])
	testutil.Wait(t, 15*time.Second, "three instances and three coordinates", func() bool {
		s, _, err := c.Catalog().Service("web", "", nil)
		return err == nil && len(s) == 3 && len(as[0].Cluster().Coordinates()) == 3
	})

	// sortedFrom reports whether nodes are in non-decreasing distance from
	// the named node, by the coordinates as of now (they move with every
	// probe, hence the polling).
	sortedFrom := func(from string, nodes []string) bool {
		coords := as[0].Cluster().Coordinates()
		var last time.Duration
		for _, n := range nodes {
			d, err := coords[from].DistanceTo(coords[n])
			if err != nil || d < last {
				return false
			}
			last = d
		}
		return len(nodes) == 3
	}
	for _, near := range []string{"_agent", "n2"} {
		from := near
		if near == "_agent" {
			from = "n0"
		}
		testutil.Wait(t, 10*time.Second, "catalog service near "+near, func() bool {
			s, _, err := c.Catalog().Service("web", "", &consul.QueryOptions{Near: near})
			if err != nil {
				return false
			}
			var nodes []string
			for _, e := range s {
				nodes = append(nodes, e.Node)
			}
			return sortedFrom(from, nodes)
		})
		testutil.Wait(t, 10*time.Second, "health service near "+near, func() bool {
			s, _, err := c.Health().Service("web", "", false, &consul.QueryOptions{Near: near})
			if err != nil {
				return false
			}
			var nodes []string
			for _, e := range s {
				nodes = append(nodes, e.Node.Node)
			}
			return sortedFrom(from, nodes)
		})
		testutil.Wait(t, 10*time.Second, "catalog nodes near "+near, func() bool {
			s, _, err := c.Catalog().Nodes(&consul.QueryOptions{Near: near})
			if err != nil {
				return false
			}
			var nodes []string
			for _, e := range s {
				nodes = append(nodes, e.Node)
			}
			return sortedFrom(from, nodes)
		})
	}

	// An unknown node sorts nothing: the answer is the unsorted one.
	plain, _, err := c.Catalog().Nodes(nil)
	if err != nil {
		t.Fatal(err)
	}
	unknown, _, err := c.Catalog().Nodes(&consul.QueryOptions{Near: "nope"})
	if err != nil {
		t.Fatal(err)
	}
	name := func(n *consul.Node) string { return n.Node }
	if !slices.Equal(mapSlice(plain, name), mapSlice(unknown, name)) {
		t.Errorf("near=nope: %v, want the unsorted %v", mapSlice(unknown, name), mapSlice(plain, name))
	}
}

func mapSlice[T, U any](in []T, f func(T) U) []U {
	out := make([]U, 0, len(in))
	for _, v := range in {
		out = append(out, f(v))
	}
	return out
}
