package node

import (
	"net/http"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

func TestRegistrationVisibleOnEveryAgent(t *testing.T) {
	as := startAgents(t, 3)
	code, body := do(t, as[1], "PUT", "/v1/agent/service/register",
		`{"Name":"web","ID":"web-1","Port":8080,"Tags":["v1"],"Meta":{"team":"a"}}`)
	if code != http.StatusOK {
		t.Fatalf("register: %d %s", code, body)
	}
	testutil.Wait(t, 5*time.Second, "web-1 passing on every agent", func() bool {
		for _, a := range as {
			e := healthEntries(t, a, "web", "?passing")
			if len(e) != 1 || e[0].Service.ID != "web-1" || e[0].Node.Node != "n1" {
				return false
			}
		}
		return true
	})
}
