package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"

	"github.com/urfave/cli/v2"
)

func infoCommand() *cli.Command {
	return &cli.Command{
		Name:  "info",
		Usage: "show what the agent reports about itself",
		Description: `Shows the agent's node name, datacenter, gossip address and version, then
its statistics by section, as GET /v1/agent/self reports them. --format json
prints the agent's whole answer.`,
		Flags:  []cli.Flag{httpAddrFlag(), formatFlag()},
		Action: runInfo,
	}
}

// agentSelf is the part of /v1/agent/self that the table shows.
type agentSelf struct {
	Config struct {
		NodeName   string
		Datacenter string
		Version    string
	}
	Member *struct {
		Addr string
		Port uint16
	}
	// Stats maps a section to its statistics. Consul's values are strings,
	// Shoal's mostly numbers; raw values print both as they are.
	Stats map[string]json.RawMessage
}

func runInfo(c *cli.Context) error {
	format, args, err := formatAndArgs(c)
	if err != nil {
		return err
	}
	if len(args) > 0 {
		return fmt.Errorf("info takes no arguments, got %q", args)
	}
	client, err := newClient(c)
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := client.get(c.Context, "/v1/agent/self", &raw); err != nil {
		return fmt.Errorf("agent info: %w", err)
	}

	w := c.App.Writer
	if format == formatJSON {
		var buf bytes.Buffer
		if err := json.Indent(&buf, raw, "", "  "); err != nil {
			return fmt.Errorf("agent info: %w", err)
		}
		buf.WriteByte('\n')
		_, err := buf.WriteTo(w)
		return err
	}
	var self agentSelf
	if err := json.Unmarshal(raw, &self); err != nil {
		return fmt.Errorf("agent info: decode /v1/agent/self: %w", err)
	}
	return writeInfo(w, &self)
}

func writeInfo(w io.Writer, self *agentSelf) error {
	tw := newTable(w)
	fmt.Fprintf(tw, "Node:\t%s\n", self.Config.NodeName)
	fmt.Fprintf(tw, "Datacenter:\t%s\n", self.Config.Datacenter)
	if self.Member != nil {
		fmt.Fprintf(tw, "Address:\t%s\n", net.JoinHostPort(self.Member.Addr, strconv.Itoa(int(self.Member.Port))))
	}
	if self.Config.Version != "" {
		fmt.Fprintf(tw, "Version:\t%s\n", self.Config.Version)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, section := range sortedKeys(self.Stats) {
		var stats map[string]json.RawMessage
		if err := json.Unmarshal(self.Stats[section], &stats); err != nil || stats == nil {
			// Not a section of statistics but a value of its own.
			fmt.Fprintf(w, "\n%s = %s\n", section, statValue(self.Stats[section]))
			continue
		}
		fmt.Fprintf(w, "\n%s:\n", section)
		for _, k := range sortedKeys(stats) {
			fmt.Fprintf(w, "\t%s = %s\n", k, statValue(stats[k]))
		}
	}
	return nil
}

// statValue prints a string statistic without its quotes and any other
// JSON value as it is.
func statValue(raw json.RawMessage) string {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s
	}
	return string(raw)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
