package node

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shoal-mesh/shoal/gossip"
	"github.com/shoal-mesh/shoal/node/pki"
)

// Intentions: who may call whom. They live in service-intentions config
// entries (one per destination, Consul's shape), so they replicate like any
// entry; Consul's intention endpoints are views over them. The agent that
// receives a mesh connection decides from the caller's verified identity
// (node/mesh.go): a service, or node:NAME for a node's shared proxy.

// Intention actions.
const (
	actionAllow = "allow"
	actionDeny  = "deny"
)

// serviceIntentions is a service-intentions entry: the sources allowed or
// denied to call the destination Name ("*": every destination).
type serviceIntentions struct {
	entryHeader
	Sources []*sourceIntention
}

// sourceIntention is one source of a service-intentions entry.
type sourceIntention struct {
	// Name is a service, node:NAME for a node's shared proxy, or "*".
	Name   string
	Action string `json:",omitempty"`
	// Precedence is computed (see precedence); what a client sends is
	// ignored, as Consul does.
	Precedence  int
	Type        string `json:",omitempty"`
	Description string `json:",omitempty"`
}

const (
	maxIntentionSources = 256
	maxDescriptionLen   = 512
)

func (e *serviceIntentions) normalize() error {
	if err := e.check(true); err != nil {
		return err
	}
	if len(e.Sources) == 0 {
		return errors.New("Sources: at least one source is needed (delete the entry to remove every intention)")
	}
	if len(e.Sources) > maxIntentionSources {
		return fmt.Errorf("Sources: %d sources, over the limit of %d", len(e.Sources), maxIntentionSources)
	}
	seen := map[string]bool{}
	for i, src := range e.Sources {
		if src == nil {
			return fmt.Errorf("Sources[%d]: empty", i)
		}
		if err := validateSource(src.Name); err != nil {
			return fmt.Errorf("Sources[%d]: %w", i, err)
		}
		if seen[src.Name] {
			return fmt.Errorf("Sources[%d]: source %q appears twice", i, src.Name)
		}
		seen[src.Name] = true
		src.Action = strings.ToLower(src.Action)
		if src.Action != actionAllow && src.Action != actionDeny {
			return fmt.Errorf("Sources[%d] (%s): Action %q: want allow or deny", i, src.Name, src.Action)
		}
		if src.Type != "" && src.Type != "consul" {
			return fmt.Errorf("Sources[%d] (%s): Type %q: only \"consul\" is supported", i, src.Name, src.Type)
		}
		src.Type = "consul"
		if err := validateText(fmt.Sprintf("Sources[%d].Description", i), src.Description, maxDescriptionLen); err != nil {
			return err
		}
		src.Precedence = precedence(src.Name, e.Name)
	}
	return nil
}

// validateSource checks an intention source: "*", a service name, or
// node:NAME.
func validateSource(name string) error {
	if name == "*" {
		return nil
	}
	if node, ok := strings.CutPrefix(name, "node:"); ok {
		if err := validateName(node); err != nil {
			return fmt.Errorf("source %q: node name: %w", name, err)
		}
		return nil
	}
	if err := validateName(name); err != nil {
		return fmt.Errorf("source: %w", err)
	}
	return nil
}

// precedence ranks an intention as Consul does: exact names beat wildcards,
// the destination's more than the source's.
func precedence(source, destination string) int {
	switch {
	case destination != "*" && source != "*":
		return 9
	case destination != "*":
		return 8
	case source != "*":
		return 6
	}
	return 5
}

// intention is one source of one entry, as the intention endpoints show it.
type intention struct {
	Description     string `json:",omitempty"`
	SourceNS        string
	SourceName      string
	DestinationNS   string
	DestinationName string
	SourceType      string
	Action          string
	Precedence      int
	CreateIndex     uint64
	ModifyIndex     uint64
}

func (i *intention) String() string {
	return fmt.Sprintf("%s => %s (%s)", i.SourceName, i.DestinationName, i.Action)
}

// intentionTable is every intention, by destination, compiled from the
// entries at one index of the store.
type intentionTable struct {
	index uint64
	all   []*intention // by precedence, then names
	byDst map[string][]*intention
}

// intentions decides connections against the replicated intentions. The
// table is rebuilt when the entries change.
type intentions struct {
	cluster *gossip.Cluster
	// defaultAllow is the answer when no intention matches.
	defaultAllow bool

	mu    sync.Mutex
	table *intentionTable
}

// current returns the table of the store's current entries.
func (in *intentions) current() *intentionTable {
	index, _ := in.cluster.EntriesState()
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.table != nil && in.table.index == index {
		return in.table
	}
	t := &intentionTable{index: index, byDst: map[string][]*intention{}}
	for _, e := range in.cluster.Entries(kindServiceIntentions) {
		var si serviceIntentions
		if err := json.Unmarshal(e.Body, &si); err != nil {
			continue // validated when written; unreadable only if corrupt
		}
		for _, src := range si.Sources {
			i := &intention{Description: src.Description, SourceNS: "default", SourceName: src.Name,
				DestinationNS: "default", DestinationName: si.Name, SourceType: "consul",
				Action: src.Action, Precedence: src.Precedence, CreateIndex: e.Created, ModifyIndex: e.Stamp}
			t.all = append(t.all, i)
			t.byDst[si.Name] = append(t.byDst[si.Name], i)
		}
	}
	slices.SortFunc(t.all, byPrecedence)
	for _, list := range t.byDst {
		slices.SortFunc(list, byPrecedence)
	}
	in.table = t
	return t
}

func byPrecedence(a, b *intention) int {
	return cmp.Or(cmp.Compare(b.Precedence, a.Precedence), cmp.Compare(a.DestinationName, b.DestinationName),
		cmp.Compare(a.SourceName, b.SourceName))
}

// decision is the answer for one (source, destination).
type decision struct {
	allowed bool
	// by is the intention that decided; nil: the default action.
	by *intention
}

// reason says, in one line, why source may or may not call destination.
func (d decision) reason(source, destination string, defaultAllow bool) string {
	if d.by != nil {
		return "intention " + d.by.String()
	}
	return fmt.Sprintf("no intention matches %s => %s; the default is %s", source, destination,
		map[bool]string{true: actionAllow, false: actionDeny}[defaultAllow])
}

// decide answers whether source may call destination: the matching
// intention of highest precedence, or the default.
func (in *intentions) decide(source, destination string) decision {
	t := in.current()
	for _, dst := range []string{destination, "*"} {
		for _, i := range t.byDst[dst] {
			if i.SourceName == source || i.SourceName == "*" {
				// Lists are by precedence, and an exact destination
				// outranks every wildcard one: the first match wins.
				return decision{allowed: i.Action == actionAllow, by: i}
			}
		}
	}
	return decision{allowed: in.defaultAllow}
}

// exact returns the intention source → destination, if there is one.
func (in *intentions) exact(source, destination string) (*intention, bool) {
	for _, i := range in.current().byDst[destination] {
		if i.SourceName == source {
			return i, true
		}
	}
	return nil, false
}

// intentionNames reads and checks ?source= and ?destination=.
func intentionNames(w http.ResponseWriter, r *http.Request) (source, destination string, ok bool) {
	q := r.URL.Query()
	source, destination = q.Get("source"), q.Get("destination")
	if source == "" || destination == "" {
		writeError(w, http.StatusBadRequest, "required query parameters: source and destination")
		return "", "", false
	}
	if err := validateSource(source); err != nil {
		writeError(w, http.StatusBadRequest, "invalid source: %v", err)
		return "", "", false
	}
	if destination != "*" {
		if err := validateName(destination); err != nil {
			writeError(w, http.StatusBadRequest, "invalid destination: %v", err)
			return "", "", false
		}
	}
	return source, destination, true
}

// listIntentions answers GET /v1/connect/intentions.
func (s *api) listIntentions(w http.ResponseWriter, r *http.Request) {
	s.blockingOn(w, r, s.a.cluster.EntriesState, func() (any, error) {
		out := s.a.intentions.current().all
		if out == nil {
			out = []*intention{}
		}
		return out, nil
	})
}

// getIntentionExact answers GET /v1/connect/intentions/exact.
func (s *api) getIntentionExact(w http.ResponseWriter, r *http.Request) {
	source, destination, ok := intentionNames(w, r)
	if !ok {
		return
	}
	s.blockingOn(w, r, s.a.cluster.EntriesState, func() (any, error) {
		if i, ok := s.a.intentions.exact(source, destination); ok {
			return i, nil
		}
		return nil, fmt.Errorf("Intention not found: %s => %s", source, destination)
	})
}

// putIntentionExact answers PUT /v1/connect/intentions/exact: it sets the
// source in the destination's service-intentions entry (creating it), with
// a compare-and-set on that entry so that concurrent edits of other
// sources on this agent are not lost.
func (s *api) putIntentionExact(w http.ResponseWriter, r *http.Request) {
	source, destination, ok := intentionNames(w, r)
	if !ok {
		return
	}
	var in struct {
		Description     string
		SourceName      string
		DestinationName string
		SourceNS        string
		DestinationNS   string
		SourceType      string
		Action          string
		Precedence      int
		CreateIndex     uint64
		ModifyIndex     uint64
		// Set by the store; what a client sends is ignored, as Consul does.
		CreatedAt, UpdatedAt time.Time
		Meta                 map[string]string
	}
	if !decodeStrict(w, r, &in) {
		return
	}
	if (in.SourceName != "" && in.SourceName != source) || (in.DestinationName != "" && in.DestinationName != destination) {
		writeError(w, http.StatusBadRequest, "the body names %s => %s, the query %s => %s", in.SourceName, in.DestinationName, source, destination)
		return
	}
	src := &sourceIntention{Name: source, Action: in.Action, Type: in.SourceType, Description: in.Description}
	s.editIntentions(w, r, destination, func(e *serviceIntentions) {
		i := slices.IndexFunc(e.Sources, func(x *sourceIntention) bool { return x.Name == source })
		if i < 0 {
			e.Sources = append(e.Sources, src)
		} else {
			e.Sources[i] = src
		}
	})
}

// deleteIntentionExact answers DELETE /v1/connect/intentions/exact.
func (s *api) deleteIntentionExact(w http.ResponseWriter, r *http.Request) {
	source, destination, ok := intentionNames(w, r)
	if !ok {
		return
	}
	s.editIntentions(w, r, destination, func(e *serviceIntentions) {
		e.Sources = slices.DeleteFunc(e.Sources, func(x *sourceIntention) bool { return x.Name == source })
	})
}

// editIntentions applies edit to the destination's entry and writes it back
// (deletes it when no source is left), retrying when another write got in
// between.
func (s *api) editIntentions(w http.ResponseWriter, r *http.Request, destination string, edit func(*serviceIntentions)) {
	for range 8 {
		e := &serviceIntentions{entryHeader: entryHeader{Kind: kindServiceIntentions, Name: destination}}
		var cas uint64 // 0: create only if absent
		if cur, ok := s.a.cluster.Entry(kindServiceIntentions, destination); ok {
			if err := json.Unmarshal(cur.Body, e); err != nil {
				writeError(w, http.StatusInternalServerError, "stored intentions of %q: %v", destination, err)
				return
			}
			cas = cur.Stamp
		} else if r.Method == http.MethodDelete {
			writeJSON(w, r, true)
			return
		}
		edit(e)
		store := func() (bool, error) { return s.a.config.write(e, &cas) }
		if len(e.Sources) == 0 {
			store = func() (bool, error) { return s.a.config.delete(kindServiceIntentions, destination, &cas) }
		} else if err := e.normalize(); err != nil {
			writeError(w, http.StatusBadRequest, "Invalid intention: %v", err)
			return
		}
		ok, err := store()
		if err != nil {
			writeStoreError(w, kindServiceIntentions, destination, err)
			return
		}
		if ok {
			writeJSON(w, r, true)
			return
		}
	}
	writeError(w, http.StatusConflict, "the intentions of %q kept changing while this write was tried; try again", destination)
}

// checkAnswer is the answer of /v1/connect/intentions/check: Consul's
// Allowed, and whether this agent enforces it.
type checkAnswer struct {
	Allowed bool
	// Enforced is false on an agent without the node PKI: it stores and
	// answers intentions, but no caller identity is verified, so nothing
	// is refused.
	Enforced bool
	Reason   string
}

// checkIntention answers GET /v1/connect/intentions/check.
func (s *api) checkIntention(w http.ResponseWriter, r *http.Request) {
	source, destination, ok := intentionNames(w, r)
	if !ok {
		return
	}
	if st := r.URL.Query().Get("source-type"); st != "" && st != "consul" {
		writeError(w, http.StatusBadRequest, "source-type %q: only \"consul\" is supported", st)
		return
	}
	d := s.a.intentions.decide(source, destination)
	ans := checkAnswer{Allowed: d.allowed, Enforced: s.a.ids != nil, Reason: d.reason(source, destination, s.a.intentions.defaultAllow)}
	if !ans.Enforced {
		ans.Reason += "; not enforced: this agent runs without the node PKI (--ca-file), so it cannot verify callers"
	}
	index, _ := s.a.cluster.EntriesState()
	setMeta(w, index)
	writeJSON(w, r, ans)
}

// matchIntentions answers GET /v1/connect/intentions/match?by=&name=.
func (s *api) matchIntentions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	by, names := q.Get("by"), q["name"]
	if by != "source" && by != "destination" {
		writeError(w, http.StatusBadRequest, "by %q: want source or destination", by)
		return
	}
	if len(names) == 0 {
		writeError(w, http.StatusBadRequest, "required query parameter: name")
		return
	}
	for _, n := range names {
		var err error
		if by == "source" {
			err = validateSource(n)
		} else if n != "*" {
			err = validateName(n)
		}
		if err != nil {
			writeError(w, http.StatusBadRequest, "invalid name: %v", err)
			return
		}
	}
	s.blockingOn(w, r, s.a.cluster.EntriesState, func() (any, error) {
		t := s.a.intentions.current()
		out := make(map[string][]*intention, len(names))
		for _, n := range names {
			list := []*intention{}
			for _, i := range t.all {
				field := i.DestinationName
				if by == "source" {
					field = i.SourceName
				}
				if field == n || field == "*" {
					list = append(list, i)
				}
			}
			out[n] = list
		}
		return out, nil
	})
}

// authorize answers POST /v1/agent/connect/authorize: may the client
// certificate's identity call Target?
func (s *api) authorize(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Target           string
		ClientCertURI    string
		ClientCertSerial string
	}
	if !decodeStrict(w, r, &req) {
		return
	}
	if err := validateName(req.Target); err != nil {
		writeError(w, http.StatusBadRequest, "Target: %v", err)
		return
	}
	source, err := sourceOfURI(req.ClientCertURI, s.a)
	if err != nil {
		writeError(w, http.StatusBadRequest, "ClientCertURI: %v", err)
		return
	}
	d := s.a.intentions.decide(source, req.Target)
	writeJSON(w, r, map[string]any{"Authorized": d.allowed, "Reason": d.reason(source, req.Target, s.a.intentions.defaultAllow)})
}

// sourceOfURI reads the intention source a SPIFFE ID names: its service,
// or node:NAME.
func sourceOfURI(uri string, a *Agent) (string, error) {
	if a.ids == nil {
		return "", errNoPKI
	}
	u, err := url.Parse(uri)
	if err != nil {
		return "", err
	}
	id, err := pki.ParseID(u, a.ids.Bundle().TrustDomain)
	if err != nil {
		return "", err
	}
	return callerName(id), nil
}
