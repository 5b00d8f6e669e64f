package lb

import (
	"strings"
	"testing"
)

func TestRoute(t *testing.T) {
	tests := []struct {
		host, domain string
		service, tag string
		ok           bool
	}{
		{"web", "shoal", "web", "", true},
		{"web:8080", "shoal", "web", "", true},
		{"web.service.shoal", "shoal", "web", "", true},
		{"web.service.shoal:80", "shoal", "web", "", true},
		{"web.service.shoal.", "shoal", "web", "", true},
		{"web.service.shoal.:80", "shoal", "web", "", true},
		{"v1.web.service.shoal", "shoal", "web", "v1", true},
		{"v1.web.service.shoal:443", "shoal", "web", "v1", true},
		{"WEB", "shoal", "WEB", "", true}, // as-is: the catalog decides what matches
		{"web.service.mesh", "mesh", "web", "", true},
		{"v2.web.service.mesh.", "mesh", "web", "v2", true},

		{"a.b.c.service.shoal", "shoal", "", "", false},
		{"example.com", "shoal", "", "", false},
		{"web.service.consul", "shoal", "", "", false}, // another domain
		{"web.service.shoal", "mesh", "", "", false},
		{"", "shoal", "", "", false},
		{":80", "shoal", "", "", false},
		{".", "shoal", "", "", false},
		{"[::1]:80", "shoal", "", "", false},
		{"[::1]", "shoal", "", "", false},
		{"::1", "shoal", ":", "", true}, // unbracketed IPv6 reads as host ":" port "1": no such service, 503
		{"service.shoal", "shoal", "", "", false},
		{".service.shoal", "shoal", "", "", false},
		{"v1..service.shoal", "shoal", "", "", false},
		{".web.service.shoal", "shoal", "", "", false},
		{"we b", "shoal", "", "", false},
		{"web/x", "shoal", "", "", false},
	}
	for _, tt := range tests {
		service, tag, ok := route(tt.host, tt.domain)
		if service != tt.service || tag != tt.tag || ok != tt.ok {
			t.Errorf("route(%q, %q) = %q, %q, %v; want %q, %q, %v",
				tt.host, tt.domain, service, tag, ok, tt.service, tt.tag, tt.ok)
		}
	}
}

func FuzzRoute(f *testing.F) {
	for _, s := range []string{
		"web", "web:8080", "web.service.shoal", "web.service.shoal.", "v1.web.service.shoal",
		"WEB", "a.b.c.service.shoal", "example.com", "", "[::1]:80", ".service.shoal",
		"v1..service.shoal", "web.service.shoal:", ":", "]:", "[", "web.service.shoal..",
	} {
		f.Add(s, "shoal")
	}
	f.Add("x.y.service.a.b", "a.b")
	f.Fuzz(func(t *testing.T, host, domain string) {
		service, tag, ok := route(host, domain)
		if !ok {
			if service != "" || tag != "" {
				t.Fatalf("route(%q, %q) = %q, %q, false: want empty results", host, domain, service, tag)
			}
			return
		}
		if service == "" || strings.Contains(service, ".") {
			t.Fatalf("route(%q, %q): service %q", host, domain, service)
		}
		if strings.Contains(tag, ".") {
			t.Fatalf("route(%q, %q): tag %q", host, domain, tag)
		}
	})
}
