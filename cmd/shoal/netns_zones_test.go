//go:build linux

package main

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/gossip"
	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// The zone scenario's network: four hosts in three zones, 5 ms each way
// between zones. Within a zone packets go straight over the veths and the
// bridge (about 0.1 ms round trip), as they would in one data centre.
const (
	zoneDelay = 5 * time.Millisecond
	// zoneRTT is the round trip between zones the delay makes.
	zoneRTT = 2 * zoneDelay
	// zoneProbeInterval is the LAN gossip profile's: one peer probed a
	// second, each probe's answer a Vivaldi sample.
	zoneProbeInterval = time.Second
)

// zoneOf is each host's zone: the caller h1 and one instance in a, one
// instance in each of b and c.
var zoneOf = map[string]string{"h1": "a", "h2": "a", "h3": "b", "h4": "c"}

// TestNetnsZones proves issue 13's zone- and latency-aware balancing on real
// agents, each host in a network namespace of its own (the harness of
// netns_harness_test.go) with --zone and a delay between zones, and the
// load through h1's proxy. In one run:
//
//   - the network coordinates settle to the delays, measured with TCP
//     connects: how many probe intervals that takes;
//   - with healthy local instances at least 95 % of the default policy's
//     requests (least_request, zone-aware) stay in h1's zone; p50/p99
//     against round_robin with locality off, and the latency policy
//     (Vivaldi) against least_request with locality off, all four as
//     services on the same instances, loaded at once;
//   - the local instance's backend killed: the traffic spills over to the
//     other zones with no failed request, and comes back once it recovers;
//   - the local instance slowed down (30 ms an answer, three times the way
//     to another zone): the traffic spills over, no request fails, and it
//     comes back when the instance is fast again.
//
// The delay: tc netem is what one would reach for, but kernels built
// without sch_netem (the virtual machine these tests were written on: no
// netem, no modules) have none; NFQUEUE they do have. So every host runs
// testdata/netdelay, which holds the packets iptables queues to it for
// 5 ms, and queues its packets to the hosts of other zones.
//
// Reproduce (as root): go test -race -count=1 -run TestNetnsZones -v ./cmd/shoal/
func TestNetnsZones(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the netns zone scenario in -short mode: it builds shoal and runs minutes")
	}
	nsRequire(t)
	nsWatchStalls(t)
	nsSweep(t)
	dir := t.TempDir()
	bins := nsBuild(t, dir)
	netdelay := zoneBuildNetdelay(t, dir)
	c := nsNewNetwork(t, bins, 4)
	h1, h2, h3, h4 := c.host(1), c.host(2), c.host(3), c.host(4)
	for _, h := range c.hosts {
		h.extra = []string{"--zone", zoneOf[h.name], "--proxy-debug-headers"}
	}
	zoneDelays(t, c, netdelay)
	started := time.Now()
	c.startAll()

	// The network as TCP sees it, from h1: connects to the backends.
	var ref zoneRTTs
	ref.near = zoneMeasureRTT(t, h1, h2, netdelay)
	ref.far = (zoneMeasureRTT(t, h1, h3, netdelay) + zoneMeasureRTT(t, h1, h4, netdelay)) / 2
	c.logf("RESULT round trip measured with TCP connects from h1: %v within zone a, %v to the other zones (delay %v each way)",
		ref.near.Round(10*time.Microsecond), ref.far.Round(10*time.Microsecond), zoneDelay)
	if ref.far < zoneRTT || ref.far > 2*zoneRTT || ref.near > zoneRTT/4 {
		t.Fatalf("the delays do not hold: round trips %v within a zone, %v across, want under %v and %v-%v",
			ref.near, ref.far, zoneRTT/4, zoneRTT, 2*zoneRTT)
	}

	// Coordinates settle when the far estimates are right and the near
	// ones under a quarter of them (zoneRTTs.settled).
	ref.nearMax = ref.far / 4
	polls := 0
	nextLog := started
	nsPoll(t, 90*time.Second, 250*time.Millisecond, "the coordinates to settle", func() (bool, string) {
		polls++
		est, ok, state := zoneEstimates(h1, ref)
		if time.Now().After(nextLog) && est != nil {
			c.logf("coordinates after %v: %s", time.Since(started).Round(time.Second), zoneDescribe(est, "h1"))
			nextLog = nextLog.Add(5 * time.Second)
		}
		return ok, state
	})
	settled := time.Since(started)
	est, _, _ := zoneEstimates(h1, ref)
	c.logf("RESULT coordinates settled within %v of the agents' start (%d polls): %.0f probe intervals of %v (each agent probes one peer an interval); h1's estimates: %s",
		settled.Round(100*time.Millisecond), polls, math.Ceil(settled.Seconds()/zoneProbeInterval.Seconds()), zoneProbeInterval, zoneDescribe(est, "h1"))

	// Four services on the same three instances: the default policy, and
	// three set by service-resolvers.
	services := []string{"web", "web-rr", "web-lat", "web-lr"}
	for _, h := range []*nsHost{h2, h3, h4} {
		for _, s := range services {
			h.register(s+"-"+h.name, s, true)
		}
	}
	for service, policy := range map[string]string{"web-rr": "round_robin", "web-lat": "latency", "web-lr": "least_request"} {
		entry := map[string]any{"Kind": "service-resolver", "Name": service,
			"LoadBalancer": map[string]any{"Policy": policy}, "PrioritizeByLocality": map[string]any{"Mode": "none"}}
		if err := h1.put("/v1/config", entry); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range services {
		c.waitPassing(h1, s, map[string]bool{s + "-h2": true, s + "-h3": true, s + "-h4": true})
	}
	// The resolvers are in h1's proxy once a request says so.
	nsPoll(t, nsUpdateBound, 100*time.Millisecond, "h1's proxy to apply the resolvers", func() (bool, string) {
		var got []string
		for _, s := range services[1:] {
			req, _ := http.NewRequest(http.MethodGet, h1.proxyURL(), nil)
			req.Host = s
			resp, err := c.client.Do(req)
			if err != nil {
				return false, err.Error()
			}
			resp.Body.Close()
			got = append(got, resp.Header.Get("X-Shoal-Route"))
		}
		// A chain's requests name their route; the default has none.
		return strings.Count(strings.Join(got, " "), "route=default") == 3, fmt.Sprint(got)
	})

	// The phases share the cluster, whose helpers fail the test as a
	// whole: they run in turn, not as subtests.
	zonePhase(c, "locality and policies under the same load", func() {
		const rps = 100
		before, err := meshMetric(h1, "shoal_proxy_zone_requests_total", `service="web"`, `zone="a"`)
		if err != nil {
			t.Fatal(err)
		}
		loads := map[string]*nsLoad{}
		for _, s := range services {
			loads[s] = c.startLoad(h1, s, rps)
		}
		nsPoll(t, 60*time.Second, 100*time.Millisecond, "15 s of load", func() (bool, string) {
			sent, _ := loads["web"].progress()
			return sent >= 15*rps, fmt.Sprint(sent, " sent")
		})
		results := map[string]nsLoadResult{}
		for _, s := range services {
			results[s] = loads[s].finish()
		}
		for _, s := range services {
			r := results[s]
			local, n := zoneShare(r.samples, "a", 0, time.Hour)
			c.logf("RESULT %-7s %s: %d requests, %d failed; %.1f %% in zone a; p50 %v p99 %v; by backend %v",
				s, zoneServiceDesc[s], r.sent, r.failed, 100*local, r.p50, r.p99, r.byBackend)
			if r.failed > 0 {
				t.Errorf("%s: %d of %d requests failed: %q", s, r.failed, r.sent, r.errs)
			}
			if n < 10*rps {
				t.Errorf("%s: only %d answered requests: the load did not run", s, n)
			}
		}
		local, n := zoneShare(results["web"].samples, "a", 0, time.Hour)
		if local < 0.95 {
			t.Errorf("the default policy kept %.1f %% of %d requests in h1's zone, want ≥ 95 %%", 100*local, n)
		}
		// The proxy counts them too.
		after, err := meshMetric(h1, "shoal_proxy_zone_requests_total", `service="web"`, `zone="a"`)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := after-before, float64(results["web"].byBackend["h2"]); got != want {
			t.Errorf("shoal_proxy_zone_requests_total{service=web,zone=a} on h1 went up by %v, want %v (answers of h2)", got, want)
		}
		// The network as the requests met it: round robin's answers from
		// each zone.
		inZone, across := zoneLatencies(results["web-rr"].samples)
		c.logf("RESULT the network through h1's proxy (round robin's answers): zone a p50 %v, other zones p50 %v (delay %v each way)",
			inZone, across, zoneDelay)
		if results["web"].p50 >= results["web-rr"].p50 {
			t.Errorf("zone-aware least_request p50 %v, round robin without locality %v: want the zone-aware one faster", results["web"].p50, results["web-rr"].p50)
		}
		// Without distances the latency policy would be least_request;
		// with them it draws the near instance far more often.
		lat, _ := zoneShare(results["web-lat"].samples, "a", 0, time.Hour)
		lr, _ := zoneShare(results["web-lr"].samples, "a", 0, time.Hour)
		if lat < lr+0.25 {
			t.Errorf("the latency policy sent %.1f %% to the near instance, least_request without locality %.1f %%: want 25 points more at least", 100*lat, 100*lr)
		}
	})

	zonePhase(c, "the local instance killed: spill over, no failure, and back", func() {
		const rps = 200
		load := c.startLoad(h1, "web", rps)
		nsPoll(t, 30*time.Second, 50*time.Millisecond, "2 s of load", func() (bool, string) {
			sent, _ := load.progress()
			return sent >= 2*rps, fmt.Sprint(sent, " sent")
		})
		h2.killBackend()
		killedAt := load.elapsed()
		c.logf("h2's backend killed")
		out := c.waitPassing(h1, "web", map[string]bool{"web-h3": true, "web-h4": true})
		c.logf("web-h2 out of ?passing on h1 %v after the kill", out.Round(time.Millisecond))
		// Three more seconds without it.
		nsPoll(t, 30*time.Second, 50*time.Millisecond, "3 s of load without h2's instance", func() (bool, string) {
			return load.elapsed() > killedAt+out+3*time.Second, ""
		})
		h2.startBackend()
		restartedAt := load.elapsed()
		c.waitPassing(h1, "web", map[string]bool{"web-h2": true, "web-h3": true, "web-h4": true})
		back := zoneWaitLocal(t, load, restartedAt, 0.95)
		r := load.finish()
		c.logf("share of zone a by half second: %s", zoneTimeline(r.samples, 500*time.Millisecond))
		spilled, n := zoneShare(r.samples, "a", killedAt, restartedAt)
		c.logf("RESULT local instance killed under %d GET/s: %d sent, %d failed; between the kill and the restart (%v) %.1f %% of %d answers from zone a; max latency in the 2 s after the kill %v; ≥ 95 %% in zone a again over the second ending %v after the restart (passing again after %v)",
			rps, r.sent, r.failed, (restartedAt - killedAt).Round(time.Millisecond), 100*spilled, n,
			r.maxIn(killedAt, killedAt+2*time.Second), back.Round(100*time.Millisecond), out.Round(time.Millisecond))
		if r.failed > 0 {
			t.Errorf("%d of %d requests failed, want 0: %q", r.failed, r.sent, r.errs)
		}
	})

	zonePhase(c, "the local instance slowed down: spill over, no failure, and back", func() {
		const rps, slow = 200, 30 * time.Millisecond
		load := c.startLoad(h1, "web", rps)
		nsPoll(t, 30*time.Second, 50*time.Millisecond, "2 s of load", func() (bool, string) {
			sent, _ := load.progress()
			return sent >= 2*rps, fmt.Sprint(sent, " sent")
		})
		before, _ := zoneShare(load.snapshot(), "a", 0, time.Hour)
		zoneBackendDelay(t, h2, slow)
		slowAt := load.elapsed()
		// Ten seconds slow; the first second is the proxy learning it.
		nsPoll(t, 60*time.Second, 100*time.Millisecond, "10 s of load on the slow instance", func() (bool, string) {
			return load.elapsed() > slowAt+10*time.Second, ""
		})
		zoneBackendDelay(t, h2, 0)
		fastAt := load.elapsed()
		back := zoneWaitLocal(t, load, fastAt, 0.95)
		r := load.finish()
		c.logf("share of zone a by half second: %s", zoneTimeline(r.samples, 500*time.Millisecond))
		during, n := zoneShare(r.samples, "a", slowAt+time.Second, fastAt)
		p50, p99 := zonePercentiles(r.samples, slowAt+time.Second, fastAt)
		c.logf("RESULT local instance slowed to %v an answer under %d GET/s: %d sent, %d failed; zone a took %.1f %% before, %.1f %% of %d answers while slow (p50 %v p99 %v), ≥ 95 %% again over the second ending %v after it was fast again",
			slow, rps, r.sent, r.failed, 100*before, 100*during, n, p50, p99, back.Round(100*time.Millisecond))
		if r.failed > 0 {
			t.Errorf("%d of %d requests failed, want 0: %q", r.failed, r.sent, r.errs)
		}
		if during > 0.5 {
			t.Errorf("zone a kept %.1f %% of the requests while its instance took %v an answer and another zone %v: want most to spill over", 100*during, slow, zoneRTT)
		}
	})

	// After the load the far estimates hold again, and near is still told
	// from far (under half of it). Polled: Vivaldi wanders with the probes'
	// round trips, and under load those include queueing in netdelay (one
	// CI run ended with h1-h4 at 1.31 × the delay, and a snapshot failed).
	ref.nearMax = ref.far / 2
	back := nsPoll(t, 20*time.Second, 250*time.Millisecond, "the coordinates to match the delays after the load", func() (bool, string) {
		var ok bool
		var state string
		est, ok, state = zoneEstimates(h1, ref)
		return ok, state
	})
	c.logf("RESULT coordinates at the end (matching %v after the load): %s", back.Round(10*time.Millisecond), zoneDescribe(est, "h1"))
}

// zonePhase runs one phase of the scenario, logging its start and end.
func zonePhase(c *nsCluster, name string, f func()) {
	c.logf("=== %s", name)
	f()
	c.logf("=== %s: done", name)
}

// zoneServiceDesc says what each service of the scenario balances with.
var zoneServiceDesc = map[string]string{
	"web":     "(least_request, zone-aware: the default)",
	"web-rr":  "(round_robin, locality off)",
	"web-lat": "(latency: Vivaldi, locality off)",
	"web-lr":  "(least_request, locality off)",
}

// zoneBuildNetdelay builds testdata/netdelay into dir.
func zoneBuildNetdelay(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "netdelay")
	took := testutil.Build(t, "", bin, "./testdata/netdelay", []string{"CGO_ENABLED=0"})
	t.Logf("built netdelay in %v", took.Round(time.Millisecond))
	return bin
}

// zoneDelays delays every packet a host sends to a host of another zone by
// zoneDelay: a netdelay in each namespace, and an iptables rule per
// destination queueing to it. The controller's traffic is not delayed.
// It skips the test when the kernel has no NFQUEUE.
func zoneDelays(t *testing.T, c *nsCluster, netdelay string) {
	t.Helper()
	// At the end the rules go first: a packet queued to a netdelay that is
	// gone is dropped, and the connections of the agents killed next
	// would resend their FINs into nothing, keeping their namespaces (and
	// veths) alive for minutes after the test.
	var procs []*nsProc
	t.Cleanup(func() {
		for _, h := range c.hosts {
			nsRun("ip", "netns", "exec", h.ns, "iptables", "-w", "-t", "mangle", "-F", "POSTROUTING")
		}
		for _, p := range procs {
			p.kill()
		}
	})
	for _, h := range c.hosts {
		logPath := filepath.Join(c.dir, h.name+"-netdelay.log")
		p := nsStart(t, h.ns, logPath, netdelay, "-queue", "1="+zoneDelay.String())
		procs = append(procs, p)
		nsPoll(t, 10*time.Second, 20*time.Millisecond, h.name+"'s netdelay to bind its queue", func() (bool, string) {
			b, _ := os.ReadFile(logPath)
			if !p.running() {
				if strings.Contains(string(b), "no NFQUEUE") {
					t.Skipf("needs NFQUEUE (CONFIG_NETFILTER_NETLINK_QUEUE) for the delay between zones: %s", nsTail(logPath, 1))
				}
				t.Fatalf("%s: netdelay exited: %s", h.name, nsTail(logPath, 5))
			}
			return strings.Contains(string(b), "netdelay: ready"), nsTail(logPath, 1)
		})
		for _, o := range c.hosts {
			if zoneOf[o.name] == zoneOf[h.name] {
				continue
			}
			out, err := nsRun("ip", "netns", "exec", h.ns, "iptables", "-w", "-t", "mangle", "-A", "POSTROUTING",
				"-o", "eth0", "-d", o.ip+"/32", "-j", "NFQUEUE", "--queue-num", "1")
			if err != nil && strings.Contains(out, "NFQUEUE") {
				t.Skipf("needs the iptables NFQUEUE target (CONFIG_NETFILTER_XT_TARGET_NFQUEUE) for the delay between zones: %v", err)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
}

// zoneRTTs are the round trips measured within a zone and across zones,
// and the largest estimate within a zone that counts as near.
type zoneRTTs struct{ near, far, nearMax time.Duration }

// settled reports whether a coordinate estimate between two nodes, in the
// same zone or not, matches: an estimate across zones within 30 % of the
// measured round trip, one within a zone under nearMax. (Vivaldi's
// estimates of sub-millisecond links are a few milliseconds off, and
// wander: what the latency policy needs is near told from far.)
func (r zoneRTTs) settled(d time.Duration, sameZone bool) bool {
	if sameZone {
		return d < r.nearMax
	}
	return d >= r.far*7/10 && d <= r.far*13/10
}

// zoneMeasureRTT measures the round trip from one host to another's
// backend, with TCP connects from the first host's namespace.
func zoneMeasureRTT(t *testing.T, from, to *nsHost, netdelay string) time.Duration {
	t.Helper()
	ip, port := to.backendAddr()
	out := nsMust(t, "ip", "netns", "exec", from.ns, netdelay, "-rtt", net.JoinHostPort(ip, strconv.Itoa(port)), "-count", "21")
	var addr string
	var median, least, most int64
	if _, err := fmt.Sscanf(out, "rtt %s median_ns %d min_ns %d max_ns %d", &addr, &median, &least, &most); err != nil {
		t.Fatalf("netdelay -rtt: %q: %v", out, err)
	}
	from.c.logf("round trip %s → %s: median %v, min %v, max %v (21 connects)", from.name, to.name,
		time.Duration(median).Round(10*time.Microsecond), time.Duration(least).Round(10*time.Microsecond), time.Duration(most).Round(10*time.Microsecond))
	return time.Duration(median)
}

// zoneEstimates returns every pairwise round-trip estimate from the
// coordinates h knows (/v1/coordinate/nodes), and whether each matches the
// network (zoneRTTs.settled).
func zoneEstimates(h *nsHost, ref zoneRTTs) (map[[2]string]time.Duration, bool, string) {
	var entries []struct {
		Node  string
		Coord gossip.Coordinate
	}
	if err := h.getJSON("/v1/coordinate/nodes", &entries); err != nil {
		return nil, false, err.Error()
	}
	if len(entries) != len(zoneOf) {
		return nil, false, fmt.Sprintf("%d coordinates, want %d", len(entries), len(zoneOf))
	}
	est := map[[2]string]time.Duration{}
	var off []string
	for i, a := range entries {
		for _, b := range entries[i+1:] {
			d, err := a.Coord.DistanceTo(b.Coord)
			if err != nil {
				return nil, false, fmt.Sprintf("%s-%s: %v", a.Node, b.Node, err)
			}
			est[[2]string{a.Node, b.Node}] = d
			est[[2]string{b.Node, a.Node}] = d
			if !ref.settled(d, zoneOf[a.Node] == zoneOf[b.Node]) {
				off = append(off, fmt.Sprintf("%s-%s %v", a.Node, b.Node, d.Round(10*time.Microsecond)))
			}
		}
	}
	sort.Strings(off)
	return est, len(off) == 0, "off: " + strings.Join(off, ", ")
}

// zoneDescribe lists the estimates from one node to the others.
func zoneDescribe(est map[[2]string]time.Duration, from string) string {
	var parts []string
	for _, to := range []string{"h1", "h2", "h3", "h4"} {
		if to != from {
			parts = append(parts, fmt.Sprintf("%s (%s) %v", to, zoneOf[to], est[[2]string{from, to}].Round(10*time.Microsecond)))
		}
	}
	return strings.Join(parts, ", ")
}

// zoneShare returns the share of the answers to requests started in
// [from, to) that came from zone, and how many answers there were.
func zoneShare(samples []nsSample, zone string, from, to time.Duration) (float64, int) {
	var in, n int
	for _, s := range samples {
		if s.by == "" || s.at < from || s.at >= to {
			continue
		}
		n++
		if zoneOf[s.by] == zone {
			in++
		}
	}
	if n == 0 {
		return 0, 0
	}
	return float64(in) / float64(n), n
}

// zoneTimeline describes the share of zone a among the answers, by step
// of the load's time.
func zoneTimeline(samples []nsSample, step time.Duration) string {
	var parts []string
	for from := time.Duration(0); ; from += step {
		share, n := zoneShare(samples, "a", from, from+step)
		if n == 0 {
			break
		}
		parts = append(parts, fmt.Sprintf("%.0f", 100*share))
	}
	return strings.Join(parts, " ")
}

// zonePercentiles returns p50 and p99 of the requests started in [from, to).
func zonePercentiles(samples []nsSample, from, to time.Duration) (p50, p99 time.Duration) {
	var lats []time.Duration
	for _, s := range samples {
		if s.at >= from && s.at < to {
			lats = append(lats, s.lat)
		}
	}
	if len(lats) == 0 {
		return 0, 0
	}
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	return lats[len(lats)/2].Round(100 * time.Microsecond), lats[len(lats)*99/100].Round(100 * time.Microsecond)
}

// zoneLatencies returns the median latency of the answers from h1's zone
// and of those from the others.
func zoneLatencies(samples []nsSample) (inZone, across time.Duration) {
	var a, o []time.Duration
	for _, s := range samples {
		switch {
		case s.by == "":
		case zoneOf[s.by] == "a":
			a = append(a, s.lat)
		default:
			o = append(o, s.lat)
		}
	}
	median := func(l []time.Duration) time.Duration {
		if len(l) == 0 {
			return 0
		}
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
		return l[len(l)/2].Round(10 * time.Microsecond)
	}
	return median(a), median(o)
}

// snapshot returns the requests of a running load answered so far.
func (l *nsLoad) snapshot() []nsSample {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]nsSample(nil), l.lats...)
}

// zoneWaitLocal waits until at least share of the answers to the requests
// of a second after since (on the load's clock) came from zone a, and
// returns how long after since that second ended.
func zoneWaitLocal(t *testing.T, l *nsLoad, since time.Duration, share float64) time.Duration {
	t.Helper()
	var from time.Duration
	nsPoll(t, 45*time.Second, 100*time.Millisecond, fmt.Sprintf("%.0f %% of the traffic back in zone a", 100*share), func() (bool, string) {
		// The last second whose requests have had time to be answered.
		from = l.elapsed() - 1200*time.Millisecond
		got, n := zoneShare(l.snapshot(), "a", from, from+time.Second)
		return n > 0 && got >= share && from > since, fmt.Sprintf("%.1f %% of %d", 100*got, n)
	})
	return from + time.Second - since
}

// zoneBackendDelay makes h's backend answer d late (0: at once).
func zoneBackendDelay(t *testing.T, h *nsHost, d time.Duration) {
	t.Helper()
	ip, port := h.backendAddr()
	req, err := http.NewRequest(http.MethodPut, "http://"+net.JoinHostPort(ip, strconv.Itoa(port))+"/backend/delay?d="+d.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := h.c.client.Do(req)
	if err != nil {
		t.Fatalf("%s: backend delay %v: %v", h.name, d, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: backend delay %v: %s", h.name, d, resp.Status)
	}
}
