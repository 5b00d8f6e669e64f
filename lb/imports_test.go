package lb

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportBoundaries keeps the package graph honest (see DESIGN.md,
// "Packages and their direction"): lb and gossip never import each other or
// node, and lb knows nothing of serf or memberlist.
func TestImportBoundaries(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go not on PATH")
	}
	const mod = "github.com/shoal-mesh/shoal"
	tests := []struct {
		pkg       string
		forbidden []string
	}{
		{mod + "/lb", []string{mod + "/gossip", mod + "/node", mod + "/cmd", "github.com/hashicorp/serf", "github.com/hashicorp/memberlist"}},
		{mod + "/gossip", []string{mod + "/lb", mod + "/node", mod + "/cmd"}},
	}
	for _, tt := range tests {
		// -e: list what is imported even while a package does not build.
		out, err := exec.Command(goTool, "list", "-e", "-deps", "-f", "{{.ImportPath}}", tt.pkg).Output()
		if err != nil {
			msg := ""
			if ee, ok := err.(*exec.ExitError); ok {
				msg = string(ee.Stderr)
			}
			t.Fatalf("go list -deps %s: %v\n%s", tt.pkg, err, msg)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 2 {
			t.Fatalf("go list -deps %s listed %v", tt.pkg, deps)
		}
		for _, dep := range deps {
			for _, bad := range tt.forbidden {
				if dep == bad || strings.HasPrefix(dep, bad+"/") {
					t.Errorf("%s depends on %s", tt.pkg, dep)
				}
			}
		}
	}
}
