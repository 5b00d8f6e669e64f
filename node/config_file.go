package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/hcl"
)

// FileConfig is the agent's configuration file, HCL or JSON (HCL's parser
// reads both). Keys are snake_case; unset keys keep their defaults.
//
//	node_name  = "web-1"
//	bind_addr  = "10.0.0.5:7946"
//	join       = ["10.0.0.2:7946", "10.0.0.3:7946"]
//	data_dir   = "/var/lib/shoal"
//	reap_after = "72h"
type FileConfig struct {
	Dev           *bool    `hcl:"dev"`
	NodeName      *string  `hcl:"node_name"`
	Datacenter    *string  `hcl:"datacenter"`
	BindAddr      *string  `hcl:"bind_addr"`
	AdvertiseAddr *string  `hcl:"advertise_addr"`
	RPCAddr       *string  `hcl:"rpc_addr"`
	Join          []string `hcl:"join"`
	HTTPAddr      *string  `hcl:"http_addr"`
	DataDir       *string  `hcl:"data_dir"`
	ReapAfter     *string  `hcl:"reap_after"`
	LogLevel      *string  `hcl:"log_level"`
	LogJSON       *bool    `hcl:"log_json"`
	ProxyAddr     *string  `hcl:"proxy_addr"`
	Encrypt       *string  `hcl:"encrypt"`
	// DNS interface (see Config.DNSAddr, Domain, DNSTTL).
	DNSAddr   *string `hcl:"dns_addr"`
	DNSDomain *string `hcl:"dns_domain"`
	DNSTTL    *string `hcl:"dns_ttl"`
	// HTTP API access and hardening (see HTTPConfig).
	HTTPToken             *string  `hcl:"http_token"`
	HTTPTokenReads        *bool    `hcl:"http_token_reads"`
	HTTPAllowedHosts      []string `hcl:"http_allowed_hosts"`
	HTTPMaxConnsPerClient *int     `hcl:"http_max_conns_per_client"`
	HTTPTLSCert           *string  `hcl:"http_tls_cert"`
	HTTPTLSKey            *string  `hcl:"http_tls_key"`
	// Upstreams are "NAME=ADDR" TCP listeners, as --upstream.
	Upstreams  []string          `hcl:"upstreams"`
	LBPolicy   *string           `hcl:"lb_policy"`
	LBPolicies map[string]string `hcl:"lb_policies"`
	// NodeMeta is Config.NodeMeta, as --node-meta.
	NodeMeta map[string]string `hcl:"node_meta"`
	// Zone is Config.Zone, as --zone.
	Zone *string `hcl:"zone"`
	// ProxyDebugHeaders is Proxy.DebugHeaders, as --proxy-debug-headers.
	ProxyDebugHeaders *bool `hcl:"proxy_debug_headers"`
	// The node PKI (see Config.CAFile).
	CAFile       *string `hcl:"ca_file"`
	NodeCertFile *string `hcl:"node_cert_file"`
	NodeKeyFile  *string `hcl:"node_key_file"`
	LeafTTL      *string `hcl:"leaf_ttl"`
	// DefaultIntention is the mesh's action when no intention matches.
	DefaultIntention *string `hcl:"default_intention"`
}

var knownFileKeys = []string{"dev", "node_name", "datacenter", "bind_addr", "advertise_addr", "rpc_addr",
	"join", "http_addr", "data_dir", "reap_after", "log_level", "log_json",
	"proxy_addr", "upstreams", "lb_policy", "lb_policies", "encrypt", "dns_addr", "dns_domain", "dns_ttl",
	"http_token", "http_token_reads", "http_allowed_hosts", "http_max_conns_per_client", "http_tls_cert", "http_tls_key", "node_meta",
	"ca_file", "node_cert_file", "node_key_file", "leaf_ttl",
	"default_intention", "zone", "proxy_debug_headers"}

// LoadConfigFile reads a configuration file. Unknown keys are an error, so a
// typo never goes unnoticed.
func LoadConfigFile(path string) (*FileConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	// HCL's own JSON parser drops what it cannot read; a JSON file must be
	// valid JSON before it gets there.
	if trimmed := bytes.TrimSpace(b); len(trimmed) > 0 && trimmed[0] == '{' && !json.Valid(trimmed) {
		var v any
		err := json.Unmarshal(trimmed, &v)
		return nil, fmt.Errorf("config file %s: invalid JSON: %v", path, err)
	}
	var raw map[string]any
	if err := hcl.Decode(&raw, string(b)); err != nil {
		return nil, fmt.Errorf("config file %s: %s", path, strings.ReplaceAll(err.Error(), "\n", " "))
	}
	for k := range raw {
		known := false
		for _, kk := range knownFileKeys {
			known = known || k == kk
		}
		if !known {
			return nil, fmt.Errorf("config file %s: unknown key %q (known: %s)", path, k, strings.Join(knownFileKeys, ", "))
		}
	}
	var fc FileConfig
	if err := hcl.Decode(&fc, string(b)); err != nil {
		return nil, fmt.Errorf("config file %s: %s", path, strings.ReplaceAll(err.Error(), "\n", " "))
	}
	return &fc, nil
}

// Apply copies the file's settings over c.
func (fc *FileConfig) Apply(c *Config) error {
	set := func(dst *string, src *string) {
		if src != nil {
			*dst = *src
		}
	}
	set(&c.NodeName, fc.NodeName)
	set(&c.Datacenter, fc.Datacenter)
	set(&c.BindAddr, fc.BindAddr)
	set(&c.AdvertiseAddr, fc.AdvertiseAddr)
	set(&c.RPCAddr, fc.RPCAddr)
	set(&c.HTTPAddr, fc.HTTPAddr)
	set(&c.DataDir, fc.DataDir)
	if fc.Join != nil {
		c.Join = fc.Join
	}
	set(&c.Proxy.HTTPAddr, fc.ProxyAddr)
	set(&c.Encrypt, fc.Encrypt)
	set(&c.CAFile, fc.CAFile)
	set(&c.NodeCertFile, fc.NodeCertFile)
	set(&c.NodeKeyFile, fc.NodeKeyFile)
	set(&c.DefaultIntention, fc.DefaultIntention)
	set(&c.Zone, fc.Zone)
	if fc.ProxyDebugHeaders != nil {
		c.Proxy.DebugHeaders = *fc.ProxyDebugHeaders
	}
	if fc.LeafTTL != nil {
		d, err := time.ParseDuration(*fc.LeafTTL)
		if err != nil {
			return fmt.Errorf("config file: leaf_ttl %q: want a duration such as 24h", *fc.LeafTTL)
		}
		c.LeafTTL = d
	}
	set(&c.DNSAddr, fc.DNSAddr)
	set(&c.Domain, fc.DNSDomain)
	if fc.DNSTTL != nil {
		d, err := time.ParseDuration(*fc.DNSTTL)
		if err != nil {
			return fmt.Errorf("config file: dns_ttl %q: want a duration such as 0s or 30s", *fc.DNSTTL)
		}
		c.DNSTTL = d
	}
	set(&c.HTTP.Token, fc.HTTPToken)
	if fc.HTTPTokenReads != nil {
		c.HTTP.TokenReads = *fc.HTTPTokenReads
	}
	if fc.HTTPAllowedHosts != nil {
		c.HTTP.AllowedHosts = fc.HTTPAllowedHosts
	}
	if fc.HTTPMaxConnsPerClient != nil {
		c.HTTP.MaxConnsPerClient = *fc.HTTPMaxConnsPerClient
	}
	set(&c.HTTP.TLSCertFile, fc.HTTPTLSCert)
	set(&c.HTTP.TLSKeyFile, fc.HTTPTLSKey)
	set(&c.Proxy.Policy, fc.LBPolicy)
	if fc.LBPolicies != nil {
		c.Proxy.Policies = fc.LBPolicies
	}
	if fc.NodeMeta != nil {
		c.NodeMeta = fc.NodeMeta
	}
	if fc.Upstreams != nil {
		ups, err := ParseUpstreams(fc.Upstreams)
		if err != nil {
			return fmt.Errorf("config file: %w", err)
		}
		c.Proxy.Upstreams = ups
	}
	if fc.ReapAfter != nil {
		d, err := time.ParseDuration(*fc.ReapAfter)
		if err != nil {
			return fmt.Errorf("config file: reap_after %q: want a duration such as 72h", *fc.ReapAfter)
		}
		c.ReapAfter = d
	}
	return nil
}

// ParseUpstreams reads "NAME=HOST:PORT" upstream definitions.
func ParseUpstreams(defs []string) (map[string]string, error) {
	out := make(map[string]string, len(defs))
	for _, d := range defs {
		name, addr, ok := strings.Cut(d, "=")
		if !ok || validateName(name) != nil || checkHostPort(addr) != nil {
			return nil, fmt.Errorf("upstream %q: want NAME=IP:PORT with a valid service name", d)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("upstream %q: service %s is listed twice", d, name)
		}
		out[name] = addr
	}
	return out, nil
}
