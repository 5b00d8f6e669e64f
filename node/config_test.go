package node

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestConfigProfilesValid(t *testing.T) {
	for name, c := range map[string]Config{
		"default": DefaultConfig(), "dev": DevConfig(), "test": TestConfig("n0"),
	} {
		if name == "default" || name == "dev" {
			c.NodeName = "host-1" // the hostname may not be a valid node name
		}
		if err := c.Validate(); err != nil {
			t.Errorf("%s profile: %v", name, err)
		}
	}
	d := DefaultConfig()
	if d.Datacenter != "dc1" || d.HTTPAddr != "127.0.0.1:8500" || d.BindAddr != "0.0.0.0:7946" || d.ReapAfter != 72*time.Hour {
		t.Errorf("defaults drifted from the README: %+v", d)
	}
}

// TestConfigValidateReportsAll checks that Validate reports every problem
// at once, each naming its setting.
func TestConfigValidateReportsAll(t *testing.T) {
	c := TestConfig("bad name!")
	c.Datacenter = "dc 1"
	c.BindAddr = "localhost:7946"
	c.HTTPAddr = "127.0.0.1:99999"
	c.AdvertiseAddr = "10.0.0.1"
	c.RPCAddr = "x:1"
	c.Join = []string{"10.0.0.2:7946", "10.0.0.3"}
	c.ReapAfter = 0
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate accepted a broken configuration")
	}
	msg := err.Error()
	for _, want := range []string{"node name", "datacenter", "bind", "http-addr", "advertise", "rpc-addr",
		`join "10.0.0.3"`, "reap-after"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not mention %s:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "10.0.0.2") {
		t.Errorf("error mentions the valid join address:\n%s", msg)
	}
	if n := len(strings.Split(msg, "\n")); n < 8 {
		t.Errorf("%d problems reported, want at least 8:\n%s", n, msg)
	}
	if _, err := New(c); err == nil {
		t.Error("New accepted a broken configuration")
	}

	for _, tc := range []struct {
		name   string
		adjust func(*Config)
		want   string
	}{
		{"empty node name", func(c *Config) { c.NodeName = "" }, "node name is empty"},
		{"node name too long", func(c *Config) { c.NodeName = strings.Repeat("a", 64) }, "node name"},
		{"node name with dot", func(c *Config) { c.NodeName = "a.b" }, "node name"},
		{"bind without port", func(c *Config) { c.BindAddr = "127.0.0.1" }, "bind"},
		{"negative reap", func(c *Config) { c.ReapAfter = -time.Second }, "reap-after"},
		{"empty datacenter", func(c *Config) { c.Datacenter = "" }, "datacenter"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := TestConfig("n0")
			tc.adjust(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want an error about %s", err, tc.want)
			}
		})
	}
}

func writeConfigFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfigFile(t *testing.T) {
	const hcl = `
# an agent
node_name  = "web-1"
datacenter = "eu-west"
bind_addr  = "10.0.0.5:7946"
advertise_addr = "192.0.2.5:7946"
rpc_addr   = "10.0.0.5:7947"
join       = ["10.0.0.2:7946", "10.0.0.3:7946"]
http_addr  = "127.0.0.1:8501"
data_dir   = "/var/lib/shoal"
reap_after = "24h"
log_level  = "debug"
log_json   = true
dev        = false
`
	const json = `{
  "node_name": "web-1", "datacenter": "eu-west", "bind_addr": "10.0.0.5:7946",
  "advertise_addr": "192.0.2.5:7946", "rpc_addr": "10.0.0.5:7947",
  "join": ["10.0.0.2:7946", "10.0.0.3:7946"], "http_addr": "127.0.0.1:8501",
  "data_dir": "/var/lib/shoal", "reap_after": "24h", "log_level": "debug",
  "log_json": true, "dev": false
}`
	for _, tc := range []struct{ name, file, content string }{
		{"HCL", "shoal.hcl", hcl},
		{"JSON", "shoal.json", json},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc, err := LoadConfigFile(writeConfigFile(t, tc.file, tc.content))
			if err != nil {
				t.Fatal(err)
			}
			if fc.LogLevel == nil || *fc.LogLevel != "debug" || fc.LogJSON == nil || !*fc.LogJSON || fc.Dev == nil || *fc.Dev {
				t.Errorf("log_level/log_json/dev not read: %+v", fc)
			}
			c := DefaultConfig()
			if err := fc.Apply(&c); err != nil {
				t.Fatal(err)
			}
			want := DefaultConfig()
			want.NodeName, want.Datacenter = "web-1", "eu-west"
			want.BindAddr, want.AdvertiseAddr, want.RPCAddr = "10.0.0.5:7946", "192.0.2.5:7946", "10.0.0.5:7947"
			want.Join = []string{"10.0.0.2:7946", "10.0.0.3:7946"}
			want.HTTPAddr, want.DataDir, want.ReapAfter = "127.0.0.1:8501", "/var/lib/shoal", 24*time.Hour
			if c.NodeName != want.NodeName || c.Datacenter != want.Datacenter || c.BindAddr != want.BindAddr ||
				c.AdvertiseAddr != want.AdvertiseAddr || c.RPCAddr != want.RPCAddr || !slices.Equal(c.Join, want.Join) ||
				c.HTTPAddr != want.HTTPAddr || c.DataDir != want.DataDir || c.ReapAfter != want.ReapAfter {
				t.Errorf("applied config\n%+v\nwant\n%+v", c, want)
			}
			if err := c.Validate(); err != nil {
				t.Errorf("applied config invalid: %v", err)
			}
		})
	}
}

// TestConfigFileApplyKeepsUnset checks that keys absent from the file keep
// the values already in the configuration.
func TestConfigFileApplyKeepsUnset(t *testing.T) {
	fc, err := LoadConfigFile(writeConfigFile(t, "shoal.hcl", `node_name = "db-1"`))
	if err != nil {
		t.Fatal(err)
	}
	c := TestConfig("n0")
	c.Join = []string{"127.0.0.1:7000"}
	c.DataDir = "/data"
	before := c
	if err := fc.Apply(&c); err != nil {
		t.Fatal(err)
	}
	if c.NodeName != "db-1" {
		t.Errorf("node name %q, want db-1", c.NodeName)
	}
	c.NodeName = before.NodeName
	if c.Datacenter != before.Datacenter || c.BindAddr != before.BindAddr || c.HTTPAddr != before.HTTPAddr ||
		c.DataDir != before.DataDir || !slices.Equal(c.Join, before.Join) || c.ReapAfter != before.ReapAfter {
		t.Errorf("unset keys changed the config:\n%+v\nwant\n%+v", c, before)
	}
}

func TestLoadConfigFileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, file, content string
		want                []string // substrings of the error
	}{
		{"unknown key", "a.hcl", "node_name = \"a\"\nbind_adr = \"1.2.3.4:1\"\n", []string{`unknown key "bind_adr"`, "bind_addr"}},
		{"unknown key JSON", "a.json", `{"nodename":"a"}`, []string{`unknown key "nodename"`}},
		{"syntax error", "a.hcl", `node_name = "a`, []string{"a.hcl"}},
		{"unterminated JSON string", "a.json", `{"node_name":"a","data_dir":"/va`, []string{"a.json"}},
		{"JSON without quotes", "a.json", `{node_name: "a"}`, []string{"a.json"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeConfigFile(t, tc.file, tc.content)
			_, err := LoadConfigFile(p)
			if err == nil {
				t.Fatalf("LoadConfigFile accepted %q", tc.content)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %s", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}

	if _, err := LoadConfigFile(filepath.Join(t.TempDir(), "missing.hcl")); err == nil || !strings.Contains(err.Error(), "missing.hcl") {
		t.Errorf("missing file: %v, want an error naming it", err)
	}

	for _, bad := range []string{"3 days", "72", ""} {
		fc, err := LoadConfigFile(writeConfigFile(t, "a.hcl", `reap_after = "`+bad+`"`))
		if err != nil {
			t.Fatalf("reap_after %q: load: %v", bad, err)
		}
		c := TestConfig("n0")
		err = fc.Apply(&c)
		if err == nil || !strings.Contains(err.Error(), "reap_after") {
			t.Errorf("reap_after %q: Apply() = %v, want an error about reap_after", bad, err)
		}
		if c.ReapAfter != 72*time.Hour {
			t.Errorf("reap_after %q: ReapAfter changed to %v on error", bad, c.ReapAfter)
		}
	}
}

// TestLoadConfigFileRejectsMalformedJSON: HCL v1's JSON parser accepts
// broken JSON and silently drops what it could not parse, so a damaged file
// starts an agent with part of its configuration (here: without its seeds).
func TestLoadConfigFileRejectsMalformedJSON(t *testing.T) {
	for _, content := range []string{
		`{"node_name": "a", "join": [}`,
		`{"node_name": "a"`,
		`{"node_name": "a"}}`,
		`{"node_name" "a"}`,
		`{"node_name": }`,
	} {
		if fc, err := LoadConfigFile(writeConfigFile(t, "a.json", content)); err == nil {
			t.Errorf("%s: accepted (%+v), want a syntax error", content, fc)
		}
	}
}
