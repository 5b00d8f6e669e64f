package node

import (
	"net/http"
	"slices"
	"sort"

	"github.com/shoal-mesh/shoal/gossip"
)

// UIState is what the status page shows, in one answer so that one
// blocking query keeps the whole page current: GET /v1/shoal/ui/state. It
// is Shoal's own endpoint, not Consul's, and may change between releases.
type UIState struct {
	// Node and Datacenter name the agent that answered.
	Node       string
	Datacenter string
	// Version is the agent's release.
	Version string
	// Members is every member the catalog knows, failed and left ones
	// included, ordered by name.
	Members []UIMember
	// Services is every service with its instances, ordered by name.
	Services []UIService
	// Config is the cluster-wide configuration: config entries and
	// intentions.
	Config UIConfig
}

// UIMember is one member of the cluster.
type UIMember struct {
	Name string
	// Address is the gossip address, host:port.
	Address string
	// Status is alive, leaving, left, failed or none.
	Status     string
	Datacenter string
	// HTTPAddr is the member's HTTP API, as it advertises it.
	HTTPAddr string
	// Instances counts the service instances the member owns.
	Instances int
}

// UIService is a service and its instances.
type UIService struct {
	Name string
	// Tags is the union of the instances' tags.
	Tags []string
	// Passing, Warning and Critical count the instances by health.
	Passing, Warning, Critical int
	Instances                  []UIInstance
}

// UIInstance is one instance of a service with its checks.
type UIInstance struct {
	ID   string
	Node string
	// Address is the service's address, or its node's when it has none.
	Address string
	Port    int
	Tags    []string
	// Status is the instance's health: the worst of its checks, the
	// node's serfHealth included.
	Status string
	// Checks are the instance's checks, its node's serfHealth first.
	Checks []UICheck
}

// UICheck is one health check with its last output.
type UICheck struct {
	CheckID string
	Name    string
	Type    string
	Status  string
	Output  string
	Notes   string
}

// uiState answers the status page's data; it is a blocking query like the
// catalog reads (?index=N&wait=D), over the catalog and the config entries
// at once: its index is the sum of their two local counters, so it grows
// when either changes.
func (s *api) uiState(w http.ResponseWriter, r *http.Request) {
	cat := s.a.cluster.Catalog()
	state := func() (uint64, <-chan struct{}) {
		catChanged := cat.Changed()
		catIndex := cat.Index()
		entriesIndex, entriesChanged := s.a.cluster.EntriesState()
		return catIndex + entriesIndex, either(r.Context().Done(), catChanged, entriesChanged)
	}
	s.blockingOn(w, r, state, func() (any, error) { return s.buildUIState(), nil })
}

// either returns a channel closed when a or b is; its goroutine ends with
// done (the request), so a wait that ends otherwise leaves nothing behind.
func either(done <-chan struct{}, a, b <-chan struct{}) <-chan struct{} {
	out := make(chan struct{})
	go func() {
		defer close(out)
		select {
		case <-a:
		case <-b:
		case <-done:
		}
	}()
	return out
}

func (s *api) buildUIState() UIState {
	cat := s.a.cluster.Catalog()
	st := UIState{
		Node:       s.a.cfg.NodeName,
		Datacenter: s.a.cfg.Datacenter,
		Version:    Version,
		Members:    []UIMember{},
		Services:   []UIService{},
		Config:     s.buildUIConfig(),
	}
	owned := make(map[string]int)
	byName := make(map[string]*UIService)
	for _, in := range cat.AllInstances() {
		owned[in.Node.Name]++
		svc := byName[in.Service.Name]
		if svc == nil {
			svc = &UIService{Name: in.Service.Name, Tags: []string{}}
			byName[in.Service.Name] = svc
		}
		ui := uiInstance(in)
		switch ui.Status {
		case gossip.StatusPassing:
			svc.Passing++
		case gossip.StatusWarning:
			svc.Warning++
		default:
			svc.Critical++
		}
		for _, t := range ui.Tags {
			if !slices.Contains(svc.Tags, t) {
				svc.Tags = append(svc.Tags, t)
			}
		}
		svc.Instances = append(svc.Instances, ui)
	}
	for _, m := range cat.Members() {
		st.Members = append(st.Members, UIMember{
			Name: m.Name, Address: m.GossipAddr(), Status: m.Status.String(),
			Datacenter: m.Datacenter(), HTTPAddr: m.Tags[gossip.TagHTTP], Instances: owned[m.Name],
		})
	}
	for _, svc := range byName {
		sort.Strings(svc.Tags)
		st.Services = append(st.Services, *svc)
	}
	sort.Slice(st.Services, func(i, j int) bool { return st.Services[i].Name < st.Services[j].Name })
	return st
}

// uiInstance flattens an instance for the page; its status is computed from
// the same checks the health endpoints report, so the two always agree.
func uiInstance(in gossip.Instance) UIInstance {
	addr := in.Service.Address
	if addr == "" {
		addr = in.Node.Addr.String()
	}
	ui := UIInstance{
		ID: in.Service.ID, Node: in.Node.Name, Address: addr, Port: in.Service.Port,
		Tags: orEmpty(in.Service.Tags), Status: gossip.StatusPassing,
	}
	for _, c := range instanceChecks(in) {
		ui.Checks = append(ui.Checks, UICheck{
			CheckID: c.CheckID, Name: c.Name, Type: c.Type, Status: c.Status, Output: c.Output, Notes: c.Notes,
		})
		ui.Status = worseStatus(ui.Status, c.Status)
	}
	return ui
}

// worseStatus returns the worse of two check statuses; anything unknown
// counts as critical, as Service.Status does.
func worseStatus(a, b string) string {
	rank := func(s string) int {
		switch s {
		case gossip.StatusPassing:
			return 0
		case gossip.StatusWarning:
			return 1
		}
		return 2
	}
	if rank(b) > rank(a) {
		if rank(b) == 2 {
			return gossip.StatusCritical
		}
		return b
	}
	return a
}
