package node

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-mesh/shoal/gossip"
	"github.com/shoal-mesh/shoal/lb"
)

// agentCollector exports an agent's state to Prometheus, read at scrape
// time: membership and catalog from the gossip layer, replication and
// queue counters, the proxy's per-service traffic, and the local checks.
// Collect only reads snapshots and atomics; it takes no lock across I/O.
type agentCollector struct {
	a *Agent

	info, members, instances, services, lag                   *prometheus.Desc
	replBytes, replPushes, replPulls, queueDepth, healthScore *prometheus.Desc
	proxyRequests, proxyErrors, proxyRetries, proxyEjections  *prometheus.Desc
	proxyConns, proxyLatency, proxyOverhead, checkStatus      *prometheus.Desc
	deltasRefused, meshRefused, meshConns, meshActive         *prometheus.Desc
	leaves, nodeCertExpiry, meshForwarded                     *prometheus.Desc
	meshIntentions, entriesRefused, configEntries             *prometheus.Desc
	catalogSaves, catalogSaveSeconds, httpRefused             *prometheus.Desc
	// The traffic policy's decisions: requests, retries and timeouts by
	// route, subset and zone.
	routeDecisions, subsetDecisions, zoneDecisions [3]*prometheus.Desc
}

func newAgentCollector(a *Agent) *agentCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("shoal_"+name, help, labels, nil)
	}
	decisions := func(what, label, help string) (out [3]*prometheus.Desc) {
		for i, kind := range []string{"requests", "retries", "timeouts"} {
			out[i] = d(fmt.Sprintf("proxy_%s_%s_total", what, kind), fmt.Sprintf(help, kind), "service", label)
		}
		return out
	}
	return &agentCollector{
		routeDecisions: decisions("route", "route",
			"Proxied %s by the service-router route that took them (0, 1, … in the router's order; default: none matched)."),
		subsetDecisions: decisions("subset", "subset", "Proxied %s by the service-resolver subset they were sent to."),
		zoneDecisions: decisions("zone", "zone",
			"Proxied %s by the zone of the instance that took them (\"\": a node without a zone)."),
		a:         a,
		info:      d("agent_info", "Always 1; the labels describe the agent.", "node", "datacenter", "version"),
		members:   d("members", "Cluster members by gossip status, as this agent sees them.", "status"),
		instances: d("catalog_instances", "Service instances in the replicated catalog by health (critical includes instances of nodes that are not alive).", "health"),
		services:  d("catalog_services", "Distinct service names in the replicated catalog."),
		lag: d("catalog_version_lag", "Catalog version a peer advertises in gossip minus the version replicated here: 0 when in sync. "+
			"Versions are the owner's hybrid clock in microseconds, so the value approximates how much older the replica is.", "node"),
		catalogSaves: d("catalog_saves_total",
			"Saves of the local catalog to the data dir (fsynced; every API write waits for one)."),
		catalogSaveSeconds: d("catalog_save_seconds_total",
			"Time spent saving the local catalog to the data dir; divided by catalog_saves_total, the mean a write waits on the disk."),
		replBytes:   d("replication_bytes_total", "Bytes of the node-to-node catalog path.", "direction"),
		replPushes:  d("replication_pushes_total", "Catalog deltas pushed to and received from peers.", "direction"),
		replPulls:   d("replication_pulls_total", "Catalog pull requests sent to peers (repair after gaps)."),
		queueDepth:  d("gossip_queue_depth", "Messages waiting in the gossip broadcast queues.", "queue"),
		healthScore: d("gossip_health_score", "Memberlist awareness score: 0 is healthy, higher means slow probe answers."),
		proxyRequests: d("proxy_requests_total",
			"HTTP requests the local proxy routed to a service.", "service"),
		proxyErrors: d("proxy_errors_total",
			"Requests and connections the proxy answered itself for lack of a working instance (503, 502, 504).", "service"),
		proxyRetries:   d("proxy_retries_total", "Tries on another instance after a failed one.", "service"),
		proxyEjections: d("proxy_ejections_total", "Instances taken out of balancing by passive health.", "service"),
		proxyConns:     d("proxy_connections_total", "TCP upstream connections accepted.", "service"),
		proxyLatency: d("proxy_request_duration_seconds",
			"Time from a request's arrival at the proxy to its instance's response headers, retries included.", "service"),
		proxyOverhead: d("proxy_overhead_seconds",
			"The proxy's own time per HTTP/1 request: its handler's time less the tries' (connect, write, wait for the instance's headers)."),
		deltasRefused: d("catalog_deltas_refused_total",
			"Catalog deltas from peers refused on their owner's signature (node PKI on), by reason: unsigned, signature, digest.", "reason"),
		httpRefused: d("http_refused_total",
			"HTTP API requests refused with 403, by reason: host (DNS rebinding check), origin (cross-site write), token_missing, token_wrong.", "reason"),
		meshRefused: d("mesh_refused_total",
			"Mesh connections from other agents refused, by reason (handshake, certificate, node_not_alive, service_not_on_node, instance_not_local, instance_unreachable, preamble, intention).", "reason"),
		meshConns: d("mesh_connections_total", "Mesh connections accepted from other agents (in) and opened to them (out).", "direction"),
		meshForwarded: d("mesh_forwarded_total",
			"Mesh connections from other agents forwarded to a local instance, by the caller's verified identity (a service, or node:NAME for a node's shared proxy) and the destination service.", "source", "destination"),
		meshIntentions: d("mesh_intention_decisions_total",
			"Intention decisions on mesh connections arriving here, by the caller's verified identity, the destination service and the decision (allowed, denied).", "source", "destination", "decision"),
		entriesRefused: d("config_entries_refused_total",
			"Config entries from peers refused, by reason: unsigned, signature (node PKI on), limit (the store is full).", "reason"),
		configEntries:  d("config_entries", "Live config entries held here, by kind.", "kind"),
		meshActive:     d("mesh_active_connections", "Inbound mesh connections forwarding to a local instance now."),
		leaves:         d("pki_leaf_certificates", "Leaf certificates this agent holds: its own and one per service name it hosts."),
		nodeCertExpiry: d("pki_node_certificate_expiry_timestamp_seconds", "When this node's certificate expires (Unix time)."),
		checkStatus:    d("check_status", "Health checks of this agent: 1 for the check's current status, 0 for the others.", "check", "service", "status"),
	}
}

// Describe implements prometheus.Collector.
func (c *agentCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.info, c.members, c.instances, c.services, c.lag,
		c.replBytes, c.replPushes, c.replPulls, c.queueDepth, c.healthScore,
		c.proxyRequests, c.proxyErrors, c.proxyRetries, c.proxyEjections,
		c.proxyConns, c.proxyLatency, c.proxyOverhead, c.checkStatus,
		c.deltasRefused, c.meshRefused, c.meshConns, c.meshActive, c.leaves, c.nodeCertExpiry, c.meshForwarded,
		c.meshIntentions, c.entriesRefused, c.configEntries, c.catalogSaves, c.catalogSaveSeconds, c.httpRefused,
	} {
		ch <- d
	}
	for _, set := range [][3]*prometheus.Desc{c.routeDecisions, c.subsetDecisions, c.zoneDecisions} {
		for _, d := range set {
			ch <- d
		}
	}
}

// Collect implements prometheus.Collector.
func (c *agentCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	a := c.a
	gauge(c.info, 1, a.cfg.NodeName, a.cfg.Datacenter, Version)
	if a.cluster == nil {
		return // not started
	}
	cat := a.cluster.Catalog()

	byStatus := map[string]int{}
	for _, m := range a.cluster.Members() {
		byStatus[m.Status.String()]++
	}
	for _, s := range []gossip.MemberStatus{gossip.StatusAlive, gossip.StatusLeaving, gossip.StatusLeft, gossip.StatusFailed} {
		gauge(c.members, float64(byStatus[s.String()]), s.String())
	}

	byHealth := map[string]int{}
	for _, in := range cat.AllInstances() {
		byHealth[in.Status()]++
	}
	for _, h := range []string{gossip.StatusPassing, gossip.StatusWarning, gossip.StatusCritical} {
		gauge(c.instances, float64(byHealth[h]), h)
	}
	gauge(c.services, float64(len(cat.Services())))

	for _, m := range cat.Members() {
		if m.Name == a.cfg.NodeName || !registered(m) {
			continue
		}
		lag := uint64(0)
		if adv, held := m.CatalogVersion(), cat.Version(m.Name); adv > held {
			lag = adv - held
		}
		gauge(c.lag, float64(lag), m.Name)
	}

	if s := a.reg.store; s != nil {
		counter(c.catalogSaves, s.saves.Load())
		ch <- prometheus.MustNewConstMetric(c.catalogSaveSeconds, prometheus.CounterValue, time.Duration(s.saveNanos.Load()).Seconds())
	}

	st := a.cluster.Stats()
	counter(c.replBytes, st.BytesIn, "in")
	counter(c.replBytes, st.BytesOut, "out")
	counter(c.replPushes, st.PushesIn, "in")
	counter(c.replPushes, st.PushesOut, "out")
	counter(c.replPulls, st.Pulls)
	for _, reason := range sortedKeys(st.Refused) {
		counter(c.deltasRefused, st.Refused[reason], reason)
	}
	for _, reason := range sortedKeys(st.EntriesRefused) {
		counter(c.entriesRefused, st.EntriesRefused[reason], reason)
	}
	kinds := map[string]int{}
	for kind := range configKinds {
		kinds[kind] = 0
	}
	for _, e := range a.cluster.Entries("") {
		kinds[e.Kind]++
	}
	for _, k := range sortedKeys(kinds) {
		gauge(c.configEntries, float64(kinds[k]), k)
	}
	if g := a.guard; g != nil {
		refused := g.refused.snapshot()
		for _, reason := range apiRefusalReasons {
			counter(c.httpRefused, refused[reason], reason)
		}
	}
	if m := a.mesh; m != nil {
		refused := m.refused.snapshot()
		for _, reason := range meshRefusalReasons {
			counter(c.meshRefused, refused[reason], reason)
		}
		counter(c.meshConns, m.accepted.Load(), "in")
		counter(c.meshConns, m.dialed.Load(), "out")
		gauge(c.meshActive, float64(m.active.Load()))
		for k, n := range m.forwarded.snapshot() {
			counter(c.meshForwarded, n, k[0], k[1])
		}
		for k, n := range m.allowed.snapshot() {
			counter(c.meshIntentions, n, k[0], k[1], "allowed")
		}
		for k, n := range m.denied.snapshot() {
			counter(c.meshIntentions, n, k[0], k[1], "denied")
		}
		gauge(c.leaves, float64(len(*a.ids.byName.Load())))
		gauge(c.nodeCertExpiry, float64(a.ids.Bundle().NodeCert.NotAfter.Unix()))
	}
	q := a.cluster.Queues()
	gauge(c.queueDepth, float64(q.Intents), "intent")
	gauge(c.queueDepth, float64(q.Events), "event")
	gauge(c.queueDepth, float64(q.Queries), "query")
	gauge(c.healthScore, float64(q.HealthScore))

	if a.proxy != nil {
		for _, s := range a.proxy.ServiceStats() {
			counter(c.proxyRequests, s.Requests, s.Service)
			counter(c.proxyErrors, s.Errors, s.Service)
			counter(c.proxyRetries, s.Retries, s.Service)
			counter(c.proxyEjections, s.Ejections, s.Service)
			counter(c.proxyConns, s.Connections, s.Service)
			ch <- prometheus.MustNewConstHistogram(c.proxyLatency,
				s.Latency.Count, s.Latency.Sum.Seconds(), s.Latency.Cumulative(), s.Service)
		}
		for set, stats := range map[*[3]*prometheus.Desc][]lb.DecisionStats{
			&c.routeDecisions: a.proxy.RouteStats(), &c.subsetDecisions: a.proxy.SubsetStats(), &c.zoneDecisions: a.proxy.ZoneStats(),
		} {
			for _, s := range stats {
				counter(set[0], s.Requests, s.Service, s.Name)
				counter(set[1], s.Retries, s.Service, s.Name)
				counter(set[2], s.Timeouts, s.Service, s.Name)
			}
		}
		o := a.proxy.Overhead()
		ch <- prometheus.MustNewConstHistogram(c.proxyOverhead, o.Count, o.Sum.Seconds(), o.Cumulative())
	}

	if a.reg == nil {
		return
	}
	state := a.reg.current()
	check := func(cs *checkState, service string) {
		for _, s := range []string{gossip.StatusPassing, gossip.StatusWarning, gossip.StatusCritical} {
			v := 0.0
			if cs.Status == s {
				v = 1
			}
			gauge(c.checkStatus, v, cs.Def.CheckID, service, s)
		}
	}
	for _, id := range sortedKeys(state.Services) {
		ls := state.Services[id]
		for _, cs := range ls.Checks {
			check(cs, ls.Def.Name)
		}
	}
	for _, id := range sortedKeys(state.NodeChecks) {
		check(state.NodeChecks[id], "")
	}
}

var _ prometheus.Collector = (*agentCollector)(nil)
