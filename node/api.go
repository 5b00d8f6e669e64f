package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-mesh/shoal/gossip"
)

// maxBody bounds request bodies; larger ones get 413.
const maxBody = 1 << 20

// Blocking query limits, as Consul's.
const (
	defaultWait = 5 * time.Minute
	maxWait     = 10 * time.Minute
)

// api serves the Consul-compatible HTTP API of an agent.
type api struct {
	a *Agent
}

func newAPI(a *Agent) *api { return &api{a: a} }

func (s *api) handler() http.Handler {
	mux := http.NewServeMux()
	// Agent: this node's own services and its view of the cluster.
	mux.HandleFunc("PUT /v1/agent/service/register", s.registerService)
	mux.HandleFunc("PUT /v1/agent/service/deregister/{id}", s.deregisterService)
	mux.HandleFunc("GET /v1/agent/services", s.agentServices)
	mux.HandleFunc("GET /v1/agent/service/{id}", s.agentService)
	mux.HandleFunc("GET /v1/agent/members", s.agentMembers)
	mux.HandleFunc("GET /v1/agent/self", s.agentSelf)
	mux.HandleFunc("PUT /v1/agent/reload", s.agentReload)
	mux.HandleFunc("GET /v1/agent/connect/ca/roots", s.connectRoots)
	mux.HandleFunc("GET /v1/agent/connect/ca/leaf/{service}", s.connectLeaf)
	mux.HandleFunc("POST /v1/agent/connect/authorize", s.authorize)
	mux.HandleFunc("PUT /v1/agent/join/{address}", s.agentJoin)
	mux.HandleFunc("PUT /v1/agent/leave", s.agentLeave)
	mux.HandleFunc("PUT /v1/agent/force-leave/{node}", s.agentForceLeave)
	// Checks and maintenance of this node's services.
	mux.HandleFunc("PUT /v1/agent/check/register", s.registerCheck)
	mux.HandleFunc("PUT /v1/agent/check/deregister/{id}", s.deregisterCheck)
	mux.HandleFunc("PUT /v1/agent/check/pass/{id}", s.ttlUpdate(gossip.StatusPassing))
	mux.HandleFunc("PUT /v1/agent/check/warn/{id}", s.ttlUpdate(gossip.StatusWarning))
	mux.HandleFunc("PUT /v1/agent/check/fail/{id}", s.ttlUpdate(gossip.StatusCritical))
	mux.HandleFunc("PUT /v1/agent/check/update/{id}", s.ttlUpdateBody)
	mux.HandleFunc("GET /v1/agent/checks", s.agentChecks)
	mux.HandleFunc("GET /v1/agent/health/service/name/{name}", s.agentHealthByName)
	mux.HandleFunc("GET /v1/agent/health/service/id/{id}", s.agentHealthByID)
	mux.HandleFunc("PUT /v1/agent/service/maintenance/{id}", s.maintenance)
	mux.HandleFunc("PUT /v1/agent/maintenance", s.maintenance)
	// Catalog and health: the converged view of every node's services.
	mux.HandleFunc("GET /v1/catalog/datacenters", s.catalogDatacenters)
	mux.HandleFunc("GET /v1/catalog/services", s.catalogServices)
	mux.HandleFunc("GET /v1/catalog/service/{name}", s.catalogService)
	mux.HandleFunc("GET /v1/catalog/nodes", s.catalogNodes)
	mux.HandleFunc("GET /v1/catalog/node/{node}", s.catalogNode)
	mux.HandleFunc("GET /v1/health/service/{name}", s.healthService)
	mux.HandleFunc("GET /v1/health/checks/{service}", s.healthChecks)
	mux.HandleFunc("GET /v1/health/node/{node}", s.healthNode)
	mux.HandleFunc("GET /v1/health/state/{state}", s.healthState)
	// Operator: gossip keys across the cluster.
	mux.HandleFunc("GET /v1/operator/keyring", s.keyring)
	mux.HandleFunc("POST /v1/operator/keyring", s.keyring)
	mux.HandleFunc("PUT /v1/operator/keyring", s.keyring)
	mux.HandleFunc("DELETE /v1/operator/keyring", s.keyring)
	// Status: a leaderless cluster answers for itself.
	mux.HandleFunc("GET /v1/status/leader", s.statusLeader)
	mux.HandleFunc("GET /v1/status/peers", s.statusPeers)
	// Network coordinates (Vivaldi), as Consul's, for RTT estimates.
	mux.HandleFunc("GET /v1/coordinate/nodes", s.coordinateNodes)
	mux.HandleFunc("GET /v1/coordinate/node/{node}", s.coordinateNode)
	// Status page at /ui/ and its data (ui.go).
	s.uiRoutes(mux)
	// Metrics: Prometheus's exposition at /metrics and Consul's path.
	m := newMetrics(s.a)
	mux.HandleFunc("GET /metrics", m.servePrometheus)
	mux.HandleFunc("GET /v1/agent/metrics", m.serveAgentMetrics)
	if s.a.cfg.EnableDebug {
		// Profiling, as Consul's enable_debug: CPU, heap and goroutine
		// profiles of the agent, proxy included.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	}
	// Cluster-wide config entries and the intentions views over them.
	mux.HandleFunc("PUT /v1/config", s.putConfig)
	mux.HandleFunc("GET /v1/config/{kind}", s.listConfig)
	mux.HandleFunc("GET /v1/config/{kind}/{name}", s.getConfig)
	mux.HandleFunc("DELETE /v1/config/{kind}/{name}", s.deleteConfig)
	mux.HandleFunc("GET /v1/connect/intentions", s.listIntentions)
	mux.HandleFunc("GET /v1/connect/intentions/exact", s.getIntentionExact)
	mux.HandleFunc("PUT /v1/connect/intentions/exact", s.putIntentionExact)
	mux.HandleFunc("DELETE /v1/connect/intentions/exact", s.deleteIntentionExact)
	mux.HandleFunc("GET /v1/connect/intentions/check", s.checkIntention)
	mux.HandleFunc("GET /v1/connect/intentions/match", s.matchIntentions)
	// What Shoal does not serve says so (api_compat.go).
	unservedRoutes(mux)
	return s.compat(mux)
}

// writeJSON answers v as JSON; ?pretty indents it as Consul does.
func writeJSON(w http.ResponseWriter, r *http.Request, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	if _, ok := r.URL.Query()["pretty"]; ok {
		enc.SetIndent("", "    ")
	}
	if err := enc.Encode(v); err != nil {
		// The status line is gone; nothing better to do than stop writing.
		return
	}
}

// writeError answers a one-line plain-text reason, as Consul does.
func writeError(w http.ResponseWriter, status int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	msg = strings.ReplaceAll(msg, "\n", "; ")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	fmt.Fprintln(w, msg)
}

// decodeBody decodes one JSON value of at most maxBody bytes into v. It
// answers the client itself and returns false when the body is unusable.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	err := dec.Decode(v)
	if err == nil {
		if _, extra := dec.Token(); extra != io.EOF {
			err = errors.New("unexpected data after the JSON value")
		}
	}
	if err == nil {
		return true
	}
	writeDecodeError(w, err)
	return false
}

// writeDecodeError answers why a request body could not be decoded.
func writeDecodeError(w http.ResponseWriter, err error) {
	var tooBig *http.MaxBytesError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, "request body exceeds %d bytes", tooBig.Limit)
	case errors.Is(err, io.EOF):
		writeError(w, http.StatusBadRequest, "request body is empty: expected a JSON object")
	case errors.As(err, &typeErr):
		writeError(w, http.StatusBadRequest, "request decode failed: field %q: expected %s, got JSON %s", typeErr.Field, typeErr.Type, typeErr.Value)
	default:
		writeError(w, http.StatusBadRequest, "request decode failed: %v", err)
	}
}

// setMeta sets Consul's query-meta headers, which clients require.
func setMeta(w http.ResponseWriter, index uint64) {
	h := w.Header()
	h.Set("X-Consul-Index", strconv.FormatUint(max(index, 1), 10))
	h.Set("X-Consul-KnownLeader", "true")
	h.Set("X-Consul-LastContact", "0")
}

// blocking answers a catalog or health read, as a blocking query when the
// client sent ?index=N: it waits until the catalog index passes N, the
// ?wait time (default 5m, at most 10m, plus up to 1/16 jitter) runs out or
// the client goes away.
func (s *api) blocking(w http.ResponseWriter, r *http.Request, read func() any) {
	cat := s.a.cluster.Catalog()
	state := func() (uint64, <-chan struct{}) {
		changed := cat.Changed()
		return cat.Index(), changed
	}
	s.blockingOn(w, r, state, func() (any, error) { return read(), nil })
}

// blockingOn answers a read as blocking answers catalog reads, over any
// index: state returns the index and a channel closed at its next change.
// An error from read is answered as 404 with its text.
func (s *api) blockingOn(w http.ResponseWriter, r *http.Request, state func() (uint64, <-chan struct{}), read func() (any, error)) {
	after, wait, block, ok := blockingParams(w, r)
	if !ok {
		return
	}
	if block {
		timer := time.NewTimer(wait)
		defer timer.Stop()
		for {
			index, changed := state()
			if index > after {
				break
			}
			select {
			case <-changed:
				continue
			case <-timer.C:
			case <-r.Context().Done():
				return
			}
			break
		}
	}
	index, _ := state()
	v, err := read()
	setMeta(w, index)
	if err != nil {
		writeError(w, http.StatusNotFound, "%v", err)
		return
	}
	writeJSON(w, r, v)
}

// blockingParams reads a blocking query's ?index=N and ?wait=D: block is
// false without an index. The wait defaults to 5m, is capped at 10m and
// gets up to 1/16 of jitter, as Consul's. A bad value is answered with 400
// and ok false.
func blockingParams(w http.ResponseWriter, r *http.Request) (after uint64, wait time.Duration, block, ok bool) {
	q := r.URL.Query()
	idx := q.Get("index")
	if idx == "" {
		return 0, 0, false, true
	}
	after, err := strconv.ParseUint(idx, 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid index %q: want a non-negative integer", idx)
		return 0, 0, false, false
	}
	wait = defaultWait
	if ws := q.Get("wait"); ws != "" {
		if wait, err = parseWait(ws); err != nil {
			writeError(w, http.StatusBadRequest, "invalid wait %q: %v", ws, err)
			return 0, 0, false, false
		}
	}
	wait = min(wait, maxWait)
	return after, wait + rand.N(wait/16+1), true, true
}

// parseWait reads Consul's wait parameter: a duration ("10s", "1m") or a
// number of seconds.
func parseWait(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(s); err == nil && n >= 0 {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, errors.New("want a duration such as 10s or 5m")
	}
	return d, nil
}

// boolParam reports whether a flag-like query parameter is set: present and
// not "0" or "false".
func boolParam(r *http.Request, name string) bool {
	v, ok := r.URL.Query()[name]
	if !ok {
		return false
	}
	return len(v) == 0 || (v[0] != "0" && v[0] != "false")
}
