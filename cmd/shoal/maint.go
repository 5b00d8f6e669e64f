package main

import (
	"errors"
	"fmt"
	"net/url"

	"github.com/urfave/cli/v2"
)

func maintCommand() *cli.Command {
	return &cli.Command{
		Name:  "maint",
		Usage: "drain a service (or the whole node) from every proxy and ?passing, keeping its registration",
		Description: `With --enable, puts the service --service ID, or without it every service of
this node, in maintenance: a critical check takes it out of ?passing and out of
every proxy's pool across the mesh, while the registration stays. --disable
restores it. Handy in a pre-stop hook:

   shoal maint --enable --service web-1 --reason "deploy 42"`,
		Flags: []cli.Flag{
			httpAddrFlag(),
			&cli.BoolFlag{Name: "enable", Usage: "enter maintenance"},
			&cli.BoolFlag{Name: "disable", Usage: "leave maintenance"},
			&cli.StringFlag{Name: "service", Usage: "service `ID` (default: the whole node)"},
			&cli.StringFlag{Name: "reason", Usage: "`TEXT` shown in the maintenance check's notes"},
		},
		Action: runMaint,
	}
}

func runMaint(c *cli.Context) error {
	args, err := commandArgs(c)
	if err != nil {
		return err
	}
	if len(args) > 0 {
		return fmt.Errorf("maint takes no arguments, got %q", args[0])
	}
	enable, disable := c.Bool("enable"), c.Bool("disable")
	if enable == disable {
		return errors.New("maint needs exactly one of --enable or --disable")
	}
	q := url.Values{"enable": {fmt.Sprint(enable)}}
	if r := c.String("reason"); r != "" {
		q.Set("reason", r)
	}
	path, what := "/v1/agent/maintenance", "the node"
	if id := c.String("service"); id != "" {
		path, what = "/v1/agent/service/maintenance/"+url.PathEscape(id), fmt.Sprintf("service %q", id)
	}
	client, err := newClient(c)
	if err != nil {
		return err
	}
	if err := client.put(c.Context, path+"?"+q.Encode(), nil, nil); err != nil {
		return fmt.Errorf("maintenance of %s: %w", what, err)
	}
	state := "disabled"
	if enable {
		state = "enabled"
	}
	fmt.Fprintf(c.App.Writer, "maintenance %s for %s\n", state, what)
	return nil
}
