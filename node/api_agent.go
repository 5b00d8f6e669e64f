package node

import (
	"errors"
	"net"
	"net/http"
	"runtime"
	"sort"
	"strconv"
	"time"

	"github.com/shoal-mesh/shoal/gossip"
)

// Version is reported by /v1/agent/self and the CLI.
const Version = "0.1.0"

func (s *api) registerService(w http.ResponseWriter, r *http.Request) {
	var def ServiceDefinition
	if !decodeStrict(w, r, &def) {
		return
	}
	checks, err := normalizeService(&def)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid service: %v", err)
		return
	}
	opened, err := s.a.openUpstreams(&def)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid service: %v", err)
		return
	}
	if err := s.a.reg.register(def, checks); err != nil {
		s.a.closeUpstreams(opened)
		s.a.log.Error("register failed", "service", def.ID, "err", err)
		writeError(w, http.StatusInternalServerError, "register %q: %v", def.ID, err)
		return
	}
	s.a.log.Debug("service registered", "service", def.ID, "name", def.Name)
}

func (s *api) deregisterService(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !validPathID(w, "service ID", id) {
		return
	}
	err := s.a.reg.deregister(id)
	switch {
	case errors.Is(err, errNotFound):
		writeError(w, http.StatusNotFound, "unknown service ID %q", id)
	case err != nil:
		s.a.log.Error("deregister failed", "service", id, "err", err)
		writeError(w, http.StatusInternalServerError, "deregister %q: %v", id, err)
	default:
		s.a.log.Debug("service deregistered", "service", id)
	}
}

func (s *api) agentServices(w http.ResponseWriter, r *http.Request) {
	f, ok := parseFilter(w, r, AgentService{})
	if !ok {
		return
	}
	out := make(map[string]AgentService)
	for _, ls := range s.a.reg.services() {
		out[ls.Def.ID] = agentService(ls.gossipService(nil), s.a.cfg.Datacenter, ls.Version)
	}
	writeJSON(w, r, filterMap(f, out))
}

func (s *api) agentService(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if id == "register" {
		// GET on the PUT-only register route lands here: answer as for
		// any other wrong method.
		w.Header().Set("Allow", http.MethodPut)
		writeError(w, http.StatusMethodNotAllowed, "method %s not allowed on %s", r.Method, r.URL.Path)
		return
	}
	if !validPathID(w, "service ID", id) {
		return
	}
	ls, ok := s.a.reg.current().Services[id]
	if !ok {
		writeError(w, http.StatusNotFound, "unknown service ID %q", id)
		return
	}
	setMeta(w, ls.Version)
	writeJSON(w, r, agentService(ls.gossipService(nil), s.a.cfg.Datacenter, ls.Version))
}

func (s *api) agentMembers(w http.ResponseWriter, r *http.Request) {
	f, ok := parseFilter(w, r, AgentMember{})
	if !ok {
		return
	}
	members := s.a.cluster.Members()
	sort.Slice(members, func(i, j int) bool { return members[i].Name < members[j].Name })
	out := make([]AgentMember, len(members))
	for i, m := range members {
		out[i] = agentMember(m)
	}
	writeJSON(w, r, filterSlice(f, out))
}

func (s *api) agentSelf(w http.ResponseWriter, r *http.Request) {
	local := s.a.cluster.LocalMember()
	writeJSON(w, r, map[string]any{
		"Config": map[string]any{
			"Datacenter": s.a.cfg.Datacenter,
			"NodeName":   s.a.cfg.NodeName,
			"NodeID":     s.a.nodeID,
			"Version":    Version,
			"Server":     false,
			"Revision":   "shoal",
		},
		"Member": agentMember(local),
		"Meta":   orEmptyMap(s.a.cfg.NodeMeta), // the node meta, as Consul's
		"Stats":  s.selfStats(),
	})
}

// selfStats returns /v1/agent/self's statistics in Consul's shape: sections
// of string values (consul info prints them with %s).
func (s *api) selfStats() map[string]map[string]string {
	u := func(n uint64) string { return strconv.FormatUint(n, 10) }
	i := func(n int) string { return strconv.Itoa(n) }
	st := s.a.cluster.Stats()
	reg := s.a.reg.current()
	checks := len(reg.NodeChecks)
	for _, ls := range reg.Services {
		checks += len(ls.gossipService(nil).Checks)
	}
	counts := make(map[gossip.MemberStatus]int)
	members := s.a.cluster.Members()
	for _, m := range members {
		counts[m.Status]++
	}
	pkiStats := map[string]string{"enabled": "false"}
	if ids := s.a.ids; ids != nil {
		b := ids.Bundle()
		pkiStats = map[string]string{
			"enabled":           "true",
			"trust_domain":      b.TrustDomain,
			"roots":             i(len(b.Roots)),
			"node_cert_expires": b.NodeCert.NotAfter.UTC().Format(time.RFC3339),
			"leaves":            i(len(*ids.byName.Load())),
		}
	}
	return map[string]map[string]string{
		"pki": pkiStats,
		"agent": {
			"services": i(len(reg.Services)),
			"checks":   i(checks),
		},
		"build": {
			"version":          Version,
			"revision":         "shoal",
			"prerelease":       "",
			"version_metadata": "",
		},
		"runtime": {
			"os":         runtime.GOOS,
			"arch":       runtime.GOARCH,
			"version":    runtime.Version(),
			"goroutines": i(runtime.NumGoroutine()),
			"max_procs":  i(runtime.GOMAXPROCS(0)),
			"cpu_count":  i(runtime.NumCPU()),
		},
		"serf_lan": {
			"members":         i(len(members)),
			"alive":           i(counts[gossip.StatusAlive]),
			"failed":          i(counts[gossip.StatusFailed]),
			"left":            i(counts[gossip.StatusLeft]),
			"member_failures": u(st.MemberFailures),
			"encrypted":       strconv.FormatBool(s.a.cfg.Encrypt != ""),
		},
		"catalog": {
			"version":    u(reg.Version),
			"services":   i(len(reg.Services)),
			"rpc_addr":   s.a.cluster.RPCAddr(),
			"bytes_out":  u(st.BytesOut),
			"bytes_in":   u(st.BytesIn),
			"pushes_out": u(st.PushesOut),
			"pushes_in":  u(st.PushesIn),
			"pulls":      u(st.Pulls),
		},
	}
}

func (s *api) agentJoin(w http.ResponseWriter, r *http.Request) {
	addr := r.PathValue("address")
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, "7946")
	}
	if err := validateJoinAddr(addr); err != nil {
		writeError(w, http.StatusBadRequest, "invalid join address %q: %v", r.PathValue("address"), err)
		return
	}
	if _, err := s.a.cluster.Join([]string{addr}); err != nil {
		writeError(w, http.StatusInternalServerError, "%v", err)
	}
}

func (s *api) agentLeave(w http.ResponseWriter, r *http.Request) {
	// Answer first: leaving shuts the API down.
	s.a.requestLeave()
}

// agentForceLeave moves a failed node to left everywhere (?prune: forgets
// it at once), as Consul's force-leave does.
func (s *api) agentForceLeave(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("node")
	err := s.a.cluster.ForceLeave(name, boolParam(r, "prune"))
	switch {
	case errors.Is(err, gossip.ErrUnknownMember):
		writeError(w, http.StatusNotFound, "unknown node %q", truncate(name, 256))
	case errors.Is(err, gossip.ErrMemberAlive):
		writeError(w, http.StatusBadRequest, "node %q is not failed: force-leave removes failed nodes only (use leave on the node itself)", name)
	case err != nil:
		writeError(w, http.StatusInternalServerError, "%v", err)
	default:
		s.a.log.Info("node forced to leave", "node", name, "prune", boolParam(r, "prune"))
	}
}

func (s *api) statusLeader(w http.ResponseWriter, r *http.Request) {
	// There is no leader: every agent is the authority for the services it
	// owns. Answering with this agent's own gossip address lets tools that
	// wait for "a leader" proceed.
	setMeta(w, s.a.cluster.Catalog().Index())
	writeJSON(w, r, s.a.cluster.LocalMember().GossipAddr())
}

func (s *api) statusPeers(w http.ResponseWriter, r *http.Request) {
	peers := []string{}
	for _, m := range s.a.cluster.Catalog().Members() {
		if m.Status == gossip.StatusAlive {
			peers = append(peers, m.GossipAddr())
		}
	}
	writeJSON(w, r, peers)
}

func agentMember(m gossip.Member) AgentMember {
	return AgentMember{
		Name: m.Name, Addr: m.Addr.String(), Port: m.Port, Tags: m.Tags, Status: int(m.Status),
		ProtocolMin: m.ProtocolMin, ProtocolMax: m.ProtocolMax, ProtocolCur: m.ProtocolCur,
		DelegateMin: m.DelegateMin, DelegateMax: m.DelegateMax, DelegateCur: m.DelegateCur,
	}
}

func agentService(s *gossip.Service, dc string, version uint64) AgentService {
	tags := s.Tags
	if tags == nil {
		tags = []string{}
	}
	meta := s.Meta
	if meta == nil {
		meta = map[string]string{}
	}
	return AgentService{
		ID: s.ID, Service: s.Name, Tags: tags, Meta: meta, Port: s.Port, Address: s.Address,
		Weights:           Weights{Passing: s.Weights.Passing, Warning: s.Weights.Warning},
		EnableTagOverride: s.EnableTagOverride, Datacenter: dc,
		CreateIndex: version, ModifyIndex: version,
	}
}
