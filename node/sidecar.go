package node

import (
	"errors"
	"fmt"
	"net"
	"strconv"
)

// Sidecar upstreams. A registration in Consul's Connect shape,
//
//	"Connect": {"SidecarService": {"Proxy": {"Upstreams": [
//	    {"DestinationName": "db", "LocalBindPort": 9191}]}}}
//
// asks the agent for a local TCP listener per upstream (127.0.0.1 unless
// LocalBindAddress says otherwise) that balances over the destination's
// instances. Traffic through it carries the registering service's own
// identity on the mesh hop, where the shared proxy carries the node's. The
// listeners live as long as the registration: they are opened before it
// is committed (so a taken port refuses the registration and changes
// nothing) and closed when the service goes.

// ServiceConnect is the part of Consul's Connect registration Shoal serves.
type ServiceConnect struct {
	SidecarService *SidecarService `json:"SidecarService,omitempty"`
}

// SidecarService describes the service's sidecar: only its upstreams.
type SidecarService struct {
	Proxy *SidecarProxy `json:"Proxy,omitempty"`
}

// SidecarProxy holds the sidecar's upstreams.
type SidecarProxy struct {
	Upstreams []Upstream `json:"Upstreams,omitempty"`
}

// Upstream is one local listener for a destination service.
type Upstream struct {
	DestinationName  string `json:"DestinationName"`
	LocalBindAddress string `json:"LocalBindAddress,omitempty"`
	LocalBindPort    int    `json:"LocalBindPort"`
}

// maxUpstreams bounds the upstreams of one registration.
const maxUpstreams = 64

// upstreams returns a definition's sidecar upstreams.
func (def *ServiceDefinition) upstreams() []Upstream {
	if def.Connect == nil || def.Connect.SidecarService == nil || def.Connect.SidecarService.Proxy == nil {
		return nil
	}
	return def.Connect.SidecarService.Proxy.Upstreams
}

// normalizeUpstreams validates a definition's upstreams and fills in the
// default bind address.
func normalizeUpstreams(def *ServiceDefinition) error {
	ups := def.upstreams()
	if len(ups) > maxUpstreams {
		return fmt.Errorf("%d upstreams, over the limit of %d", len(ups), maxUpstreams)
	}
	seen := map[string]bool{}
	for i := range ups {
		u := &ups[i]
		if err := validateName(u.DestinationName); err != nil {
			return fmt.Errorf("upstream %d: destination: %w", i+1, err)
		}
		if u.LocalBindAddress == "" {
			u.LocalBindAddress = "127.0.0.1"
		}
		if net.ParseIP(u.LocalBindAddress) == nil {
			return fmt.Errorf("upstream %q: LocalBindAddress %q is not an IP address", u.DestinationName, u.LocalBindAddress)
		}
		if u.LocalBindPort < 1 || u.LocalBindPort > 65535 {
			return fmt.Errorf("upstream %q: LocalBindPort %d: want 1-65535", u.DestinationName, u.LocalBindPort)
		}
		addr := u.addr()
		if seen[addr] {
			return fmt.Errorf("upstream %q: %s is used twice", u.DestinationName, addr)
		}
		seen[addr] = true
	}
	return nil
}

func (u *Upstream) addr() string {
	return net.JoinHostPort(u.LocalBindAddress, strconv.Itoa(u.LocalBindPort))
}

// openUpstreams opens the listeners a registration asks for, before it is
// committed. It returns the addresses it opened now (not those the service
// already had), for closeUpstreams to undo if the commit fails.
func (a *Agent) openUpstreams(def *ServiceDefinition) ([]string, error) {
	ups := def.upstreams()
	if len(ups) == 0 {
		return nil, nil
	}
	if a.proxy == nil {
		return nil, errors.New("sidecar upstreams need the agent's proxy, which is disabled")
	}
	a.sidecarMu.Lock()
	defer a.sidecarMu.Unlock()
	var opened []string
	for _, u := range ups {
		addr := u.addr()
		if owner, ok := a.sidecars[addr]; ok {
			if owner == (sidecarUpstream{service: def.ID, name: def.Name, dest: u.DestinationName}) {
				continue
			}
			if owner.service == def.ID {
				// The service moves this address to another destination:
				// the old listener gives way now.
				a.closeLocked([]string{addr})
			} else {
				a.closeLocked(opened)
				return nil, fmt.Errorf("upstream %q: %s is already the upstream %q of service %q", u.DestinationName, addr, owner.dest, owner.service)
			}
		}
		if _, err := a.proxy.AddUpstream(u.DestinationName, addr, def.Name); err != nil {
			a.closeLocked(opened)
			return nil, fmt.Errorf("upstream %q: %w", u.DestinationName, err)
		}
		a.sidecars[addr] = sidecarUpstream{service: def.ID, name: def.Name, dest: u.DestinationName}
		opened = append(opened, addr)
	}
	return opened, nil
}

// closeUpstreams closes listeners openUpstreams opened.
func (a *Agent) closeUpstreams(addrs []string) {
	a.sidecarMu.Lock()
	defer a.sidecarMu.Unlock()
	a.closeLocked(addrs)
}

func (a *Agent) closeLocked(addrs []string) {
	for _, addr := range addrs {
		a.proxy.RemoveUpstream(addr)
		delete(a.sidecars, addr)
	}
}

// syncUpstreams makes the open listeners match a committed state: it
// closes those of services gone or changed, and opens those of services
// loaded from the data dir at start.
func (a *Agent) syncUpstreams(st *registryState) {
	if a.proxy == nil {
		return
	}
	a.sidecarMu.Lock()
	defer a.sidecarMu.Unlock()
	want := map[string]sidecarUpstream{}
	for _, ls := range st.Services {
		for _, u := range ls.Def.upstreams() {
			want[u.addr()] = sidecarUpstream{service: ls.Def.ID, name: ls.Def.Name, dest: u.DestinationName}
		}
	}
	for addr, have := range a.sidecars {
		if want[addr] != have {
			a.proxy.RemoveUpstream(addr)
			delete(a.sidecars, addr)
		}
	}
	for addr, w := range want {
		if _, ok := a.sidecars[addr]; ok {
			continue
		}
		if _, err := a.proxy.AddUpstream(w.dest, addr, w.name); err != nil {
			a.log.Error("cannot open a sidecar upstream", "service", w.service, "upstream", w.dest, "err", err)
			continue
		}
		a.sidecars[addr] = w
	}
}

// sidecarUpstream is an open listener: whose it is and where it goes.
type sidecarUpstream struct {
	service, name, dest string
}
