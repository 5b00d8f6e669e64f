package node

import (
	"net/http"
	"slices"

	"github.com/shoal-mesh/shoal/gossip"
)

func (s *api) catalogServices(w http.ResponseWriter, r *http.Request) {
	s.blocking(w, r, func() any { return s.a.cluster.Catalog().Services() })
}

func (s *api) catalogService(w http.ResponseWriter, r *http.Request) {
	name, tags := r.PathValue("name"), r.URL.Query()["tag"]
	s.blocking(w, r, func() any {
		out := []CatalogService{}
		for _, in := range s.a.cluster.Catalog().Instances(name) {
			if !hasTags(in.Service, tags) {
				continue
			}
			n := catalogNode(in.Node)
			out = append(out, CatalogService{
				ID: n.ID, Node: n.Node, Address: n.Address, Datacenter: n.Datacenter,
				TaggedAddresses: n.TaggedAddresses, NodeMeta: n.Meta,
				ServiceID: in.Service.ID, ServiceName: in.Service.Name, ServiceAddress: in.Service.Address,
				ServiceTags: orEmpty(in.Service.Tags), ServiceMeta: orEmptyMap(in.Service.Meta),
				ServicePort:              in.Service.Port,
				ServiceWeights:           Weights{Passing: in.Service.Weights.Passing, Warning: in.Service.Weights.Warning},
				ServiceEnableTagOverride: in.Service.EnableTagOverride,
				CreateIndex:              in.Version, ModifyIndex: in.Version,
			})
		}
		return out
	})
}

func (s *api) catalogNodes(w http.ResponseWriter, r *http.Request) {
	s.blocking(w, r, func() any {
		out := []CatalogNode{}
		for _, m := range s.a.cluster.Catalog().Members() {
			if registered(m) {
				out = append(out, catalogNode(m))
			}
		}
		return out
	})
}

func (s *api) catalogNode(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("node")
	s.blocking(w, r, func() any {
		m, ok := s.a.cluster.Catalog().Member(name)
		if !ok || !registered(m) {
			return nil // Consul answers null for an unknown node
		}
		services := make(map[string]AgentService)
		for _, in := range s.a.cluster.Catalog().NodeInstances(name) {
			services[in.Service.ID] = agentService(in.Service, m.Datacenter(), in.Version)
		}
		return map[string]any{"Node": catalogNode(m), "Services": services}
	})
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
		Meta:            map[string]string{},
		CreateIndex:     1, ModifyIndex: m.CatalogVersion(),
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
