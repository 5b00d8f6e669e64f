package main

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/shoal-mesh/shoal/gossip"
)

func rttCommand() *cli.Command {
	return &cli.Command{
		Name:      "rtt",
		Usage:     "estimate the round-trip time between two nodes from network coordinates",
		ArgsUsage: "NODE [NODE]",
		Description: `Estimates the round-trip time between two nodes, or between NODE and
the agent's own node, from serf's network coordinates (Vivaldi), as
"consul rtt" does: the agent measures nothing, it computes the distance of
the coordinates that its failure-detection probes keep up to date
(GET /v1/coordinate/nodes). A node appears there once the agent has probed
it, a few seconds after it joined.`,
		Flags: []cli.Flag{
			httpAddrFlag(),
			formatFlag(),
		},
		Action: runRTT,
	}
}

// rttView is the estimate as --format json prints it.
type rttView struct {
	From, To     string
	RTT          string  // a Go duration, "412µs"
	Milliseconds float64 // the same, in milliseconds
}

func runRTT(c *cli.Context) error {
	format, args, err := formatAndArgs(c)
	if err != nil {
		return err
	}
	if len(args) < 1 || len(args) > 2 {
		return fmt.Errorf("rtt takes one or two node names, got %d arguments", len(args))
	}
	client, err := newClient(c)
	if err != nil {
		return err
	}
	from, to := args[0], ""
	if len(args) == 2 {
		to = args[1]
	} else {
		var self struct{ Config struct{ NodeName string } }
		if err := client.get(c.Context, "/v1/agent/self", &self); err != nil {
			return fmt.Errorf("read the agent's node name: %w", err)
		}
		to = self.Config.NodeName
	}

	var entries []struct {
		Node  string
		Coord *gossip.Coordinate
	}
	if err := client.get(c.Context, "/v1/coordinate/nodes", &entries); err != nil {
		return fmt.Errorf("read network coordinates: %w", err)
	}
	coords := make(map[string]gossip.Coordinate, len(entries))
	for _, e := range entries {
		if e.Coord != nil {
			coords[e.Node] = *e.Coord
		}
	}
	var missing []error
	for _, n := range []string{from, to} {
		if _, ok := coords[n]; !ok {
			missing = append(missing, fmt.Errorf("no coordinate for node %q (unknown node, or not probed yet: retry in a few seconds)", n))
		}
	}
	if from == to {
		missing = missing[:min(len(missing), 1)]
	}
	if err := joinErrors(missing); err != nil {
		return err
	}
	d, err := coords[from].DistanceTo(coords[to])
	if err != nil {
		return fmt.Errorf("rtt %s <-> %s: %w", from, to, err)
	}

	if format == formatJSON {
		return writeJSON(c.App.Writer, rttView{From: from, To: to, RTT: d.String(), Milliseconds: millis(d)})
	}
	fmt.Fprintf(c.App.Writer, "Estimated %s <-> %s rtt: %.3f ms (using LAN coordinates)\n", from, to, millis(d))
	return nil
}

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
