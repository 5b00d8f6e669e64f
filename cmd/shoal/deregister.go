package main

import (
	"fmt"
	"net/url"

	"github.com/urfave/cli/v2"
)

func deregisterCommand() *cli.Command {
	return &cli.Command{
		Name:      "deregister",
		Usage:     "remove a service instance from the agent",
		ArgsUsage: "ID",
		Description: `Removes the service instance ID, registered with this agent, from the
mesh.`,
		Flags:  []cli.Flag{httpAddrFlag()},
		Action: runDeregister,
	}
}

func runDeregister(c *cli.Context) error {
	args, err := commandArgs(c)
	if err != nil {
		return err
	}
	if len(args) != 1 || args[0] == "" {
		return fmt.Errorf("deregister takes exactly one service ID, got %d arguments", len(args))
	}
	id := args[0]
	client, err := newClient(c)
	if err != nil {
		return err
	}
	if err := client.put(c.Context, "/v1/agent/service/deregister/"+url.PathEscape(id), nil, nil); err != nil {
		return fmt.Errorf("deregister service %q: %w", id, err)
	}
	fmt.Fprintf(c.App.Writer, "deregistered service %q\n", id)
	return nil
}
