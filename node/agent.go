package node

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-mesh/shoal/gossip"
	"github.com/shoal-mesh/shoal/lb"
	"github.com/shoal-mesh/shoal/node/pki"
)

// Agent is one Shoal agent: gossip membership, the services it owns and the
// local HTTP API. Create it with New, then Start; Leave before Shutdown for a
// graceful exit.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	nodeID  string
	reg     *registry
	checks  *checkManager
	cluster *gossip.Cluster
	proxy   *lb.Proxy
	dns     *dnsServer // nil when disabled
	// ids and mesh are the node PKI and the mesh hop; nil without a PKI.
	ids  *identities
	mesh *mesh
	// config writes and saves cluster-wide config entries; intentions
	// decides mesh connections from them.
	config     *configStore
	intentions *intentions
	traffic    *traffic    // the traffic entries compiled for the proxy
	gossiping  atomic.Bool // the cluster has started
	// reloadMu serializes reloads.
	reloadMu sync.Mutex
	// sidecars are the open sidecar upstream listeners, by address.
	sidecarMu sync.Mutex
	sidecars  map[string]sidecarUpstream

	httpLn  net.Listener
	httpSrv *http.Server
	guard   *guard // the API's access checks, and their refusals

	// leaveCh is closed when a client asks the agent to leave (PUT /v1/agent/leave).
	leaveCh   chan struct{}
	leaveOnce sync.Once

	stop         chan struct{}
	wg           sync.WaitGroup
	shutdownOnce sync.Once
}

// New validates cfg and prepares an agent; nothing listens until Start.
func New(cfg Config) (*Agent, error) {
	if cfg.Domain == "" {
		cfg.Domain = cfg.Proxy.Domain
	}
	cfg.Proxy.Domain = cfg.Domain // one service domain for DNS and the proxy
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Agent{
		cfg:      cfg,
		log:      log.With("component", "agent"),
		leaveCh:  make(chan struct{}),
		stop:     make(chan struct{}),
		sidecars: map[string]sidecarUpstream{},
	}, nil
}

// Start loads the data dir, binds the HTTP API and the gossip ports (failing
// at once when one is taken), publishes the local catalog and starts joining
// the seeds.
func (a *Agent) Start() (err error) {
	var st *store
	snapshot := ""
	if a.cfg.DataDir != "" {
		if err := os.MkdirAll(a.cfg.DataDir, 0o700); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
		st = &store{dir: a.cfg.DataDir, log: a.log}
		snapshot = filepath.Join(a.cfg.DataDir, "serf.snapshot")
	}
	if a.nodeID, err = loadNodeID(a.cfg.DataDir); err != nil {
		return fmt.Errorf("node ID: %w", err)
	}
	if a.reg, err = newRegistry(st, time.Now); err != nil {
		return fmt.Errorf("load catalog: %w", err)
	}

	a.httpLn, err = a.listenHTTP()
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			a.httpLn.Close()
		}
	}()
	if a.cfg.DNSAddr != "" {
		if a.dns, err = listenDNS(a.cfg.DNSAddr, a.dnsLog()); err != nil {
			return err
		}
		defer func() {
			if err != nil {
				a.dns.close()
			}
		}()
	}

	gcfg := a.cfg.gossipConfig(a.nodeID, a.httpLn.Addr().String(), snapshot)
	if gcfg.Keys, gcfg.KeyringFile, err = a.keyring(); err != nil {
		return err
	}
	if a.cfg.PKI() {
		b, err := pki.LoadBundle(a.cfg.CAFile, a.cfg.NodeCertFile, a.cfg.NodeKeyFile, a.cfg.NodeName, time.Now())
		if err != nil {
			return fmt.Errorf("node PKI: %w", err)
		}
		if a.ids, err = newIdentities(b, a.cfg.LeafTTL, a.log); err != nil {
			return fmt.Errorf("node PKI: %w", err)
		}
		gcfg.Attestor = catalogAttestor{a.ids}
		gcfg.TLSHandler = func(c net.Conn) { a.mesh.serve(c) }
	}
	gcfg.Local = a.reg
	if a.cluster, err = gossip.New(gcfg); err != nil {
		return err
	}
	a.config = &configStore{cluster: a.cluster, dir: a.cfg.DataDir, log: a.log}
	if err := a.config.load(gcfg.EntryTombstoneTTL, time.Now()); err != nil {
		return fmt.Errorf("load config entries: %w", err)
	}
	a.intentions = &intentions{cluster: a.cluster, defaultAllow: a.cfg.DefaultIntention != actionDeny}
	a.traffic = newTraffic(a.cluster, a.log)
	view := lbView{cat: a.cluster.Catalog(), traffic: a.traffic}
	if a.ids != nil {
		a.mesh = newMesh(a.ids, a.cluster.Catalog(), a.intentions, a.cfg.NodeName, a.baseLog())
		view.local, view.mesh = a.cfg.NodeName, true
	}
	// The proxy binds its listeners before the agent joins anyone, so that
	// a taken address fails the start before peers ever see this node.
	if a.cfg.Proxy.HTTPAddr != "" || len(a.cfg.Proxy.Upstreams) > 0 {
		pcfg := a.cfg.Proxy
		pcfg.Logger = a.cfg.Logger
		pcfg.Zone = a.cfg.Zone
		pcfg.Distances = coordinateDistances{cluster: a.cluster, self: a.cfg.NodeName, started: &a.gossiping}
		if a.mesh != nil {
			pcfg.Mesh = a.mesh
		}
		if a.proxy, err = lb.New(pcfg, view); err == nil {
			a.traffic.proxy = a.proxy
			err = a.proxy.Start()
		}
		if err != nil {
			return err
		}
	}
	a.traffic.refresh() // the entries loaded from the data dir
	// The local catalog is published before gossip starts, so that the
	// first tags peers see carry its version and floor: a restart with a
	// wiped data dir is then recognized at once, never shown alive with
	// the services of its previous life.
	a.reg.published = a.cluster.LocalChanged
	a.checks = newCheckManager(a, a.log)
	a.reg.committed = func(st *registryState) {
		a.checks.sync(st)
		a.syncUpstreams(st)
		if a.ids != nil {
			a.ids.sync(serviceNames(st))
		}
	}
	a.syncUpstreams(a.reg.current())
	if a.ids != nil {
		a.ids.sync(serviceNames(a.reg.current()))
	}
	if err = a.reg.bump(); err == nil {
		err = a.cluster.Start()
	}
	a.gossiping.Store(err == nil)
	if err != nil {
		a.checks.shutdown()
		a.cluster.Shutdown()
		if a.proxy != nil {
			a.proxy.Shutdown(context.Background())
		}
		return err
	}

	if a.dns != nil {
		a.dns.serve(newDNSHandler(a.cluster.Catalog(), &a.cfg, a.dnsLog()))
	}
	a.guard = newGuard(a.cfg.HTTP, a.cfg.HTTPAddr, a.log)
	a.httpSrv = a.newHTTPServer(a.guard, newAPI(a).handler())
	a.wg.Add(2)
	go func() {
		defer a.wg.Done()
		if err := a.httpSrv.Serve(a.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("http api stopped", "err", err)
		}
	}()
	go a.maintain()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		onChange := []func(){a.traffic.refresh}
		if a.mesh != nil {
			onChange = append(onChange, a.mesh.recheck)
		}
		a.config.watch(a.stop, onChange...)
	}()
	a.log.Info("agent started", "node", a.cfg.NodeName, "http", a.HTTPAddr(), "dns", a.DNSAddr(),
		"data_dir", a.cfg.DataDir, "services", len(a.reg.current().Services))
	return nil
}

// maintain deregisters services that stayed critical past their checks'
// DeregisterCriticalServiceAfter and reaps old tombstones.
func (a *Agent) maintain() {
	defer a.wg.Done()
	ttl := a.cfg.Gossip.TombstoneTTL
	reap := time.NewTicker(min(ttl/10, time.Hour))
	defer reap.Stop()
	critical := time.NewTicker(time.Second)
	defer critical.Stop()
	renew := time.NewTicker(leafRenewCheck)
	defer renew.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-renew.C:
			if a.ids != nil {
				if n := a.ids.renewDue(); n > 0 {
					a.log.Info("renewed leaf certificates", "count", n)
				}
			}
		case <-reap.C:
			if err := a.reg.reapTombstones(ttl); err != nil {
				a.log.Warn("reap tombstones failed", "err", err)
			}
		case <-critical.C:
			a.deregisterCritical(time.Now())
		}
	}
}

// deregisterCritical removes services with a check critical for longer
// than its DeregisterCriticalServiceAfter.
func (a *Agent) deregisterCritical(now time.Time) {
	for _, ls := range a.reg.services() {
		for _, c := range ls.Checks {
			after := time.Duration(c.Def.DeregisterCriticalServiceAfter)
			if after <= 0 || c.Status != gossip.StatusCritical || c.CriticalSince == 0 {
				continue
			}
			if since := now.Sub(time.UnixMicro(c.CriticalSince)); since > after {
				a.log.Info("deregistering service critical for too long", "service", ls.Def.ID,
					"check", c.Def.CheckID, "critical_for", since.Round(time.Second))
				if err := a.reg.deregister(ls.Def.ID); err != nil && !errors.Is(err, errNotFound) {
					a.log.Warn("deregister failed", "service", ls.Def.ID, "err", err)
				}
				break
			}
		}
	}
}

// UpdateCheck records a check result of a local check: the one way checks
// report. A status change is persisted and replicated like a registration.
func (a *Agent) UpdateCheck(checkID, status, output string) error {
	return a.reg.updateCheck(checkID, status, output)
}

// HTTPAddr is the address the HTTP API listens on.
func (a *Agent) HTTPAddr() string { return a.httpLn.Addr().String() }

// Proxy is the agent's forwarding proxy, or nil when disabled.
func (a *Agent) Proxy() *lb.Proxy { return a.proxy }

// Cluster is a read-only view of the agent's gossip cluster.
func (a *Agent) Cluster() ClusterView { return ClusterView{a.cluster} }

// Join contacts the given gossip addresses once and reports how many
// answered.
func (a *Agent) Join(addrs []string) (int, error) { return a.cluster.Join(addrs) }

// NodeName is the agent's name in the cluster.
func (a *Agent) NodeName() string { return a.cfg.NodeName }

// LeaveRequested is closed when a client asked the agent to leave over the
// API; the owner of the agent should then Leave and Shutdown.
func (a *Agent) LeaveRequested() <-chan struct{} { return a.leaveCh }

func (a *Agent) requestLeave() { a.leaveOnce.Do(func() { close(a.leaveCh) }) }

// Leave tells the cluster this agent is leaving, so peers see it as left
// (its services removed) rather than failed.
func (a *Agent) Leave() error {
	if a.cluster == nil {
		return nil
	}
	return a.cluster.Leave()
}

// Shutdown stops the HTTP API (finishing in-flight requests within a few
// seconds) and gossip, and waits for every goroutine. Safe to call twice.
func (a *Agent) Shutdown() error {
	var err error
	a.shutdownOnce.Do(func() {
		close(a.stop)
		a.dns.shutdown()
		if a.proxy != nil {
			// Drain the proxy first: in-flight requests finish while the
			// view is still live.
			if e := a.proxy.Shutdown(context.Background()); e != nil {
				a.log.Warn("proxy shutdown", "err", e)
			}
		}
		if a.mesh != nil {
			a.mesh.close()
		}
		if a.checks != nil {
			a.checks.shutdown()
		}
		if a.httpSrv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if e := a.httpSrv.Shutdown(ctx); e != nil {
				a.httpSrv.Close()
			}
		}
		if a.cluster != nil {
			err = a.cluster.Shutdown()
		}
		a.wg.Wait()
	})
	return err
}

// leafRenewCheck is how often leaves are checked for their half-life.
const leafRenewCheck = 10 * time.Second

// serviceNames returns the names of the services in a registry state.
func serviceNames(st *registryState) map[string]bool {
	names := make(map[string]bool, len(st.Services))
	for _, ls := range st.Services {
		names[ls.Def.Name] = true
	}
	return names
}

// Reload re-reads the node PKI's files (the CA bundle, the node
// certificate and its key): leaves are reissued under the new node
// certificate and the local catalog is signed again, with no restart and
// no connection dropped. A file that does not load changes nothing and is
// the error. Without a PKI there is nothing to reload.
func (a *Agent) Reload() error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	if a.ids == nil {
		a.log.Info("reload: nothing to reload (no node PKI)")
		return nil
	}
	b, err := pki.LoadBundle(a.cfg.CAFile, a.cfg.NodeCertFile, a.cfg.NodeKeyFile, a.cfg.NodeName, time.Now())
	if err != nil {
		a.log.Error("reload refused: the running PKI stays", "err", err)
		return fmt.Errorf("reload: %w", err)
	}
	if err := a.ids.reload(b); err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	a.mesh.reload()
	// Peers that meet this catalog from now on check it against the new
	// certificate (and, after a root rotation, the new root).
	if err := a.reg.bump(); err != nil {
		return fmt.Errorf("reload: sign the catalog again: %w", err)
	}
	// So are the config entries whose signer the new roots no longer trust.
	if n, err := a.cluster.ResignEntries(); err != nil {
		return fmt.Errorf("reload: sign config entries again: %w", err)
	} else if n > 0 {
		a.log.Info("signed config entries again after the reload", "entries", n)
	}
	a.log.Info("reloaded the node PKI", "trust_domain", b.TrustDomain, "roots", len(b.Roots),
		"node_cert_expires", b.NodeCert.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

// keyring returns the gossip keys: the data dir's keyring when there is
// one, else the --encrypt key, which is saved as the keyring so that later
// rotations survive restarts.
func (a *Agent) keyring() ([]string, string, error) {
	if a.cfg.DataDir == "" {
		if a.cfg.Encrypt == "" {
			return nil, "", nil
		}
		return []string{a.cfg.Encrypt}, "", nil
	}
	path := filepath.Join(a.cfg.DataDir, "keyring.json")
	keys, err := gossip.LoadKeyringFile(path)
	if err != nil {
		return nil, "", err
	}
	if len(keys) > 0 {
		if a.cfg.Encrypt != "" && a.cfg.Encrypt != keys[0] {
			a.log.Warn("the data dir holds a keyring: --encrypt is ignored", "keyring", path)
		}
		return keys, path, nil
	}
	if a.cfg.Encrypt == "" {
		return nil, path, nil
	}
	b, _ := json.Marshal([]string{a.cfg.Encrypt})
	if err := writeFileAtomic(path, b); err != nil {
		return nil, "", fmt.Errorf("save keyring: %w", err)
	}
	return []string{a.cfg.Encrypt}, path, nil
}

// loadNodeID returns the agent's stable node ID, created on first start and
// kept in the data dir; without a data dir a new one is made each start.
func loadNodeID(dir string) (string, error) {
	if dir != "" {
		b, err := os.ReadFile(filepath.Join(dir, "node-id"))
		if err == nil {
			return strings.TrimSpace(string(b)), nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	id := fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
	if dir != "" {
		if err := writeFileAtomic(filepath.Join(dir, "node-id"), []byte(id+"\n")); err != nil {
			return "", err
		}
	}
	return id, nil
}

// baseLog is the agent's logger without its component attribute.
func (a *Agent) baseLog() *slog.Logger {
	if a.cfg.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.cfg.Logger
}
