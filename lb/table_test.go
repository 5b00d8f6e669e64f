package lb

import (
	"math"
	"regexp"
	"strings"
	"testing"
	"time"
)

func split(service, subset string, weight float64) Split {
	return Split{Weight: weight, Target: Target{service, subset}}
}

func TestNewTableRefusesBadRouting(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    Routing
		want string
	}{
		{"weights short of 100", Routing{Chains: map[string]Chain{"web": {Default: []Split{split("web", "a", 50), split("web", "b", 49.99)}}}},
			"add up to 99.99"},
		{"weight over 100", Routing{Chains: map[string]Chain{"web": {Default: []Split{split("web", "a", 101)}}}},
			"want 0-100"},
		{"negative weight", Routing{Chains: map[string]Chain{"web": {Default: []Split{split("web", "a", -1), split("web", "b", 101)}}}},
			"want 0-100"},
		{"split without service", Routing{Chains: map[string]Chain{"web": {Default: []Split{split("", "a", 100)}}}},
			"no service"},
		{"rewrite without a prefix", Routing{Chains: map[string]Chain{"web": {Routes: []Route{{
			Match: RouteMatch{PathRegex: regexp.MustCompile("^/a")}, PrefixRewrite: "/", Splits: []Split{split("web", "", 100)}}}}}},
			"PrefixRewrite needs"},
		{"two path matches", Routing{Chains: map[string]Chain{"web": {Routes: []Route{{
			Match: RouteMatch{PathExact: "/a", PathPrefix: "/b"}, Splits: []Split{split("web", "", 100)}}}}}},
			"at most one of"},
		{"relative path", Routing{Chains: map[string]Chain{"web": {Routes: []Route{{
			Match: RouteMatch{PathPrefix: "api"}, Splits: []Split{split("web", "", 100)}}}}}},
			"must begin with /"},
		{"header match without a condition", Routing{Chains: map[string]Chain{"web": {Routes: []Route{{
			Match: RouteMatch{Headers: []HeaderMatch{{Name: "x"}}}, Splits: []Split{split("web", "", 100)}}}}}},
			"header match"},
		{"route without destination", Routing{Chains: map[string]Chain{"web": {Routes: []Route{{}}}}},
			"no destination"},
		{"retry on a status that is none", Routing{Chains: map[string]Chain{"web": {Routes: []Route{{
			Retry: &RetryPolicy{NumRetries: 1, OnStatus: []int{42}}, Splits: []Split{split("web", "", 100)}}}}}},
			"retry on status 42"},
		{"unknown policy", Routing{Targets: map[Target]Resolved{{Service: "web"}: {Policy: "fastest"}}},
			`unknown policy "fastest"`},
		{"failover to itself", Routing{Targets: map[Target]Resolved{{Service: "web"}: {Failover: []Target{{Service: "web"}}}}},
			"failover to"},
		{"unknown locality", Routing{Targets: map[Target]Resolved{{Service: "web"}: {Locality: "near"}}},
			"unknown locality"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewTable(tc.r)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewTable error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestSplitShares draws from a 90/10 split and a split with a zero leg:
// the shares are as configured, and a zero leg never gets anything.
func TestSplitShares(t *testing.T) {
	tb, err := NewTable(Routing{Chains: map[string]Chain{
		"web": {Default: []Split{split("web", "v1", 90), split("web", "v2", 10)}},
		"api": {Default: []Split{split("api", "old", 0), split("api", "new", 100)}},
		"odd": {Default: []Split{split("odd", "a", 33.33), split("odd", "b", 33.33), split("odd", "c", 33.34)}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	const n = 200_000
	for service, want := range map[string]map[string]float64{
		"web": {"v1": 0.9, "v2": 0.1},
		"api": {"new": 1},
		"odd": {"a": 0.3333, "b": 0.3333, "c": 0.3334},
	} {
		got := map[string]int{}
		def := tb.chainOf(service).def
		for range n {
			got[def.pick().target.Subset]++
		}
		for subset, share := range want {
			if d := math.Abs(float64(got[subset])/n - share); d > 0.005 {
				t.Errorf("%s: subset %s got %d of %d, want a share of %v", service, subset, got[subset], n, share)
			}
		}
		if len(got) != len(want) {
			t.Errorf("%s: picked %v, want only %v", service, got, want)
		}
	}
}

// TestTableTargets checks what a target's settings resolve to: its own
// entry, else its service's (without the service's failover), else none.
func TestTableTargets(t *testing.T) {
	tb, err := NewTable(Routing{
		Chains: map[string]Chain{"web": {Default: []Split{split("web", "v2", 100)}}},
		Targets: map[Target]Resolved{
			{Service: "web"}:               {Policy: PolicyRoundRobin, ConnectTimeout: time.Second, Failover: []Target{{Service: "backup"}}},
			{Service: "web", Subset: "v1"}: {Policy: PolicyRandom, Failover: []Target{{Service: "web", Subset: "v2"}}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if r := tb.resolved(Target{"web", "v1"}); r.Policy != PolicyRandom || len(r.failover) != 1 || r.failover[0].Subset != "v2" {
		t.Errorf("web/v1 resolves to %+v", r)
	}
	v2 := tb.resolved(Target{"web", "v2"})
	if v2.Policy != PolicyRoundRobin || v2.ConnectTimeout != time.Second || len(v2.failover) != 0 {
		t.Errorf("web/v2 (only named by a split) resolves to %+v, want web's settings without its failover", v2)
	}
	if r := tb.resolved(Target{"web", ""}); len(r.failover) != 1 || r.failover[0].Service != "backup" {
		t.Errorf("web resolves to %+v", r)
	}
	if r := tb.resolved(Target{"db", ""}); r != nil {
		t.Errorf("db resolves to %+v, want nothing", r)
	}
	if tb.chainOf("db") != nil || (*Table)(nil).chainOf("web") != nil {
		t.Error("a chain for a name without one")
	}
}

func TestRetryRulesStatus(t *testing.T) {
	tb, err := NewTable(Routing{Chains: map[string]Chain{"web": {Routes: []Route{{
		Retry: &RetryPolicy{NumRetries: 2, OnStatus: []int{100, 503, 599}}, Splits: []Split{split("web", "", 100)},
	}}}}})
	if err != nil {
		t.Fatal(err)
	}
	r := tb.chainOf("web").routes[0].retry
	for status, want := range map[int]bool{100: true, 503: true, 599: true, 502: false, 200: false, 99: false, 600: false} {
		if r.has(status) != want {
			t.Errorf("has(%d) = %v, want %v", status, !want, want)
		}
	}
	if (*retryRules)(nil).has(503) {
		t.Error("no rules retry 503")
	}
}
