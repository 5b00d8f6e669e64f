package main

import (
	"fmt"
	"net/url"

	"github.com/urfave/cli/v2"
)

func forceLeaveCommand() *cli.Command {
	return &cli.Command{
		Name:      "force-leave",
		Usage:     "move a failed node to left so that its services go at once",
		ArgsUsage: "NODE",
		Description: `A node that died without leaving stays failed, its services shown critical,
until --reap-after passes. force-leave marks it left on every agent, which
removes its services now; --prune also forgets the node itself. The agent
refuses an alive node: stop it with "shoal leave" instead.`,
		Flags: []cli.Flag{
			httpAddrFlag(),
			&cli.BoolFlag{Name: "prune", Usage: "forget the node at once instead of keeping it as left"},
		},
		Action: runForceLeave,
	}
}

func runForceLeave(c *cli.Context) error {
	args, err := commandArgs(c)
	if err != nil {
		return err
	}
	if len(args) != 1 || args[0] == "" {
		return fmt.Errorf("force-leave takes one node name, got %q", args)
	}
	node := args[0]
	client, err := newClient(c)
	if err != nil {
		return err
	}
	path := "/v1/agent/force-leave/" + url.PathEscape(node)
	if c.Bool("prune") {
		path += "?prune"
	}
	if err := client.put(c.Context, path, nil, nil); err != nil {
		return fmt.Errorf("force-leave %s: %w", node, err)
	}
	if c.Bool("prune") {
		fmt.Fprintf(c.App.Writer, "node %q left and was pruned\n", node)
	} else {
		fmt.Fprintf(c.App.Writer, "node %q left\n", node)
	}
	return nil
}
