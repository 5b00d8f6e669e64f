package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// The acceptance checks with the real Prometheus: its Consul
// discovery (the code behind consul_sd_configs, built from the nested
// module in testdata/promsd so that Shoal's go.mod stays free of it) finds
// Shoal's services, and a Prometheus server scrapes an agent's /metrics.

// buildPromSD builds testdata/promsd, skipping the test when its modules
// cannot be downloaded.
func buildPromSD(t *testing.T) string {
	t.Helper()
	goTool := testutil.GoTool()
	dir, err := filepath.Abs(filepath.Join("testdata", "promsd"))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "promsd")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly -buildvcs=false")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		if downloadFailed(string(out)) {
			t.Skipf("cannot build testdata/promsd: Prometheus's modules could not be downloaded (no network or module proxy?); "+
				"run `go mod download` in node/testdata/promsd to fetch them:\n%s", out)
		}
		t.Fatalf("go build in %s: %v\n%s", dir, err, out)
	}
	t.Logf("built testdata/promsd in %v", time.Since(start).Round(time.Millisecond))
	return bin
}

// downloadFailed recognizes go build failing to fetch modules.
func downloadFailed(out string) bool {
	for _, s := range []string{"dial tcp", "no such host", "i/o timeout", "connection refused",
		"proxy.golang.org", "TLS handshake timeout", "network is unreachable", "GOPROXY=off", "GOFLAGS=-mod=mod"} {
		if strings.Contains(out, s) {
			return true
		}
	}
	return false
}

func TestPrometheusConsulDiscovery(t *testing.T) {
	bin := buildPromSD(t)
	as := startAgents(t, 2)
	putOK(t, as[0], "/v1/agent/service/register", map[string]any{"ID": "web-1", "Name": "web", "Tags": []string{"v1"}, "Address": "10.0.0.1", "Port": 8001})
	putOK(t, as[1], "/v1/agent/service/register", map[string]any{"ID": "web-2", "Name": "web", "Tags": []string{"v2"}, "Port": 8002,
		"Meta": map[string]string{"version": "2.0"}})
	putOK(t, as[1], "/v1/agent/service/register", map[string]any{"ID": "api-1", "Name": "api", "Address": "10.0.0.3", "Port": 9000})
	testutil.Wait(t, 10*time.Second, "services replicated to n0", func() bool {
		return len(as[0].Cluster().Catalog().AllInstances()) == 3
	})

	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	server := as[0].HTTPAddr()
	writePromConfig(t, cfg, fmt.Sprintf(`scrape_configs:
  - job_name: shoal
    consul_sd_configs:
      - server: %[1]q
        refresh_interval: 1s
  - job_name: web-v2
    consul_sd_configs:
      - server: %[1]q
        services: [web]
        tags: [v2]
`, server))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-config", cfg, "-want", "4", "-timeout", "30s")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("promsd: %v\n%s", err, stderr.String())
	}
	var targets []map[string]string
	if err := json.Unmarshal(out, &targets); err != nil {
		t.Fatalf("promsd output: %v\n%s", err, out)
	}
	t.Logf("Prometheus discovered:\n%s", out)

	byJob := map[string]map[string]map[string]string{}
	for _, tg := range targets {
		if byJob[tg["job"]] == nil {
			byJob[tg["job"]] = map[string]map[string]string{}
		}
		byJob[tg["job"]][tg["__address__"]] = tg
	}
	all := byJob["shoal"]
	if len(all) != 3 || all["10.0.0.1:8001"] == nil || all["127.0.0.1:8002"] == nil || all["10.0.0.3:9000"] == nil {
		t.Fatalf("job shoal targets %v, want 10.0.0.1:8001, 127.0.0.1:8002 and 10.0.0.3:9000", targetAddrs(all))
	}
	want := map[string]string{
		"__meta_consul_service":                  "web",
		"__meta_consul_service_id":               "web-2",
		"__meta_consul_node":                     "n1",
		"__meta_consul_dc":                       "dc1",
		"__meta_consul_tags":                     ",v2,",
		"__meta_consul_service_port":             "8002",
		"__meta_consul_address":                  "127.0.0.1",
		"__meta_consul_health":                   "passing",
		"__meta_consul_service_metadata_version": "2.0",
	}
	for k, v := range want {
		if got := all["127.0.0.1:8002"][k]; got != v {
			t.Errorf("web-2's %s = %q, want %q", k, got, v)
		}
	}
	if got := all["10.0.0.3:9000"]["__meta_consul_service"]; got != "api" {
		t.Errorf("api-1's service label %q", got)
	}
	if v2 := byJob["web-v2"]; len(v2) != 1 || v2["127.0.0.1:8002"] == nil {
		t.Errorf("job web-v2 (services [web], tags [v2]) targets %v, want only 127.0.0.1:8002", targetAddrs(v2))
	}
}

func TestPrometheusScrapesAgent(t *testing.T) {
	prom, err := exec.LookPath("prometheus")
	if err != nil {
		if _, statErr := os.Stat("/usr/bin/prometheus"); statErr != nil {
			t.Skip("no Prometheus server: install the Debian package prometheus (/usr/bin/prometheus) to run this test")
		}
		prom = "/usr/bin/prometheus"
	}
	a := startAgent(t, "n0", nil)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	writePromConfig(t, cfg, fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: shoal
    static_configs:
      - targets: [%q]
`, a.HTTPAddr()))

	web := promFreeAddr(t)
	logPath := filepath.Join(dir, "prometheus.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(prom, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+web, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	promLog := func() string { b, _ := os.ReadFile(logPath); return string(b) }

	query := func(q string) (string, bool) {
		resp, err := http.Get("http://" + web + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return "", false
		}
		defer resp.Body.Close()
		var r struct {
			Status string
			Data   struct {
				Result []struct {
					Value [2]any
				}
			}
		}
		if json.NewDecoder(resp.Body).Decode(&r) != nil || r.Status != "success" || len(r.Data.Result) == 0 {
			return "", false
		}
		v, _ := r.Data.Result[0].Value[1].(string)
		return v, true
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if v, ok := query(`shoal_members{job="shoal",status="alive"}`); ok {
			if v != "1" {
				t.Fatalf("Prometheus has shoal_members{status=alive} = %s, want 1", v)
			}
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("prometheus exited: %v\n%s", err, promLog())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus at %s has no shoal_members after 60s\n%s", web, promLog())
		}
		time.Sleep(200 * time.Millisecond)
	}
	for q, want := range map[string]string{`up{job="shoal"}`: "1", `count(go_goroutines{job="shoal"} > 0)`: "1"} {
		if v, ok := query(q); !ok || v != want {
			t.Errorf("Prometheus query %s = %q (found %v), want %s", q, v, ok, want)
		}
	}
}

// freeAddr returns a loopback address with a port that was free a moment
// ago, for servers that cannot report the port they bound.
func promFreeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func writePromConfig(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func targetAddrs[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
