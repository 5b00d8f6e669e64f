package node

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/gossip"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// testKey returns a base64 32-byte gossip key made of b.
func testKey(b byte) string {
	return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, 32))
}

// keyringOf lists the keyring over an agent's API.
func keyringOf(t *testing.T, a *Agent) KeyringResponse {
	t.Helper()
	code, body := do(t, a, "GET", "/v1/operator/keyring", nil)
	if code != http.StatusOK {
		t.Fatalf("keyring list: %d %s", code, body)
	}
	var out []KeyringResponse
	mustUnmarshal(t, body, &out)
	if len(out) != 1 {
		t.Fatalf("keyring list: %s", body)
	}
	return out[0]
}

// keyringOp runs one rotation step over an agent's API.
func keyringOp(t *testing.T, a *Agent, method, key string) {
	t.Helper()
	if code, body := do(t, a, method, "/v1/operator/keyring", map[string]string{"Key": key}); code != http.StatusOK {
		t.Fatalf("keyring %s %s: %d %s", method, key, code, body)
	}
}

// seesMember reports whether a's gossip knows a member named name.
func seesMember(a *Agent, name string) bool {
	for _, m := range a.Cluster().Members() {
		if m.Name == name {
			return true
		}
	}
	return false
}

// TestWrongKeyCannotJoin starts agents that try to join an encrypted
// cluster with another key or with none (and an encrypted agent that tries
// to join a plain one). For a bounded window neither side ever sees the
// other, and both the explicit Join and the agent's log say why, naming
// the gossip key.
func TestWrongKeyCannotJoin(t *testing.T) {
	k1, k2 := testKey(1), testKey(2)
	cluster := startAgentsWith(t, 2, func(_ int, c *Config) { c.Encrypt = k1 })
	plain := startAgent(t, "plain", nil)
	seed := cluster[0].Cluster().LocalMember().GossipAddr()

	for _, tt := range []struct {
		name, key, seed string
		peers           []*Agent
		hint            string
	}{
		{"wrong-key", k2, seed, cluster, "different gossip key"},
		{"no-key", "", seed, cluster, "one side has a gossip key and the other not"},
		{"key-to-plain", k1, plain.Cluster().LocalMember().GossipAddr(), []*Agent{plain}, "one side has a gossip key and the other not"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			logs := &testutil.LogBuffer{}
			m := startAgent(t, tt.name, func(c *Config) {
				c.Encrypt = tt.key
				c.Join = []string{tt.seed}
				c.Logger = slog.New(slog.NewTextHandler(logs, nil))
			})
			_, err := m.Join([]string{tt.seed})
			if err == nil || !strings.Contains(err.Error(), tt.hint) || !strings.Contains(err.Error(), "--encrypt") {
				t.Errorf("Join error %v, want it to say %q and name --encrypt", err, tt.hint)
			}
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Errorf("Join error is not one line: %q", err)
			}
			// The join loop keeps retrying with backoff: watch a window of
			// several retries.
			deadline := time.Now().Add(2 * time.Second)
			for time.Now().Before(deadline) {
				if len(m.Cluster().Members()) != 1 {
					t.Fatalf("%s sees %v", tt.name, m.Cluster().Members())
				}
				for _, p := range tt.peers {
					if seesMember(p, tt.name) {
						t.Fatalf("%s sees %s", p.NodeName(), tt.name)
					}
				}
				time.Sleep(20 * time.Millisecond)
			}
			if l := logs.String(); !strings.Contains(l, "join failed") || !strings.Contains(l, tt.hint) {
				t.Errorf("log does not say why the join failed:\n%s", l)
			}
		})
	}
}

// TestKeyRotationUnderTraffic rotates the gossip key of a five-node
// cluster (install, use, remove) over the API while registrations keep
// being made on every node. No member is ever seen as anything but alive by
// anyone, every registration reaches every node, and one made after the old
// key is gone replicates everywhere.
func TestKeyRotationUnderTraffic(t *testing.T) {
	k1, k2 := testKey(1), testKey(2)
	as := startAgentsWith(t, 5, func(_ int, c *Config) {
		c.Encrypt = k1
		// This test is about the rotation: a rotation that cuts members
		// off from each other still fails it, as that lasts.
		steadyMembership(c)
	})

	// Watch every member's status as every agent sees it.
	stop := make(chan struct{})
	var flaps []string
	var watch sync.WaitGroup
	watch.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, a := range as {
				for _, m := range a.Cluster().Members() {
					if m.Status != gossip.StatusAlive && len(flaps) < 20 {
						flaps = append(flaps, fmt.Sprintf("%s saw %s %s", a.NodeName(), m.Name, m.Status))
					}
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
	})

	// Traffic: a registration on a different node every 20 ms.
	var registered atomic.Int64
	var trafficErr atomic.Value
	var traffic sync.WaitGroup
	traffic.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			a := as[i%len(as)]
			body := fmt.Sprintf(`{"Name":"traffic","ID":"traffic-%d","Port":%d}`, i, 1000+i)
			req, _ := http.NewRequest("PUT", "http://"+a.HTTPAddr()+"/v1/agent/service/register", strings.NewReader(body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				trafficErr.Store(err.Error())
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				trafficErr.Store(resp.Status)
				return
			}
			registered.Add(1)
			time.Sleep(20 * time.Millisecond)
		}
	})
	stopped := false
	stopAll := func() {
		if !stopped {
			stopped = true
			close(stop)
			traffic.Wait()
			watch.Wait()
		}
	}
	defer stopAll()

	// Not a wait for a condition: each rotation step is taken while the
	// registrations above keep flowing for a while, which is the point.
	settle := func() { time.Sleep(300 * time.Millisecond) }
	settle()
	keyringOp(t, as[0], "POST", k2)
	if kr := keyringOf(t, as[2]); kr.Keys[k1] != 5 || kr.Keys[k2] != 5 || kr.PrimaryKeys[k1] != 5 || kr.NumNodes != 5 {
		t.Fatalf("after install: %+v", kr)
	}
	settle()
	keyringOp(t, as[1], "PUT", k2)
	if kr := keyringOf(t, as[3]); kr.PrimaryKeys[k2] != 5 || kr.Keys[k1] != 5 {
		t.Fatalf("after use: %+v", kr)
	}
	settle()
	keyringOp(t, as[0], "DELETE", k1)
	if kr := keyringOf(t, as[4]); len(kr.Keys) != 1 || kr.Keys[k2] != 5 || kr.PrimaryKeys[k2] != 5 {
		t.Fatalf("after remove: %+v", kr)
	}
	settle()
	stopAll()
	if e := trafficErr.Load(); e != nil {
		t.Fatalf("registration failed during the rotation: %v", e)
	}
	n := int(registered.Load())
	if n < 20 {
		t.Fatalf("only %d registrations during the rotation", n)
	}
	testutil.Wait(t, 15*time.Second, fmt.Sprintf("all %d registrations on every node", n), func() bool {
		for _, a := range as {
			if len(a.Cluster().Catalog().Instances("traffic")) != n {
				return false
			}
		}
		return true
	})
	register(t, as[3], `{"Name":"after-remove","Port":9}`)
	testutil.Wait(t, 5*time.Second, "after-remove on every node", func() bool {
		for _, a := range as {
			if len(a.Cluster().Catalog().Instances("after-remove")) != 1 {
				return false
			}
		}
		return true
	})
	if len(flaps) > 0 {
		t.Errorf("members flapped during the rotation: %v", flaps)
	}
	t.Logf("%d registrations replicated during the rotation, no member flapped", n)
}

// TestKeyringPersistsAcrossRestart rotates the key of an agent with a data
// dir, restarts it with the old key still on its command line, and checks
// that the rotated keyring won: it lists the new key only, an agent with
// the new key joins it and one with the old key cannot.
func TestKeyringPersistsAcrossRestart(t *testing.T) {
	k1, k2 := testKey(1), testKey(2)
	dir := t.TempDir()
	withKey := func(c *Config) { c.DataDir, c.Encrypt = dir, k1 }
	a := startAgent(t, "p0", withKey)
	if keys, err := gossip.LoadKeyringFile(filepath.Join(dir, "keyring.json")); err != nil || len(keys) != 1 || keys[0] != k1 {
		t.Fatalf("keyring saved at first start = %v, %v; want [k1]", keys, err)
	}
	keyringOp(t, a, "POST", k2)
	keyringOp(t, a, "PUT", k2)
	keyringOp(t, a, "DELETE", k1)
	if keys, err := gossip.LoadKeyringFile(filepath.Join(dir, "keyring.json")); err != nil || len(keys) != 1 || keys[0] != k2 {
		t.Fatalf("keyring after rotation = %v, %v; want [k2]", keys, err)
	}
	a.Leave()
	a.Shutdown()

	b := startAgent(t, "p0", withKey) // --encrypt k1 is ignored: the keyring wins
	if kr := keyringOf(t, b); len(kr.Keys) != 1 || kr.Keys[k2] != 1 || kr.PrimaryKeys[k2] != 1 {
		t.Fatalf("keyring after restart: %+v", kr)
	}
	seed := b.Cluster().LocalMember().GossipAddr()
	newKey := startAgent(t, "new-key", func(c *Config) { c.Encrypt, c.Join = k2, []string{seed} })
	testutil.Wait(t, 10*time.Second, "the agent with the new key joined", func() bool {
		return seesMember(b, "new-key") && seesMember(newKey, "p0")
	})
	oldKey := startAgent(t, "old-key", func(c *Config) { c.Encrypt = k1 })
	if _, err := oldKey.Join([]string{seed}); err == nil || !strings.Contains(err.Error(), "gossip key") {
		t.Errorf("agent with the removed key: Join error %v, want a gossip key mismatch", err)
	}
}

// TestKeyringWithoutEncryption checks the keyring API of a plain agent.
func TestKeyringWithoutEncryption(t *testing.T) {
	a := startAgent(t, "n0", nil)
	code, body := do(t, a, "GET", "/v1/operator/keyring", nil)
	if code != http.StatusBadRequest || !strings.Contains(string(body), "not enabled") {
		t.Errorf("keyring list on a plain agent: %d %s", code, body)
	}
	code, body = do(t, a, "POST", "/v1/operator/keyring", map[string]string{"Key": testKey(1)})
	if code != http.StatusBadRequest {
		t.Errorf("keyring install on a plain agent: %d %s", code, body)
	}
}
