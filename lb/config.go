package lb

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Config configures a Proxy. Start from DefaultConfig.
type Config struct {
	// HTTPAddr is the HTTP proxy's listen address; empty disables it.
	HTTPAddr string
	// Domain is the service domain in Host routing: NAME.service.DOMAIN.
	Domain string
	// Upstreams maps a service name to the local TCP address of its L4
	// listener (--upstream NAME=ADDR).
	Upstreams map[string]string
	// Policy is the default balancing policy; a service's Meta["lb_policy"]
	// or Policies override it.
	Policy string
	// Policies sets the policy of individual services, winning over Meta.
	Policies map[string]string
	// HashKey is the default key of the hash policy: "ip", "header:NAME" or
	// "cookie:NAME"; a service's Meta["lb_hash_key"] overrides it.
	HashKey string

	// ConnectTimeout bounds a connect to an instance; a timed-out connect is
	// retried on another instance.
	ConnectTimeout time.Duration
	// TryTimeout bounds each try's wait for response headers; 0: no limit.
	TryTimeout time.Duration
	// Timeout bounds a whole request, retries included; 0: no limit (long
	// polls and streams).
	Timeout time.Duration
	// MaxRetries is how many other instances a request may be retried on.
	MaxRetries int
	// RetryBudget is the share of requests that may be retries (0.2: at most
	// 20 % extra load), over and above MinRetriesPerSecond.
	RetryBudget float64
	// MinRetriesPerSecond keeps retries possible at low request rates.
	MinRetriesPerSecond int
	// MaxRequestsPerInstance caps requests in flight per instance; 0: no cap.
	MaxRequestsPerInstance int

	// EjectAfterErrors is how many consecutive connect errors or resets
	// eject an instance; 0 disables ejection on errors.
	EjectAfterErrors int
	// EjectAfter5xx is how many consecutive 5xx answers eject an instance;
	// 0 (the default) disables it.
	EjectAfter5xx int
	// BaseEjection is the first ejection's length; each consecutive ejection
	// adds as much again, up to MaxEjection.
	BaseEjection, MaxEjection time.Duration
	// MaxEjectionShare is the largest share of a pool passive health may
	// eject at once (one instance is always allowed).
	MaxEjectionShare float64

	// Zone is the caller's zone: instances in it are preferred (see
	// locality.go). "": zones are ignored.
	Zone string
	// Distances, when set, estimates round-trip times to other nodes, for
	// the latency policy and adaptive locality; refreshed every
	// DistanceRefresh.
	Distances       Distances
	DistanceRefresh time.Duration

	// DebugHeaders, when set, adds X-Shoal-Instance and X-Shoal-Route to
	// every HTTP answer, naming the instance and the route that served it.
	DebugHeaders bool

	// Mesh, when set, carries connections to instances on other nodes
	// (Instance.Via) through their agents; nil connects to every instance
	// directly.
	Mesh Mesh

	// ShutdownTimeout is how long Shutdown lets in-flight requests and
	// connections finish before closing them.
	ShutdownTimeout time.Duration
	// Logger receives the proxy's logs; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		HTTPAddr:            "127.0.0.1:15001",
		Domain:              "shoal",
		Policy:              DefaultPolicy,
		HashKey:             "ip",
		ConnectTimeout:      time.Second,
		MaxRetries:          2,
		RetryBudget:         0.2,
		MinRetriesPerSecond: 10,
		EjectAfterErrors:    1,
		BaseEjection:        10 * time.Second,
		MaxEjection:         5 * time.Minute,
		MaxEjectionShare:    0.5,
		DistanceRefresh:     time.Second,
		ShutdownTimeout:     10 * time.Second,
	}
}

// Validate reports every problem with the configuration at once.
func (c *Config) Validate() error {
	var errs []error
	if c.HTTPAddr != "" {
		if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			errs = append(errs, fmt.Errorf("proxy address %q: want host:port", c.HTTPAddr))
		}
	}
	if c.Domain == "" {
		errs = append(errs, errors.New("domain is empty"))
	}
	for name, addr := range c.Upstreams {
		if name == "" {
			errs = append(errs, errors.New("upstream with an empty service name"))
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("upstream %s=%q: want host:port", name, addr))
		}
	}
	if !ValidPolicy(c.Policy) {
		errs = append(errs, fmt.Errorf("policy %q: want %s", c.Policy, policyNames))
	}
	for svc, p := range c.Policies {
		if !ValidPolicy(p) {
			errs = append(errs, fmt.Errorf("policy of %s %q: want %s", svc, p, policyNames))
		}
	}
	if _, err := ParseHashSource(c.HashKey); err != nil {
		errs = append(errs, err)
	}
	if c.ConnectTimeout <= 0 {
		errs = append(errs, fmt.Errorf("connect timeout %v: must be positive", c.ConnectTimeout))
	}
	if c.TryTimeout < 0 || c.Timeout < 0 || c.ShutdownTimeout < 0 {
		errs = append(errs, errors.New("timeouts must not be negative"))
	}
	if c.MaxRetries < 0 || c.MinRetriesPerSecond < 0 || c.MaxRequestsPerInstance < 0 ||
		c.EjectAfterErrors < 0 || c.EjectAfter5xx < 0 {
		errs = append(errs, errors.New("counts must not be negative"))
	}
	if c.RetryBudget < 0 || c.RetryBudget > 1 {
		errs = append(errs, fmt.Errorf("retry budget %v: want 0-1", c.RetryBudget))
	}
	if c.MaxEjectionShare < 0 || c.MaxEjectionShare > 1 {
		errs = append(errs, fmt.Errorf("max ejection share %v: want 0-1", c.MaxEjectionShare))
	}
	if c.Distances != nil && c.DistanceRefresh <= 0 {
		errs = append(errs, fmt.Errorf("distance refresh %v: must be positive", c.DistanceRefresh))
	}
	if c.BaseEjection <= 0 || c.MaxEjection < c.BaseEjection {
		errs = append(errs, fmt.Errorf("ejection times %v/%v: base must be positive and at most the max", c.BaseEjection, c.MaxEjection))
	}
	return errors.Join(errs...)
}
