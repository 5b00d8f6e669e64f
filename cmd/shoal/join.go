package main

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/urfave/cli/v2"
)

func joinCommand() *cli.Command {
	return &cli.Command{
		Name:      "join",
		Usage:     "make the agent join a mesh through other nodes",
		ArgsUsage: "ADDR...",
		Description: `Asks the agent to join the nodes at each ADDR (host or host:port of their
gossip listener). Every address is tried; the command fails if any join
failed.`,
		Flags:  []cli.Flag{httpAddrFlag()},
		Action: runJoin,
	}
}

func runJoin(c *cli.Context) error {
	addrs, err := commandArgs(c)
	if err != nil {
		return err
	}
	if len(addrs) == 0 {
		return errors.New("join takes at least one address")
	}
	for _, a := range addrs {
		if strings.TrimSpace(a) == "" {
			return errors.New("join: empty address")
		}
	}
	client, err := newClient(c)
	if err != nil {
		return err
	}
	// Joins are independent: one unreachable seed must not keep the agent
	// from the others.
	var failed []error
	for _, a := range addrs {
		if err := client.put(c.Context, "/v1/agent/join/"+url.PathEscape(a), nil, nil); err != nil {
			failed = append(failed, fmt.Errorf("join %s: %w", a, err))
			continue
		}
		fmt.Fprintf(c.App.Writer, "joined %s\n", a)
	}
	if len(failed) > 0 && len(addrs) > 1 {
		return fmt.Errorf("%d of %d joins failed: %w", len(failed), len(addrs), joinErrors(failed))
	}
	return joinErrors(failed)
}
