package node

import (
	"net/http"

	"github.com/shoal-mesh/shoal/gossip"
)

// serfHealthID is the node-level check every instance carries, as in
// Consul: passing while the owner is alive in gossip, critical otherwise.
const serfHealthID = "serfHealth"

func (s *api) healthService(w http.ResponseWriter, r *http.Request) {
	name, tags, passing := r.PathValue("name"), r.URL.Query()["tag"], boolParam(r, "passing")
	meta, near := nodeMetaParam(r), s.nearParam(r)
	f, ok := parseFilter(w, r, ServiceEntry{})
	if !ok {
		return
	}
	s.blocking(w, r, func() any {
		out := []ServiceEntry{}
		for _, in := range s.a.cluster.Catalog().Instances(name) {
			if !hasTags(in.Service, tags) {
				continue
			}
			checks := instanceChecks(in)
			if passing && !allPassing(checks) {
				continue
			}
			e := ServiceEntry{
				Node:    catalogNode(in.Node),
				Service: agentService(in.Service, in.Node.Datacenter(), in.Version),
				Checks:  checks,
			}
			if metaMatches(e.Node.Meta, meta) && f.match(e) {
				out = append(out, e)
			}
		}
		if near != "" {
			sortNear(s.a.cluster.Coordinates(), near, out, func(e ServiceEntry) string { return e.Node.Node })
		}
		return out
	})
}

func (s *api) healthChecks(w http.ResponseWriter, r *http.Request) {
	name, passing, meta, near := r.PathValue("service"), boolParam(r, "passing"), nodeMetaParam(r), s.nearParam(r)
	f, ok := parseFilter(w, r, HealthCheck{})
	if !ok {
		return
	}
	s.blocking(w, r, func() any {
		out := []HealthCheck{}
		for _, in := range s.a.cluster.Catalog().Instances(name) {
			if !metaMatches(in.Node.Meta(), meta) {
				continue
			}
			for _, c := range instanceChecks(in)[1:] {
				if (!passing || c.Status == gossip.StatusPassing) && f.match(c) {
					out = append(out, c)
				}
			}
		}
		if near != "" {
			sortNear(s.a.cluster.Coordinates(), near, out, func(c HealthCheck) string { return c.Node })
		}
		return out
	})
}

func (s *api) healthNode(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("node")
	f, ok := parseFilter(w, r, HealthCheck{})
	if !ok {
		return
	}
	s.blocking(w, r, func() any {
		out := []HealthCheck{}
		m, ok := s.a.cluster.Catalog().Member(name)
		if !ok || !registered(m) {
			return out
		}
		out = append(out, serfHealth(m))
		for _, in := range s.a.cluster.Catalog().NodeInstances(name) {
			out = append(out, instanceChecks(in)[1:]...)
		}
		return filterSlice(f, out)
	})
}

func (s *api) healthState(w http.ResponseWriter, r *http.Request) {
	state := r.PathValue("state")
	switch state {
	case "any", gossip.StatusPassing, gossip.StatusWarning, gossip.StatusCritical:
	default:
		writeError(w, http.StatusBadRequest, "invalid state %q: want any, passing, warning or critical", state)
		return
	}
	meta, near := nodeMetaParam(r), s.nearParam(r)
	f, ok := parseFilter(w, r, HealthCheck{})
	if !ok {
		return
	}
	s.blocking(w, r, func() any {
		out := []HealthCheck{}
		keep := func(c HealthCheck) {
			if (state == "any" || c.Status == state) && f.match(c) {
				out = append(out, c)
			}
		}
		cat := s.a.cluster.Catalog()
		for _, m := range cat.Members() {
			if registered(m) && metaMatches(m.Meta(), meta) {
				keep(serfHealth(m))
			}
		}
		for _, in := range cat.AllInstances() {
			if !metaMatches(in.Node.Meta(), meta) {
				continue
			}
			for _, c := range instanceChecks(in)[1:] {
				keep(c)
			}
		}
		if near != "" {
			sortNear(s.a.cluster.Coordinates(), near, out, func(c HealthCheck) string { return c.Node })
		}
		return out
	})
}

// instanceChecks returns the checks of an instance, its node's serfHealth
// first.
func instanceChecks(in gossip.Instance) []HealthCheck {
	out := make([]HealthCheck, 0, 1+len(in.Service.Checks))
	out = append(out, serfHealth(in.Node))
	for _, c := range in.Service.Checks {
		out = append(out, HealthCheck{
			Node: in.Node.Name, CheckID: c.ID, Name: c.Name, Status: c.Status, Notes: c.Notes, Output: c.Output,
			ServiceID: in.Service.ID, ServiceName: in.Service.Name, ServiceTags: orEmpty(in.Service.Tags),
			Type: c.Type, CreateIndex: in.Version, ModifyIndex: in.Version,
		})
	}
	return out
}

func serfHealth(m gossip.Member) HealthCheck {
	c := HealthCheck{
		Node: m.Name, CheckID: serfHealthID, Name: "Serf Health Status",
		Status: gossip.StatusPassing, Output: "Agent alive and reachable",
		ServiceTags: []string{}, CreateIndex: 1, ModifyIndex: max(m.Index, 1),
	}
	if m.Status != gossip.StatusAlive {
		c.Status, c.Output = gossip.StatusCritical, "Agent not live or unreachable"
	}
	return c
}

func allPassing(checks []HealthCheck) bool {
	for _, c := range checks {
		if c.Status != gossip.StatusPassing {
			return false
		}
	}
	return true
}
