//go:build !labctl_run

package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"

	"github.com/urfave/cli/v2"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/lab"
)

type powerOptions struct {
	client clientOptions
	lab    string // talk to the BMC directly, without a daemon
	node   string
	op     string
	force  bool
}

var powerOps = []string{string(labctl.PowerOn), string(labctl.PowerOff), string(labctl.PowerCycle), string(labctl.PowerReset), labctl.PowerStatus}

func newPowerCommand(env *appEnv) *cli.Command {
	return &cli.Command{
		Name:      "power",
		Usage:     "power a node on, off, cycle or reset it, or read its power state",
		ArgsUsage: "NODE on|off|cycle|reset|status",
		Description: `Runs a power operation on the node's BMC (IPMI, or the device type's
power commands) and prints the power state read back. Through the
daemon, operations other than status are refused while a job or a health
check owns the node, unless --force; no job starts on the node while
the operation runs.

With --lab FILE it talks to the node's BMC directly, without a daemon
(do not use it on a node a running daemon owns).

EXAMPLES:
   labctl power node1 status
   labctl power node1 cycle --force
   labctl power --lab examples/lab.toml node1 off

EXIT STATUS:
   0 done, 1 refused or the BMC failed, 64 the command line is wrong.`,
		Flags: append(clientFlags(),
			&cli.StringFlag{Name: "lab", Usage: "talk to the BMC directly, with the lab `FILE`", TakesFile: true},
			&cli.BoolFlag{Name: "force", Usage: "also while a job or a health check owns the node"},
		),
		BashComplete: completeNodes(env, powerOps),
		Action: func(c *cli.Context) error {
			args, err := commandArgs(c)
			if err != nil {
				return err
			}
			if len(args) != 2 {
				return usageErrorf("power: want NODE and on|off|cycle|reset|status (see labctl power --help)")
			}
			op := args[1]
			if !slices.Contains(powerOps, op) {
				return usageErrorf("power: operation %q: use on, off, cycle, reset or status", op)
			}
			return runPower(c.Context, powerOptions{client: clientOptionsFrom(c), lab: c.String("lab"),
				node: args[0], op: op, force: c.Bool("force")}, env)
		},
	}
}

func runPower(ctx context.Context, opts powerOptions, env *appEnv) error {
	nodes, done, err := nodeControl(opts.client, opts.lab, env)
	if err != nil {
		return err
	}
	defer done()
	resp, err := nodes.Power(ctx, opts.node, labctl.PowerRequest{Op: opts.op, Force: opts.force})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "%s: %s\n", opts.node, labctl.OnOff(resp.On))
	return nil
}

// nodeControl is what acts on nodes' power and boot devices: the daemon,
// or with a lab file the nodes' BMCs directly. done releases it.
func nodeControl(client clientOptions, labFile string, env *appEnv) (nodes labctl.NodeControl, done func(), err error) {
	if labFile == "" {
		c, err := connect(client, env)
		if err != nil {
			return nil, nil, err
		}
		return c, func() {}, nil
	}
	cfg, err := devices.Load(labFile)
	if err != nil {
		return nil, nil, err
	}
	l := lab.New(cfg, nil, newLogger(env, slog.LevelWarn))
	return lab.Direct{Lab: l}, func() { l.Close() }, nil
}
