package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/shoal-mesh/shoal/gossip"
	"github.com/shoal-mesh/shoal/lb"
)

// Cluster-wide config entries in Consul's shapes (/v1/config). The agent
// validates and normalizes an entry, then hands its JSON to gossip, which
// replicates it to every agent (gossip/entries.go: last writer wins by a
// hybrid logical clock, the writer's name breaking ties). ModifyIndex is the
// write's stamp, the same on every agent; CreateIndex the stamp of the
// write that created it.

// Config entry kinds.
const (
	kindServiceDefaults   = "service-defaults"
	kindServiceIntentions = "service-intentions"
)

// configKinds are the kinds Shoal stores, each with a constructor of the
// type its entries decode into.
var configKinds = map[string]func() configEntry{
	kindServiceDefaults:   func() configEntry { return new(serviceDefaults) },
	kindServiceIntentions: func() configEntry { return new(serviceIntentions) },
	kindServiceResolver:   func() configEntry { return new(serviceResolver) },
	kindServiceSplitter:   func() configEntry { return new(serviceSplitter) },
	kindServiceRouter:     func() configEntry { return new(serviceRouter) },
}

// errUnsupportedKind is the reason a kind Shoal does not store is refused.
func errUnsupportedKind(kind string) error {
	return fmt.Errorf("Kind %q is not supported (supported: %s)", kind, strings.Join(sortedKeys(configKinds), ", "))
}

// configEntry is what every kind's type implements.
type configEntry interface {
	// normalize validates the entry and brings it to its stored form.
	normalize() error
	// setIndexes sets CreateIndex and ModifyIndex for an answer.
	setIndexes(create, modify uint64)
	// header returns the fields every kind shares.
	header() *entryHeader
}

// entryHeader holds the fields every kind shares.
type entryHeader struct {
	Kind      string
	Name      string
	Partition string            `json:",omitempty"`
	Namespace string            `json:",omitempty"`
	Meta      map[string]string `json:",omitempty"`

	CreateIndex uint64
	ModifyIndex uint64
}

func (h *entryHeader) header() *entryHeader { return h }

func (h *entryHeader) setIndexes(create, modify uint64) {
	h.CreateIndex, h.ModifyIndex = create, modify
}

// check validates the shared fields; wildcard allows the name "*".
func (h *entryHeader) check(wildcard bool) error {
	if h.Name == "" {
		return errors.New("missing Name")
	}
	if !(wildcard && h.Name == "*") {
		if err := validateName(h.Name); err != nil {
			return fmt.Errorf("Name: %w", err)
		}
	}
	for what, v := range map[string]string{"Partition": h.Partition, "Namespace": h.Namespace} {
		if v != "" && v != "default" {
			return fmt.Errorf("%s %q: Shoal has only the default one", what, v)
		}
	}
	h.Partition, h.Namespace = "", ""
	h.CreateIndex, h.ModifyIndex = 0, 0 // the store's, never the client's
	if len(h.Meta) == 0 {
		h.Meta = nil
	}
	return validateMeta(h.Meta)
}

// serviceDefaults is a service-defaults entry: settings of one service
// that hold on every agent.
type serviceDefaults struct {
	entryHeader
	// Protocol is the service's protocol: tcp, http, http2 or grpc.
	Protocol string `json:",omitempty"`
	// LoadBalancer sets the service's balancing policy on every agent,
	// as Meta.lb_policy on its instances did (a Shoal field: Consul puts
	// it in service-resolver).
	LoadBalancer *loadBalancer `json:",omitempty"`
}

type loadBalancer struct {
	Policy string `json:",omitempty"`
}

var protocols = map[string]bool{"tcp": true, "http": true, "http2": true, "grpc": true}

func (e *serviceDefaults) normalize() error {
	if err := e.check(false); err != nil {
		return err
	}
	e.Protocol = strings.ToLower(e.Protocol)
	if e.Protocol != "" && !protocols[e.Protocol] {
		return fmt.Errorf("Protocol %q: want tcp, http, http2 or grpc", e.Protocol)
	}
	if e.LoadBalancer != nil {
		if e.LoadBalancer.Policy == "" {
			e.LoadBalancer = nil
		} else if !lb.ValidPolicy(e.LoadBalancer.Policy) {
			return fmt.Errorf("LoadBalancer.Policy %q: not a balancing policy", e.LoadBalancer.Policy)
		}
	}
	return nil
}

// decodeConfigEntry reads an entry of a known kind from JSON, refusing
// fields Shoal does not support, and normalizes it.
func decodeConfigEntry(raw []byte) (configEntry, error) {
	var head struct{ Kind string }
	if err := json.Unmarshal(raw, &head); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	kind := strings.ToLower(head.Kind)
	newEntry, ok := configKinds[kind]
	if !ok {
		if kind == "" {
			return nil, errors.New("missing Kind")
		}
		return nil, errUnsupportedKind(head.Kind)
	}
	e := newEntry()
	if err := unknownFields(raw, reflect.TypeOf(e), ""); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(e); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	e.header().Kind = kind
	if err := e.normalize(); err != nil {
		return nil, err
	}
	return e, nil
}

// entryAnswer turns a stored entry into its answer, indexes set.
func entryAnswer(e gossip.Entry) (configEntry, error) {
	newEntry, ok := configKinds[e.Kind]
	if !ok {
		return nil, fmt.Errorf("stored entry of unknown kind %q", e.Kind)
	}
	v := newEntry()
	if err := json.Unmarshal(e.Body, v); err != nil {
		return nil, fmt.Errorf("stored entry %s/%s: %w", e.Kind, e.Name, err)
	}
	v.setIndexes(e.Created, e.Stamp)
	return v, nil
}

// casParam reads ?cas=N: nil without one.
func casParam(w http.ResponseWriter, r *http.Request) (cas *uint64, ok bool) {
	s, present := r.URL.Query()["cas"]
	if !present {
		return nil, true
	}
	n, err := strconv.ParseUint(s[0], 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid cas %q: want the entry's ModifyIndex (0: only if it does not exist)", s[0])
		return nil, false
	}
	return &n, true
}

// kindParam reads the {kind} path segment of a config route.
func kindParam(w http.ResponseWriter, r *http.Request) (string, bool) {
	kind := strings.ToLower(r.PathValue("kind"))
	if _, ok := configKinds[kind]; !ok {
		writeError(w, http.StatusBadRequest, "%v", errUnsupportedKind(r.PathValue("kind")))
		return "", false
	}
	return kind, true
}

// putConfig answers PUT /v1/config: true when written, false when ?cas did
// not match.
func (s *api) putConfig(w http.ResponseWriter, r *http.Request) {
	cas, ok := casParam(w, r)
	if !ok {
		return
	}
	var raw json.RawMessage
	if !decodeBody(w, r, &raw) {
		return
	}
	e, err := decodeConfigEntry(raw)
	if err != nil {
		writeError(w, http.StatusBadRequest, "Invalid config entry: %v", err)
		return
	}
	if err := s.a.traffic.check(func(set *entrySet) { set.put(e) }); err != nil {
		writeError(w, http.StatusBadRequest, "Invalid config entry: %v", err)
		return
	}
	s.writeEntry(w, r, e, cas)
}

// writeEntry stores a normalized entry and answers true or false.
func (s *api) writeEntry(w http.ResponseWriter, r *http.Request, e configEntry, cas *uint64) {
	ok, err := s.a.config.write(e, cas)
	if err != nil {
		writeStoreError(w, e.header().Kind, e.header().Name, err)
		return
	}
	writeJSON(w, r, ok)
}

// writeStoreError answers a write the store did not take.
func writeStoreError(w http.ResponseWriter, kind, name string, err error) {
	var tooLarge *errEntryTooLarge
	if errors.As(err, &tooLarge) {
		writeError(w, http.StatusRequestEntityTooLarge, "Invalid config entry: %v", err)
		return
	}
	if errors.Is(err, gossip.ErrEntryLimit) {
		// The store's state, not the request, refuses it: deleting
		// entries (once their tombstones are reaped) makes room.
		writeError(w, http.StatusConflict, "config entry %s/%s not stored: %d config entries (tombstones included) are the most an agent holds",
			kind, name, gossip.MaxEntries)
		return
	}
	writeError(w, http.StatusInternalServerError, "write config entry %s/%s: %v", kind, name, err)
}

// getConfig answers GET /v1/config/{kind}/{name}, blocking with ?index.
func (s *api) getConfig(w http.ResponseWriter, r *http.Request) {
	kind, ok := kindParam(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	s.blockingOn(w, r, s.a.cluster.EntriesState, func() (any, error) {
		e, ok := s.a.cluster.Entry(kind, name)
		if !ok {
			return nil, fmt.Errorf("Config entry not found for %q / %q", kind, name)
		}
		return entryAnswer(e)
	})
}

// listConfig answers GET /v1/config/{kind}, blocking with ?index.
func (s *api) listConfig(w http.ResponseWriter, r *http.Request) {
	kind, ok := kindParam(w, r)
	if !ok {
		return
	}
	s.blockingOn(w, r, s.a.cluster.EntriesState, func() (any, error) {
		out := []configEntry{}
		for _, e := range s.a.cluster.Entries(kind) {
			if v, err := entryAnswer(e); err == nil {
				out = append(out, v)
			}
		}
		return out, nil
	})
}

// deleteConfig answers DELETE /v1/config/{kind}/{name}: true when deleted
// (or absent), false when ?cas did not match.
func (s *api) deleteConfig(w http.ResponseWriter, r *http.Request) {
	kind, ok := kindParam(w, r)
	if !ok {
		return
	}
	cas, ok := casParam(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	if err := validateName(name); err != nil && name != "*" {
		writeError(w, http.StatusBadRequest, "Invalid config entry name: %v", err)
		return
	}
	if err := s.a.traffic.check(func(set *entrySet) { set.remove(kind, name) }); err != nil {
		writeError(w, http.StatusBadRequest, "Cannot delete %s %s: %v", kind, name, err)
		return
	}
	deleted, err := s.a.config.delete(kind, name, cas)
	if err != nil {
		writeStoreError(w, kind, name, err)
		return
	}
	writeJSON(w, r, deleted)
}
