package node

import (
	"fmt"
	"strings"
)

// UIConfig is the cluster-wide configuration as the status page shows it:
// every config entry this agent holds and the intentions they make.
type UIConfig struct {
	// Entries is every live config entry, ordered by kind and name.
	Entries []UIConfigEntry
	// Intentions is every intention, in the order they are matched:
	// highest precedence first.
	Intentions []UIIntention
	// Enforced is false when this agent runs without the node PKI: it
	// stores and answers intentions but cannot verify callers.
	Enforced bool
	// DefaultIntention is what applies when no intention matches: allow
	// or deny.
	DefaultIntention string
	// Chains is the traffic policy the proxy applies, compiled from the
	// routers, splitters and resolvers: one per service that has one.
	Chains []chainView
}

// UIConfigEntry is one config entry.
type UIConfigEntry struct {
	Kind string
	Name string
	// CreateIndex and ModifyIndex are Consul's: the stamps of the write
	// that created the entry and of the last one (microseconds since the
	// epoch, a hybrid logical clock), the same on every agent.
	CreateIndex uint64
	ModifyIndex uint64
	// Writer is the node whose write won last.
	Writer string
	// Summary says in a few words what the entry sets.
	Summary string
}

// UIIntention is one intention: may Source call Destination.
type UIIntention struct {
	Source      string
	Destination string
	// Action is allow or deny.
	Action string
	// Precedence ranks it (9: exact source and destination … 5: both
	// wildcards); the first match in precedence order decides.
	Precedence  int
	Description string
	ModifyIndex uint64
}

// buildUIConfig reads the entries and the intention table for the page.
func (s *api) buildUIConfig() UIConfig {
	out := UIConfig{
		Entries:          []UIConfigEntry{},
		Intentions:       []UIIntention{},
		Enforced:         s.a.ids != nil,
		DefaultIntention: actionDeny,
		Chains:           []chainView{},
	}
	if cs := s.a.traffic.chains(); cs != nil {
		out.Chains = cs
	}
	if s.a.intentions.defaultAllow {
		out.DefaultIntention = actionAllow
	}
	for _, e := range s.a.cluster.Entries("") {
		ui := UIConfigEntry{Kind: e.Kind, Name: e.Name, CreateIndex: e.Created, ModifyIndex: e.Stamp, Writer: e.Writer}
		if v, err := entryAnswer(e); err == nil {
			ui.Summary = entrySummary(v)
		}
		out.Entries = append(out.Entries, ui)
	}
	for _, i := range s.a.intentions.current().all {
		out.Intentions = append(out.Intentions, UIIntention{
			Source: i.SourceName, Destination: i.DestinationName, Action: i.Action,
			Precedence: i.Precedence, Description: i.Description, ModifyIndex: i.ModifyIndex,
		})
	}
	return out
}

// entrySummary says what an entry sets, for a row of the page; a kind it
// does not know is summed up by nothing.
func entrySummary(v configEntry) string {
	var parts []string
	switch e := v.(type) {
	case *serviceDefaults:
		if e.Protocol != "" {
			parts = append(parts, "protocol "+e.Protocol)
		}
		if e.LoadBalancer != nil && e.LoadBalancer.Policy != "" {
			parts = append(parts, "balancing "+e.LoadBalancer.Policy)
		}
	case *serviceIntentions:
		allow, deny := 0, 0
		for _, src := range e.Sources {
			if src.Action == actionAllow {
				allow++
			} else {
				deny++
			}
		}
		parts = append(parts, fmt.Sprintf("%d allow, %d deny", allow, deny))
	case *serviceResolver:
		if len(e.Subsets) > 0 {
			parts = append(parts, "subsets "+strings.Join(sortedKeys(e.Subsets), " "))
		}
		if e.DefaultSubset != "" {
			parts = append(parts, "default "+e.DefaultSubset)
		}
		if e.Redirect != nil {
			parts = append(parts, "redirect")
		}
		if len(e.Failover) > 0 {
			parts = append(parts, "failover")
		}
		if e.LoadBalancer != nil && e.LoadBalancer.Policy != "" {
			parts = append(parts, "balancing "+e.LoadBalancer.Policy)
		}
	case *serviceSplitter:
		var legs []string
		for _, sp := range e.Splits {
			t := sp.Service
			if t == "" {
				t = e.Name
			}
			if sp.ServiceSubset != "" {
				t += "/" + sp.ServiceSubset
			}
			legs = append(legs, fmt.Sprintf("%s %g%%", t, sp.Weight))
		}
		parts = append(parts, strings.Join(legs, ", "))
	case *serviceRouter:
		parts = append(parts, fmt.Sprintf("%d routes", len(e.Routes)))
	}
	if len(v.header().Meta) > 0 {
		parts = append(parts, fmt.Sprintf("%d meta", len(v.header().Meta)))
	}
	return strings.Join(parts, ", ")
}
