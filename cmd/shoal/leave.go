package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

func leaveCommand() *cli.Command {
	return &cli.Command{
		Name:  "leave",
		Usage: "make the agent leave the mesh gracefully and shut down",
		Description: `Asks the agent to tell the mesh it is leaving, so that its peers mark it
left rather than failed, and then to shut down.`,
		Flags:  []cli.Flag{httpAddrFlag()},
		Action: runLeave,
	}
}

func runLeave(c *cli.Context) error {
	args, err := commandArgs(c)
	if err != nil {
		return err
	}
	if len(args) > 0 {
		return fmt.Errorf("leave takes no arguments, got %q", args)
	}
	client, err := newClient(c)
	if err != nil {
		return err
	}
	if err := client.put(c.Context, "/v1/agent/leave", nil, nil); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	fmt.Fprintf(c.App.Writer, "the agent at %s is leaving the mesh\n", client.addr)
	return nil
}
