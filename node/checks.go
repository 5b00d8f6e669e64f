package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/shoal-mesh/shoal/gossip"
)

// Defaults of check execution, as Consul's.
const (
	defaultCheckTimeout = 10 * time.Second
	maxCheckOutput      = 4 << 10
)

// checkReporter receives check results; the agent's implementation commits
// them to the registry. It must be safe for concurrent use.
type checkReporter interface {
	UpdateCheck(checkID, status, output string) error
}

// damper applies Consul's flap damping to raw results: a check turns passing
// after SuccessBeforePassing consecutive successes, warning after
// FailuresBeforeWarning and critical after FailuresBeforeCritical consecutive
// failures; in between, it keeps its status.
type damper struct {
	successBefore, warningBefore, criticalBefore int
	successes, failures                          int
}

func newDamper(def *CheckDefinition) *damper {
	d := &damper{
		successBefore:  max(def.SuccessBeforePassing, 1),
		criticalBefore: max(def.FailuresBeforeCritical, 1),
	}
	d.warningBefore = d.criticalBefore
	if def.FailuresBeforeWarning > 0 {
		d.warningBefore = def.FailuresBeforeWarning
	}
	return d
}

// observe takes a raw result and returns the status to report, or "" to
// keep the current one.
func (d *damper) observe(status string) string {
	if status == gossip.StatusPassing || status == gossip.StatusWarning {
		d.successes++
		d.failures = 0
		if d.successes >= d.successBefore {
			return status
		}
		return ""
	}
	d.failures++
	d.successes = 0
	switch {
	case d.failures >= d.criticalBefore:
		return gossip.StatusCritical
	case d.failures >= d.warningBefore:
		return gossip.StatusWarning
	}
	return ""
}

// probe runs a check once and returns its raw status and output.
type probe func(ctx context.Context) (status, output string)

// checkRunner runs one interval check (HTTP or TCP) in its own goroutine,
// never overlapping itself, with a random first delay so that checks of many
// services do not fire together.
type checkRunner struct {
	id     string
	def    CheckDefinition
	probe  probe
	damper *damper
	report checkReporter
	log    interface{ Warn(string, ...any) }

	stop chan struct{}
	done chan struct{}
}

func (r *checkRunner) run() {
	defer close(r.done)
	interval := time.Duration(r.def.Interval)
	timer := time.NewTimer(rand.N(interval) + 1)
	defer timer.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-timer.C:
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-r.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		status, output := r.probe(ctx)
		cancel()
		select {
		case <-r.stop:
			return // stopped mid-probe: the cancellation is not the check's result
		default:
		}
		if s := r.damper.observe(status); s != "" {
			if err := r.report.UpdateCheck(r.id, s, output); err != nil && !errors.Is(err, errNotFound) {
				r.log.Warn("check update failed", "check", r.id, "err", err)
			}
		}
		timer.Reset(interval)
	}
}

// newProbe builds the probe of an HTTP or TCP check; nil for kinds that are
// not run on an interval (TTL, maintenance).
func newProbe(def *CheckDefinition) probe {
	timeout := time.Duration(def.Timeout)
	if timeout <= 0 {
		timeout = defaultCheckTimeout
	}
	switch {
	case def.HTTP != "":
		return httpProbe(def, timeout)
	case def.TCP != "":
		return tcpProbe(strings.TrimPrefix(def.TCP, "tcp://"), timeout)
	}
	return nil
}

// httpProbe: 2xx is passing, 429 warning, anything else or no answer in
// time critical. Redirects are followed only within the same host.
func httpProbe(def *CheckDefinition, timeout time.Duration) probe {
	transport := &http.Transport{
		Proxy:             nil,
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: def.TLSSkipVerify}, //nolint:gosec // the user's explicit choice
	}
	client := &http.Client{
		Timeout:   timeout,
		Transport: transport,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			if req.URL.Host != via[0].URL.Host {
				return fmt.Errorf("redirect to another host (%s) refused", req.URL.Host)
			}
			return nil
		},
	}
	method := def.Method
	if method == "" {
		method = http.MethodGet
	}
	return func(ctx context.Context) (string, string) {
		req, err := http.NewRequestWithContext(ctx, method, def.HTTP, strings.NewReader(def.Body))
		if err != nil {
			return gossip.StatusCritical, err.Error()
		}
		for k, vs := range def.Header {
			for _, v := range vs {
				req.Header.Add(k, v)
			}
		}
		if req.Header.Get("User-Agent") == "" {
			req.Header.Set("User-Agent", "shoal-health-check")
		}
		resp, err := client.Do(req)
		if err != nil {
			return gossip.StatusCritical, fmt.Sprintf("HTTP %s %s: %v", method, def.HTTP, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxCheckOutput))
		output := fmt.Sprintf("HTTP %s %s: %s Output: %s", method, def.HTTP, resp.Status, body)
		switch {
		case resp.StatusCode >= 200 && resp.StatusCode < 300:
			return gossip.StatusPassing, output
		case resp.StatusCode == http.StatusTooManyRequests:
			return gossip.StatusWarning, output
		default:
			return gossip.StatusCritical, output
		}
	}
}

// tcpProbe: a connection accepted in time is passing.
func tcpProbe(addr string, timeout time.Duration) probe {
	return func(ctx context.Context) (string, string) {
		d := net.Dialer{Timeout: timeout}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return gossip.StatusCritical, fmt.Sprintf("TCP connect %s: %v", addr, err)
		}
		conn.Close()
		return gossip.StatusPassing, fmt.Sprintf("TCP connect %s: Success", addr)
	}
}

// checkManager keeps one runner per interval check and one timer per TTL
// check of the local registry, and deregisters services whose checks stay
// critical past DeregisterCriticalServiceAfter.
type checkManager struct {
	report checkReporter
	log    interface{ Warn(string, ...any) }
	now    func() time.Time

	mu      sync.Mutex // guards the maps below
	runners map[string]*checkRunner
	ttls    map[string]*time.Timer
	defs    map[string]CheckDefinition // the definition each runner or timer was started for
	synced  uint64                     // version of the newest state synced
	stopped bool
}

func newCheckManager(report checkReporter, log interface{ Warn(string, ...any) }) *checkManager {
	return &checkManager{
		report: report, log: log, now: time.Now,
		runners: make(map[string]*checkRunner),
		ttls:    make(map[string]*time.Timer),
		defs:    make(map[string]CheckDefinition),
	}
}

// sync starts runners and TTL timers for new or changed checks and stops
// those of checks that are gone.
func (m *checkManager) sync(st *registryState) {
	want := make(map[string]CheckDefinition)
	for _, ls := range st.Services {
		for _, c := range ls.Checks {
			want[c.Def.CheckID] = c.Def
		}
	}
	for _, c := range st.NodeChecks {
		want[c.Def.CheckID] = c.Def
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped || st.Version < m.synced {
		return // a newer state was synced already
	}
	m.synced = st.Version
	for id, def := range m.defs {
		if nd, ok := want[id]; !ok || !sameCheckDef(&def, &nd) {
			m.stopLocked(id)
		}
	}
	for id, def := range want {
		if _, running := m.defs[id]; running {
			continue
		}
		switch {
		case def.TTL > 0:
			m.defs[id] = def
			m.ttls[id] = time.AfterFunc(time.Duration(def.TTL), m.ttlExpired(id, time.Duration(def.TTL)))
		case newProbe(&def) != nil:
			r := &checkRunner{
				id: id, def: def, probe: newProbe(&def), damper: newDamper(&def),
				report: m.report, log: m.log, stop: make(chan struct{}), done: make(chan struct{}),
			}
			m.defs[id] = def
			m.runners[id] = r
			go r.run()
		}
	}
}

func (m *checkManager) ttlExpired(id string, ttl time.Duration) func() {
	return func() {
		err := m.report.UpdateCheck(id, gossip.StatusCritical, fmt.Sprintf("TTL expired (no update within %v)", ttl))
		if err != nil && !errors.Is(err, errNotFound) {
			m.log.Warn("check update failed", "check", id, "err", err)
		}
	}
}

// resetTTL restarts a TTL check's timer after a client reported its status.
func (m *checkManager) resetTTL(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.ttls[id]
	if ok {
		t.Reset(time.Duration(m.defs[id].TTL))
	}
	return ok
}

func (m *checkManager) stopLocked(id string) {
	if r, ok := m.runners[id]; ok {
		close(r.stop)
		delete(m.runners, id)
	}
	if t, ok := m.ttls[id]; ok {
		t.Stop()
		delete(m.ttls, id)
	}
	delete(m.defs, id)
}

// shutdown stops every check and waits for running probes to return.
func (m *checkManager) shutdown() {
	m.mu.Lock()
	m.stopped = true
	var runners []*checkRunner
	for id, r := range m.runners {
		runners = append(runners, r)
		m.stopLocked(id)
	}
	for id := range m.ttls {
		m.stopLocked(id)
	}
	m.mu.Unlock()
	for _, r := range runners {
		<-r.done
	}
}

func sameCheckDef(a, b *CheckDefinition) bool {
	return a.HTTP == b.HTTP && a.TCP == b.TCP && a.TTL == b.TTL && a.Interval == b.Interval &&
		a.Timeout == b.Timeout && a.Method == b.Method && a.Body == b.Body &&
		a.TLSSkipVerify == b.TLSSkipVerify && fmt.Sprint(a.Header) == fmt.Sprint(b.Header) &&
		a.SuccessBeforePassing == b.SuccessBeforePassing && a.FailuresBeforeWarning == b.FailuresBeforeWarning &&
		a.FailuresBeforeCritical == b.FailuresBeforeCritical
}
