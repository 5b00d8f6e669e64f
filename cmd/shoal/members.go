package main

import (
	"fmt"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

func membersCommand() *cli.Command {
	return &cli.Command{
		Name:  "members",
		Usage: "list the nodes of the mesh as the agent sees them",
		Description: `Lists the members known to the agent, sorted by name. The table has the
columns Node, Address, Status and DC (the node's "dc" tag); with --detailed
the DC column is replaced by Tags, every tag as key=value, sorted by key.
--format json always includes every tag.

Status is one of alive, leaving, left, failed or none. --status keeps the
members whose status matches the regular expression, anchored at both ends
as serf does: --status 'alive|leaving'.`,
		Flags: []cli.Flag{
			httpAddrFlag(),
			formatFlag(),
			&cli.StringFlag{Name: "status", Usage: "show only members whose status matches `REGEX`"},
			&cli.BoolFlag{Name: "detailed", Usage: "show every tag in the table"},
		},
		Action: runMembers,
	}
}

// agentMember is the part of Consul's AgentMember that the CLI shows.
type agentMember struct {
	Name   string
	Addr   string
	Port   uint16
	Tags   map[string]string
	Status int
}

// memberView is a member as "shoal members" prints it.
type memberView struct {
	Name    string
	Address string
	Status  string
	Tags    map[string]string
}

func runMembers(c *cli.Context) error {
	format, args, err := formatAndArgs(c)
	if err != nil {
		return err
	}
	if len(args) > 0 {
		return fmt.Errorf("members takes no arguments, got %q", args)
	}
	var statusRe *regexp.Regexp
	if s := c.String("status"); s != "" {
		if statusRe, err = regexp.Compile("^(" + s + ")$"); err != nil {
			return fmt.Errorf("invalid --status: %w", err)
		}
	}
	client, err := newClient(c)
	if err != nil {
		return err
	}

	var members []agentMember
	if err := client.get(c.Context, "/v1/agent/members", &members); err != nil {
		return fmt.Errorf("list members: %w", err)
	}
	views := make([]memberView, 0, len(members))
	for _, m := range members {
		v := memberView{
			Name:    m.Name,
			Address: net.JoinHostPort(m.Addr, strconv.Itoa(int(m.Port))),
			Status:  memberStatus(m.Status),
			Tags:    m.Tags,
		}
		if v.Tags == nil {
			v.Tags = map[string]string{}
		}
		if statusRe != nil && !statusRe.MatchString(v.Status) {
			continue
		}
		views = append(views, v)
	}
	sort.Slice(views, func(i, j int) bool { return views[i].Name < views[j].Name })

	w := c.App.Writer
	if format == formatJSON {
		return writeJSON(w, views)
	}
	tw := newTable(w)
	last := "DC"
	if c.Bool("detailed") {
		last = "Tags"
	}
	fmt.Fprintf(tw, "Node\tAddress\tStatus\t%s\n", last)
	for _, v := range views {
		col := v.Tags["dc"]
		if c.Bool("detailed") {
			col = formatTags(v.Tags)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", v.Name, v.Address, v.Status, col)
	}
	return tw.Flush()
}

// memberStatus names serf's member status numbers, as serf's String does.
func memberStatus(s int) string {
	switch s {
	case 0:
		return "none"
	case 1:
		return "alive"
	case 2:
		return "leaving"
	case 3:
		return "left"
	case 4:
		return "failed"
	default:
		return "unknown(" + strconv.Itoa(s) + ")"
	}
}

// formatTags prints tags as k=v pairs sorted by key.
func formatTags(tags map[string]string) string {
	keys := sortedKeys(tags)
	pairs := make([]string, len(keys))
	for i, k := range keys {
		pairs[i] = k + "=" + tags[k]
	}
	return strings.Join(pairs, ",")
}
