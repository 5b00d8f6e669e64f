// Command shoal-bench measures Shoal against its anchors on this machine
// and prints tables: the proxy against nginx and HAProxy (proxy), and the
// gossip layer's convergence against stock serf (cluster). It is kept out
// of the shoal binary, so that agents carry no harness for serf, nginx,
// HAProxy and wrk.
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
)

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "shoal-bench: %s\n", strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; "))
		os.Exit(1)
	}
}

// newApp builds the command tree; tests run it with their own writers.
func newApp() *cli.App {
	return &cli.App{
		Name:  "shoal-bench",
		Usage: "measure Shoal against its anchors on this machine and print a table",
		Commands: []*cli.Command{
			benchProxyCommand(),
			benchClusterCommand(),
		},
		// One occurrence of a repeatable flag is one value.
		DisableSliceFlagSeparator: true,
		ExitErrHandler:            func(*cli.Context, error) {},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return fmt.Errorf("%w (see \"shoal-bench --help\")", err)
		},
	}
}
