package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/labctl/labctl/simlab"
	"github.com/urfave/cli/v2"
)

func chassisCommand() *cli.Command {
	return &cli.Command{
		Name:      "chassis",
		Usage:     "internal: ipmi_sim's chassis_control hook (get power|boot, set power|reset|boot|shutdown VALUE)",
		Hidden:    true,
		ArgsUsage: "get NAME... | set NAME VALUE",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "control", Required: true, Usage: "the node relay's control socket"},
		},
		Action: func(c *cli.Context) error {
			return runChassis(c.Context, c.String("control"), c.Args().Slice(), os.Stdout)
		},
	}
}

// runChassis forwards the hook call to the node's relay, which answers in
// milliseconds: ipmi_sim runs the hook synchronously, and ipmitool
// retransmits (running the action twice) when the BMC is slow.
func runChassis(ctx context.Context, control string, args []string, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	output, err := simlab.Chassis(ctx, control, args)
	if err != nil {
		return err
	}
	if output != "" {
		fmt.Fprintln(out, output)
	}
	return nil
}
