package node

import (
	"net/http"
	"strings"
)

// unserved lists the parts of Consul's HTTP API that Shoal does not
// implement, by path prefix, with the reason a client is told. A Consul
// client that gets a bare 404 there reads "no such key" or "no such
// session": a 501 naming the feature says what is really going on.
// The /v1/connect and /v1/config paths Shoal does not serve get the
// one-line 404 below (Consul's CA and legacy ID-based intention endpoints).
var unserved = []struct{ prefix, reason string }{
	{"/v1/kv", "Shoal has no KV store"},
	{"/v1/txn", "Shoal has no KV store, so no transactions"},
	{"/v1/session", "Shoal has no sessions"},
	{"/v1/event", "Shoal has no user events"},
	{"/v1/snapshot", "Shoal has no server state to snapshot"},
	{"/v1/acl", "Shoal has no ACL system; see the agent's --http-token"},
	{"/v1/agent/token", "Shoal has no ACL tokens"},
	{"/v1/query", "Shoal has no prepared queries"},
	{"/v1/operator/raft", "Shoal has no Raft: every agent owns its own services"},
	{"/v1/operator/autopilot", "Shoal has no servers for autopilot to manage"},
	{"/v1/operator/area", "Shoal has no network areas"},
	{"/v1/operator/segment", "Shoal has no network segments"},
	{"/v1/operator/license", "Shoal has no license"},
	{"/v1/operator/usage", "Shoal has no usage reporting"},
	{"/v1/operator/utilization", "Shoal has no usage reporting"},
	{"/v1/namespace", "Shoal has no namespaces"},
	{"/v1/partition", "Shoal has no admin partitions"},
	{"/v1/peering", "Shoal has no cluster peering"},
	{"/v1/exported-services", "Shoal has no cluster peering"},
	{"/v1/imported-services", "Shoal has no cluster peering"},
	{"/v1/discovery-chain", "Shoal has no discovery chains"},
	{"/v1/internal", "Shoal has no Consul-internal endpoints"},
	{"/v1/agent/host", "Shoal does not report host information"},
	{"/v1/agent/monitor", "Shoal does not stream its logs over HTTP"},
	{"/v1/catalog/register", "Shoal has no catalog writes: register with the owning agent (/v1/agent/service/register)"},
	{"/v1/catalog/deregister", "Shoal has no catalog writes: deregister with the owning agent (/v1/agent/service/deregister)"},
	{"/v1/catalog/gateway-services", "Shoal has no gateways"},
	{"/v1/catalog/connect", "Shoal has no service mesh sidecars in its catalog"},
	{"/v1/health/connect", "Shoal has no service mesh sidecars in its catalog"},
	{"/v1/health/ingress", "Shoal has no gateways"},
	{"/v1/coordinate/datacenters", "Shoal has no WAN pool: one datacenter only"},
	{"/v1/coordinate/update", "Shoal computes coordinates itself"},
}

// unservedRoutes adds the 501 answers for unserved and the one-line 404 for
// any other /v1/ path to mux.
func unservedRoutes(mux *http.ServeMux) {
	for _, u := range unserved {
		h := notImplemented(u.prefix, u.reason)
		mux.Handle(u.prefix, h)
		mux.Handle(u.prefix+"/", h)
	}
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		// A path served with other methods must still get 405, not 404:
		// this catch-all would otherwise shadow the mux's own answer.
		if allow := allowedMethods(mux, r); len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeError(w, http.StatusMethodNotAllowed, "method %s not allowed on %s", r.Method, r.URL.Path)
			return
		}
		writeError(w, http.StatusNotFound, "shoal: no such endpoint %s", truncate(r.URL.Path, 256))
	})
}

func notImplemented(prefix, reason string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotImplemented, "shoal: %s (%s)", reason, prefix)
	})
}

// allowedMethods returns the methods other than r's that mux serves at r's
// path by a route other than the /v1/ catch-all.
func allowedMethods(mux *http.ServeMux, r *http.Request) []string {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete} {
		if m == r.Method {
			continue
		}
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := mux.Handler(probe); pattern != "" && pattern != "/v1/" {
			allow = append(allow, m)
		}
	}
	return allow
}

// refusedParams are query parameters Consul documents that Shoal cannot
// honour: answering as if they were absent would return data the client
// did not ask for. Each maps to the reason given with the 400. The check
// passes a value that means what Shoal does anyway (the default namespace).
var refusedParams = []struct {
	name   string
	ok     func(string) bool
	reason string
}{
	{"wan", nil, "Shoal has no WAN pool: one datacenter only"},
	{"segment", isEmpty, "Shoal has no network segments"},
	{"ns", isDefault, "Shoal has no namespaces"},
	{"partition", isDefault, "Shoal has no admin partitions"},
	{"peer", isEmpty, "Shoal has no cluster peering"},
	{"sameness-group", isEmpty, "Shoal has no sameness groups"},
	{"merge-central-config", nil, "Shoal has no central service configuration"},
}

func isEmpty(v string) bool   { return v == "" }
func isDefault(v string) bool { return v == "" || v == "default" }

// compat wraps the API with the checks every /v1/ endpoint shares: a
// datacenter other than this agent's is unreachable, as Consul answers,
// and parameters Shoal cannot honour are refused.
func (s *api) compat(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/v1/") {
			next.ServeHTTP(w, r)
			return
		}
		q := r.URL.Query()
		if dc := q.Get("dc"); dc != "" && dc != s.a.cfg.Datacenter {
			// Consul's exact words and status: clients match on them.
			writeError(w, http.StatusInternalServerError, "No path to datacenter")
			return
		}
		for _, p := range refusedParams {
			vs, ok := q[p.name]
			if !ok {
				continue
			}
			if p.ok != nil && (len(vs) == 0 || p.ok(vs[0])) {
				continue
			}
			writeError(w, http.StatusBadRequest, "shoal: ?%s is not supported: %s", p.name, p.reason)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// catalogDatacenters answers the datacenters Shoal knows: its own.
func (s *api) catalogDatacenters(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, r, []string{s.a.cfg.Datacenter})
}
