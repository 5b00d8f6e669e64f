package node

import (
	"maps"
	"net/http"
	"slices"

	"github.com/shoal-mesh/shoal/gossip"
)

func (s *api) catalogServices(w http.ResponseWriter, r *http.Request) {
	meta := nodeMetaParam(r)
	f, ok := parseFilter(w, r, CatalogService{})
	if !ok {
		return
	}
	if meta == nil && f == nil {
		s.blocking(w, r, func() any { return s.a.cluster.Catalog().Services() })
		return
	}
	// Filtered: by instance, as Consul filters its service nodes, then
	// grouped by name again.
	s.blocking(w, r, func() any {
		tags := make(map[string]map[string]bool)
		for _, in := range s.a.cluster.Catalog().AllInstances() {
			c := catalogServiceOf(in)
			if !metaMatches(c.NodeMeta, meta) || !f.match(c) {
				continue
			}
			if tags[c.ServiceName] == nil {
				tags[c.ServiceName] = make(map[string]bool)
			}
			for _, t := range c.ServiceTags {
				tags[c.ServiceName][t] = true
			}
		}
		out := make(map[string][]string, len(tags))
		for name, set := range tags {
			out[name] = slices.Sorted(maps.Keys(set))
		}
		return out
	})
}

func (s *api) catalogService(w http.ResponseWriter, r *http.Request) {
	name, tags, meta, near := r.PathValue("name"), r.URL.Query()["tag"], nodeMetaParam(r), s.nearParam(r)
	f, ok := parseFilter(w, r, CatalogService{})
	if !ok {
		return
	}
	s.blocking(w, r, func() any {
		out := []CatalogService{}
		for _, in := range s.a.cluster.Catalog().Instances(name) {
			if !hasTags(in.Service, tags) {
				continue
			}
			if c := catalogServiceOf(in); metaMatches(c.NodeMeta, meta) {
				out = append(out, c)
			}
		}
		out = filterSlice(f, out)
		if near != "" {
			sortNear(s.a.cluster.Coordinates(), near, out, func(c CatalogService) string { return c.Node })
		}
		return out
	})
}

func (s *api) catalogNodes(w http.ResponseWriter, r *http.Request) {
	meta, near := nodeMetaParam(r), s.nearParam(r)
	f, ok := parseFilter(w, r, CatalogNode{})
	if !ok {
		return
	}
	s.blocking(w, r, func() any {
		out := []CatalogNode{}
		for _, m := range s.a.cluster.Catalog().Members() {
			if registered(m) {
				if n := catalogNode(m); metaMatches(n.Meta, meta) {
					out = append(out, n)
				}
			}
		}
		out = filterSlice(f, out)
		if near != "" {
			sortNear(s.a.cluster.Coordinates(), near, out, func(n CatalogNode) string { return n.Node })
		}
		return out
	})
}

func (s *api) catalogNode(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("node")
	// Consul filters the node's services here.
	f, ok := parseFilter(w, r, AgentService{})
	if !ok {
		return
	}
	s.blocking(w, r, func() any {
		m, ok := s.a.cluster.Catalog().Member(name)
		if !ok || !registered(m) {
			return nil // Consul answers null for an unknown node
		}
		services := make(map[string]AgentService)
		for _, in := range s.a.cluster.Catalog().NodeInstances(name) {
			services[in.Service.ID] = agentService(in.Service, m.Datacenter(), in.Version)
		}
		return map[string]any{"Node": catalogNode(m), "Services": filterMap(f, services)}
	})
}

// catalogServiceOf is an instance as /v1/catalog/service/:name shows it.
func catalogServiceOf(in gossip.Instance) CatalogService {
	n := catalogNode(in.Node)
	return CatalogService{
		ID: n.ID, Node: n.Node, Address: n.Address, Datacenter: n.Datacenter,
		TaggedAddresses: n.TaggedAddresses, NodeMeta: n.Meta,
		ServiceID: in.Service.ID, ServiceName: in.Service.Name, ServiceAddress: in.Service.Address,
		ServiceTags: orEmpty(in.Service.Tags), ServiceMeta: orEmptyMap(in.Service.Meta),
		ServicePort:              in.Service.Port,
		ServiceWeights:           Weights{Passing: in.Service.Weights.Passing, Warning: in.Service.Weights.Warning},
		ServiceEnableTagOverride: in.Service.EnableTagOverride,
		CreateIndex:              in.Version, ModifyIndex: in.Version,
	}
}

// registered reports whether a member is in the catalog: alive or failed
// (its services reported critical), not gone.
func registered(m gossip.Member) bool {
	return m.Status != gossip.StatusLeft && m.Status != gossip.StatusNone
}

func catalogNode(m gossip.Member) CatalogNode {
	addr := m.Addr.String()
	return CatalogNode{
		ID: m.NodeID(), Node: m.Name, Address: addr, Datacenter: m.Datacenter(),
		TaggedAddresses: map[string]string{"lan": addr, "wan": addr},
		Meta:            m.Meta(),
		CreateIndex:     1, ModifyIndex: max(m.Index, 1),
	}
}

// hasTags reports whether the service carries every one of tags.
func hasTags(s *gossip.Service, tags []string) bool {
	for _, t := range tags {
		if !slices.Contains(s.Tags, t) {
			return false
		}
	}
	return true
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func orEmptyMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
