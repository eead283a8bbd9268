package main

import (
	"context"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/labctl/labctl/api"
	"github.com/labctl/labctl/dispatcher"
	"github.com/labctl/labctl/lab"
)

type bootdevOptions struct {
	client clientOptions
	lab    string
	node   string
	device string
	force  bool
}

var bootDevices = []string{"pxe", "disk"}

func newBootdevCommand(env *appEnv) *cli.Command {
	return &cli.Command{
		Name:      "bootdev",
		Usage:     "set the device a node boots from next: pxe or disk",
		ArgsUsage: "NODE pxe|disk",
		Description: `Sets the node's next boot device through its BMC, with the EFI and
persistent options of its device type, and reads it back where the BMC
allows. Many BMCs forget the setting 60 s after it is set: power the
node on soon after.

Through the daemon it is refused while a job or a health check owns the
node, unless --force. With --lab FILE it talks to the BMC directly,
without a daemon.

EXAMPLES:
   labctl bootdev node1 pxe && labctl power node1 cycle
   labctl bootdev --lab examples/lab.toml node2 disk

EXIT STATUS:
   0 done, 1 refused or the BMC failed, 64 the command line is wrong.`,
		Flags: append(clientFlags(),
			&cli.StringFlag{Name: "lab", Usage: "talk to the BMC directly, with the lab `FILE`", TakesFile: true},
			&cli.BoolFlag{Name: "force", Usage: "also while a job or a health check owns the node"},
		),
		BashComplete: completeNodes(env, bootDevices),
		Action: func(c *cli.Context) error {
			args, err := commandArgs(c)
			if err != nil {
				return err
			}
			if len(args) != 2 {
				return usageErrorf("bootdev: want NODE and pxe|disk (see labctl bootdev --help)")
			}
			dev := args[1]
			if dev != "pxe" && dev != "disk" {
				return usageErrorf("bootdev: boot device %q: use pxe or disk", dev)
			}
			return runBootdev(c.Context, bootdevOptions{client: clientOptionsFrom(c), lab: c.String("lab"),
				node: args[0], device: dev, force: c.Bool("force")}, env)
		},
	}
}

func runBootdev(ctx context.Context, opts bootdevOptions, env *appEnv) error {
	if opts.lab != "" {
		err := withNode(ctx, opts.lab, opts.node, env, func(ctx context.Context, n *lab.Node) error {
			if err := n.Power.SetBootDevice(ctx, dispatcher.BootDevice(opts.device)); err != nil {
				return fmt.Errorf("bootdev %s %s: %w", opts.device, opts.node, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
	} else {
		client, err := connect(opts.client, env)
		if err != nil {
			return err
		}
		if _, err := client.SetBootDevice(ctx, opts.node, api.BootdevRequest{Device: opts.device, Force: opts.force}); err != nil {
			return err
		}
	}
	fmt.Fprintf(env.stdout, "%s: next boot from %s\n", opts.node, opts.device)
	return nil
}
