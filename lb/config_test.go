package lb

import (
	"strings"
	"testing"
	"time"
)

func TestDefaultConfigIsValid(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPAddr != "127.0.0.1:15001" || cfg.Domain != "shoal" {
		t.Fatalf("defaults drifted from DESIGN.md: %s, %s", cfg.HTTPAddr, cfg.Domain)
	}
	tc := testConfig()
	if err := tc.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidateReportsEverything(t *testing.T) {
	cfg := DefaultConfig()
	cfg.HTTPAddr = "nope"
	cfg.Domain = ""
	cfg.Upstreams = map[string]string{"": "127.0.0.1:1", "db": "nope"}
	cfg.Policy = "fastest"
	cfg.Policies = map[string]string{"web": "slowest"}
	cfg.HashKey = "query:id"
	cfg.ConnectTimeout = 0
	cfg.Timeout = -time.Second
	cfg.MaxRetries = -1
	cfg.RetryBudget = 2
	cfg.MaxEjectionShare = -0.5
	cfg.BaseEjection = time.Minute
	cfg.MaxEjection = time.Second
	err := cfg.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`proxy address "nope"`, "domain is empty", "empty service name", `upstream db="nope"`,
		`policy "fastest"`, `policy of web "slowest"`, `hash key "query:id"`, "connect timeout",
		"timeouts must not be negative", "counts must not be negative", "retry budget",
		"max ejection share", "ejection times",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
	if _, err := New(cfg, newFakeView()); err == nil || !strings.HasPrefix(err.Error(), "proxy: ") {
		t.Fatalf("New with a bad config: %v", err)
	}
}
