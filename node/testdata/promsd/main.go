// Command promsd runs Prometheus's own service discovery (the code behind
// consul_sd_configs) against a prometheus.yml and prints the targets it
// finds as JSON, one object of labels per target, then exits.
//
//	promsd -config prometheus.yml -want 3 -timeout 30s
//
// It lives in a nested module so that Prometheus and its many dependencies
// stay out of Shoal's go.mod; node's tests build and run it.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery"
	_ "github.com/prometheus/prometheus/discovery/consul" // registers consul_sd_configs
	"github.com/prometheus/prometheus/discovery/targetgroup"
)

func main() {
	cfgPath := flag.String("config", "prometheus.yml", "Prometheus configuration `FILE`")
	want := flag.Int("want", 1, "print once at least `N` targets are discovered")
	timeout := flag.Duration("timeout", 30*time.Second, "give up after `DURATION`")
	flag.Parse()
	if err := run(*cfgPath, *want, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "promsd:", err)
		os.Exit(1)
	}
}

func run(cfgPath string, want int, timeout time.Duration) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg, err := config.LoadFile(cfgPath, false, log)
	if err != nil {
		return err
	}
	sets := make(map[string]discovery.Configs)
	for _, sc := range cfg.ScrapeConfigs {
		sets[sc.JobName] = sc.ServiceDiscoveryConfigs
	}

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	reg := prometheus.NewRegistry()
	sdMetrics, err := discovery.CreateAndRegisterSDMetrics(reg)
	if err != nil {
		return err
	}
	m := discovery.NewManager(ctx, log, reg, sdMetrics, discovery.Updatert(100*time.Millisecond))
	if m == nil {
		return fmt.Errorf("discovery manager: could not register its metrics")
	}
	if err := m.ApplyConfig(sets); err != nil {
		return err
	}
	go m.Run()

	var last []map[string]string
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("found %d targets in %v, want %d: %v", len(last), timeout, want, last)
		case groups := <-m.SyncCh():
			last = flatten(groups)
			if len(last) >= want {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(last)
			}
		}
	}
}

// flatten merges each target's labels with its group's and the job name.
func flatten(groups map[string][]*targetgroup.Group) []map[string]string {
	var out []map[string]string
	for job, tgs := range groups {
		for _, tg := range tgs {
			for _, t := range tg.Targets {
				labels := map[string]string{"job": job}
				for k, v := range tg.Labels {
					labels[string(k)] = string(v)
				}
				for k, v := range t {
					labels[string(k)] = string(v)
				}
				out = append(out, labels)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i]["__address__"] < out[j]["__address__"] })
	return out
}
