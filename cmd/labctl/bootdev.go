//go:build !labctl_run

package main

import (
	"context"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/labctl/labctl"
)

type bootdevOptions struct {
	client clientOptions
	lab    string
	node   string
	device labctl.BootDevice
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
			dev, err := labctl.ParseBootDevice(args[1])
			if err != nil {
				return usageErrorf("bootdev: boot device %q: use pxe or disk", args[1])
			}
			return runBootdev(c.Context, bootdevOptions{client: clientOptionsFrom(c), lab: c.String("lab"),
				node: args[0], device: dev, force: c.Bool("force")}, env)
		},
	}
}

func runBootdev(ctx context.Context, opts bootdevOptions, env *appEnv) error {
	nodes, done, err := nodeControl(opts.client, opts.lab, env)
	if err != nil {
		return err
	}
	defer done()
	resp, err := nodes.SetBootDevice(ctx, opts.node, labctl.BootdevRequest{Device: opts.device, Force: opts.force})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "%s: next boot from %s\n", opts.node, resp.Device)
	return nil
}
