package node

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/shoal-mesh/shoal/gossip"
)

// AgentCheck is a local check as /v1/agent/checks reports it.
type AgentCheck struct {
	Node        string
	CheckID     string
	Name        string
	Status      string
	Notes       string
	Output      string
	ServiceID   string
	ServiceName string
	ServiceTags []string
	Type        string
}

// AgentServiceChecksInfo is one answer of /v1/agent/health/service/...
type AgentServiceChecksInfo struct {
	AggregatedStatus string
	Service          AgentService
	Checks           []AgentCheck
}

func (s *api) registerCheck(w http.ResponseWriter, r *http.Request) {
	var def CheckDefinition
	if !decodeStrict(w, r, &def) {
		return
	}
	if def.Name == "" {
		writeError(w, http.StatusBadRequest, "invalid check: missing check name")
		return
	}
	if def.CheckID == "" {
		def.CheckID = def.ID
	}
	if def.CheckID == "" {
		def.CheckID = def.Name
	}
	def.ID = ""
	if err := normalizeCheck(&def); err != nil {
		writeError(w, http.StatusBadRequest, "invalid check: %v", err)
		return
	}
	if def.ServiceID != "" {
		if _, ok := s.a.reg.current().Services[def.ServiceID]; !ok {
			writeError(w, http.StatusBadRequest, "invalid check: unknown service ID %q", def.ServiceID)
			return
		}
	}
	s.commitResult(w, "register check "+def.CheckID, s.a.reg.registerCheck(def))
}

func (s *api) deregisterCheck(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !validPathID(w, "check ID", id) {
		return
	}
	s.commitResult(w, "deregister check "+id, s.a.reg.deregisterCheck(id))
}

// ttlUpdate serves /v1/agent/check/{pass,warn,fail}/:id?note= for TTL checks.
func (s *api) ttlUpdate(status string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.updateTTL(w, r.PathValue("id"), status, r.URL.Query().Get("note"))
	}
}

// ttlUpdateBody serves PUT /v1/agent/check/update/:id {"Status","Output"}.
func (s *api) ttlUpdateBody(w http.ResponseWriter, r *http.Request) {
	var body struct{ Status, Output string }
	if !decodeBody(w, r, &body) {
		return
	}
	switch body.Status {
	case gossip.StatusPassing, gossip.StatusWarning, gossip.StatusCritical:
	default:
		writeError(w, http.StatusBadRequest, "invalid Status %q: want passing, warning or critical", body.Status)
		return
	}
	s.updateTTL(w, r.PathValue("id"), body.Status, body.Output)
}

func (s *api) updateTTL(w http.ResponseWriter, id, status, output string) {
	if !validPathID(w, "check ID", id) {
		return
	}
	if err := validateText("note", output, maxCheckOutput); err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	c, _ := s.a.reg.current().findCheck(id)
	if c == nil {
		writeError(w, http.StatusNotFound, "unknown check ID %q", id)
		return
	}
	if c.Def.TTL <= 0 {
		writeError(w, http.StatusBadRequest, "check %q is not a TTL check", id)
		return
	}
	if err := s.a.UpdateCheck(id, status, output); err != nil {
		s.commitResult(w, "update check "+id, err)
		return
	}
	s.a.checks.resetTTL(id)
}

// commitResult answers the outcome of a registry change.
func (s *api) commitResult(w http.ResponseWriter, what string, err error) {
	switch {
	case err == nil:
	case errors.Is(err, errNotFound):
		writeError(w, http.StatusNotFound, "%s: %v", what, err)
	default:
		s.a.log.Error("change failed", "what", what, "err", err)
		writeError(w, http.StatusInternalServerError, "%s: %v", what, err)
	}
}

func (s *api) agentChecks(w http.ResponseWriter, r *http.Request) {
	f, ok := parseFilter(w, r, AgentCheck{})
	if !ok {
		return
	}
	st := s.a.reg.current()
	out := make(map[string]AgentCheck)
	for _, ls := range st.Services {
		for _, c := range ls.gossipService(st.NodeChecks).Checks {
			out[c.ID] = s.agentCheck(c, ls)
		}
	}
	for _, c := range st.NodeChecks {
		out[c.Def.CheckID] = s.agentCheck(c.gossipCheck(), nil)
	}
	writeJSON(w, r, filterMap(f, out))
}

func (s *api) agentCheck(c gossip.Check, ls *localService) AgentCheck {
	ac := AgentCheck{
		Node: s.a.cfg.NodeName, CheckID: c.ID, Name: c.Name, Status: c.Status, Notes: c.Notes,
		Output: c.Output, Type: c.Type, ServiceTags: []string{},
	}
	if ls != nil && !isNodeCheck(s.a.reg.current(), c.ID) {
		ac.ServiceID, ac.ServiceName, ac.ServiceTags = ls.Def.ID, ls.Def.Name, orEmpty(ls.Def.Tags)
	}
	return ac
}

func isNodeCheck(st *registryState, id string) bool {
	_, ok := st.NodeChecks[id]
	return ok
}

// agentHealthByName answers the aggregated local health of every instance of
// a service: 200 passing, 429 warning, 503 critical, 404 unknown.
func (s *api) agentHealthByName(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	st := s.a.reg.current()
	var out []AgentServiceChecksInfo
	worst := gossip.StatusPassing
	for _, ls := range s.a.reg.services() {
		if ls.Def.Name != name {
			continue
		}
		info := s.checksInfo(st, ls)
		worst = worse(worst, info.AggregatedStatus)
		out = append(out, info)
	}
	if len(out) == 0 {
		writeError(w, http.StatusNotFound, "unknown service name %q", name)
		return
	}
	s.writeHealth(w, r, worst, out)
}

func (s *api) agentHealthByID(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !validPathID(w, "service ID", id) {
		return
	}
	st := s.a.reg.current()
	ls, ok := st.Services[id]
	if !ok {
		writeError(w, http.StatusNotFound, "unknown service ID %q", id)
		return
	}
	info := s.checksInfo(st, ls)
	s.writeHealth(w, r, info.AggregatedStatus, info)
}

func (s *api) checksInfo(st *registryState, ls *localService) AgentServiceChecksInfo {
	gs := ls.gossipService(st.NodeChecks)
	info := AgentServiceChecksInfo{
		AggregatedStatus: gs.Status(),
		Service:          agentService(gs, s.a.cfg.Datacenter, ls.Version),
		Checks:           []AgentCheck{},
	}
	for _, c := range gs.Checks {
		info.Checks = append(info.Checks, s.agentCheck(c, ls))
	}
	return info
}

func (s *api) writeHealth(w http.ResponseWriter, r *http.Request, status string, v any) {
	code := map[string]int{
		gossip.StatusPassing: http.StatusOK, gossip.StatusWarning: http.StatusTooManyRequests,
	}[status]
	if code == 0 {
		code = http.StatusServiceUnavailable
	}
	if r.URL.Query().Get("format") == "text" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(code)
		w.Write([]byte(status))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	writeJSON(w, r, v)
}

func worse(a, b string) string {
	rank := map[string]int{gossip.StatusPassing: 0, gossip.StatusWarning: 1, gossip.StatusCritical: 2}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

// maintenance serves PUT /v1/agent/service/maintenance/:id and
// PUT /v1/agent/maintenance: ?enable=true|false (required) and ?reason=.
func (s *api) maintenance(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	raw := q.Get("enable")
	if raw == "" {
		writeError(w, http.StatusBadRequest, "missing value for enable")
		return
	}
	enable, err := strconv.ParseBool(raw)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid value for enable: %q", raw)
		return
	}
	reason := q.Get("reason")
	if err := validateText("reason", reason, maxMetaValLen); err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	id := r.PathValue("id")
	if id != "" && !validPathID(w, "service ID", id) {
		return
	}
	s.commitResult(w, "maintenance", s.a.reg.setMaintenance(id, enable, reason))
}
