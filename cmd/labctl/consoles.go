//go:build !labctl_run

package main

import (
	"cmp"
	"context"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

type consolesOptions struct {
	client clientOptions
	output string
}

func newConsolesCommand(env *appEnv) *cli.Command {
	return &cli.Command{
		Name:      "consoles",
		Usage:     "list the nodes' consoles: open or not, who watches, who writes",
		ArgsUsage: " ",
		Description: `Lists every node's console as the daemon's console broker has it: its
state (open, connecting, down, closed), since when, who may type (a job,
a health check, a person, or nobody) and who is attached ("*" marks the
one with write; (ro) one that attached --read-only). With -o json also
the console's target, each viewer's token, window size and missed bytes,
and where the console log is on the daemon's host.

EXAMPLES:
   labctl consoles
   labctl consoles -o json

EXIT STATUS:
   0 listed, 1 an error (no daemon), 64 the command line is wrong.`,
		Flags: append(clientFlags(), outputFlag()),
		Action: func(c *cli.Context) error {
			out, err := listArgs(c, "labctl console NODE attaches to one")
			if err != nil {
				return err
			}
			return runConsoles(c.Context, consolesOptions{client: clientOptionsFrom(c), output: out}, env)
		},
	}
}

func runConsoles(ctx context.Context, opts consolesOptions, env *appEnv) error {
	client, err := connect(opts.client, env)
	if err != nil {
		return err
	}
	list, err := client.Consoles(ctx)
	if err != nil {
		return err
	}
	if opts.output == outputJSON {
		return printJSON(env.stdout, list)
	}
	tw := table(env.stdout)
	fmt.Fprintln(tw, "NODE\tCONSOLE\tSINCE\tWRITER\tVIEWERS")
	for _, c := range list {
		state := c.State
		if c.Error != "" {
			state += ": " + shorten(c.Error, 50)
		}
		var viewers []string
		for _, v := range c.Viewers {
			name := v.Who
			switch {
			case v.Write:
				name = "*" + name
			case v.ReadOnly:
				name += "(ro)"
			}
			viewers = append(viewers, name)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Node, state, when(c.Since), cmp.Or(c.Writer, "-"),
			cmp.Or(strings.Join(viewers, ", "), "-"))
	}
	return tw.Flush()
}
