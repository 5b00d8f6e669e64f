package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"

	"github.com/urfave/cli/v2"

	"github.com/shoal-mesh/shoal/gossip"
)

func keyringCommand() *cli.Command {
	return &cli.Command{
		Name:  "keyring",
		Usage: "list or rotate the gossip encryption keys of the whole cluster",
		Description: `Exactly one of --list, --install, --use or --remove. Each acts on every
member through gossip. To rotate without downtime:

   shoal keyring --install NEW   # every agent accepts NEW
   shoal keyring --use NEW       # every agent encrypts with NEW
   shoal keyring --remove OLD    # OLD is no longer accepted`,
		Flags: []cli.Flag{
			httpAddrFlag(),
			&cli.BoolFlag{Name: "list", Usage: "list installed keys and how many members hold each"},
			&cli.StringFlag{Name: "install", Usage: "install `KEY` on every member"},
			&cli.StringFlag{Name: "use", Usage: "make `KEY` the primary (encrypting) key everywhere"},
			&cli.StringFlag{Name: "remove", Usage: "remove `KEY` from every member"},
		},
		Action: runKeyring,
	}
}

func runKeyring(c *cli.Context) error {
	if args, err := commandArgs(c); err != nil {
		return err
	} else if len(args) > 0 {
		return fmt.Errorf("keyring takes no arguments, got %q", args[0])
	}
	var method, key, verb string
	n := 0
	if c.Bool("list") {
		method, verb, n = http.MethodGet, "list", n+1
	}
	for flag, m := range map[string]string{"install": http.MethodPost, "use": http.MethodPut, "remove": http.MethodDelete} {
		if c.IsSet(flag) {
			method, key, verb, n = m, c.String(flag), flag, n+1
		}
	}
	if n != 1 {
		return errors.New("keyring needs exactly one of --list, --install, --use or --remove")
	}
	if method != http.MethodGet {
		if _, err := gossip.ParseKey(key); err != nil {
			return fmt.Errorf("--%s: %w", verb, err)
		}
	}
	client, err := newClient(c)
	if err != nil {
		return err
	}
	if method != http.MethodGet {
		body, _ := json.Marshal(map[string]string{"Key": key})
		if err := client.do(c.Context, method, "/v1/operator/keyring", body, nil); err != nil {
			return fmt.Errorf("keyring --%s: %w", verb, err)
		}
		fmt.Fprintf(c.App.Writer, "keyring %s: done on every member\n", verb)
		return nil
	}
	var resp []struct {
		Keys, PrimaryKeys map[string]int
		NumNodes          int
	}
	if err := client.get(c.Context, "/v1/operator/keyring", &resp); err != nil {
		return fmt.Errorf("keyring --list: %w", err)
	}
	w := newTable(c.App.Writer)
	fmt.Fprintln(w, "Key\tMembers\tPrimary")
	for _, r := range resp {
		keys := make([]string, 0, len(r.Keys))
		for k := range r.Keys {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "%s\t%d/%d\t%d/%d\n", k, r.Keys[k], r.NumNodes, r.PrimaryKeys[k], r.NumNodes)
		}
	}
	return w.Flush()
}
