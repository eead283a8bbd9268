package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"

	"github.com/urfave/cli/v2"

	"github.com/labctl/labctl/api"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/dispatcher"
	"github.com/labctl/labctl/lab"
)

type powerOptions struct {
	client clientOptions
	lab    string // talk to the BMC directly, without a daemon
	node   string
	op     string
	force  bool
}

var powerOps = []string{api.PowerOn, api.PowerOff, api.PowerCycle, api.PowerReset, api.PowerStatus}

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
	var on bool
	if opts.lab != "" {
		err := withNode(ctx, opts.lab, opts.node, env, func(ctx context.Context, n *lab.Node) error {
			if opts.op != api.PowerStatus {
				if err := n.Power.Power(ctx, dispatcher.PowerOp(opts.op)); err != nil {
					return fmt.Errorf("power %s %s: %w", opts.op, opts.node, err)
				}
			}
			var err error
			if on, err = n.Power.PowerState(ctx); err != nil {
				return fmt.Errorf("power status %s: %w", opts.node, err)
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
		resp, err := client.Power(ctx, opts.node, api.PowerRequest{Op: opts.op, Force: opts.force})
		if err != nil {
			return err
		}
		on = resp.On
	}
	fmt.Fprintf(env.stdout, "%s: %s\n", opts.node, onOff(on))
	return nil
}

// withNode runs fn on a node of the lab file, without a daemon, within the
// node's power timeout.
func withNode(ctx context.Context, labFile, name string, env *appEnv, fn func(context.Context, *lab.Node) error) error {
	cfg, err := devices.Load(labFile)
	if err != nil {
		return err
	}
	l := lab.New(cfg, nil, newLogger(env, slog.LevelWarn))
	defer l.Close()
	n, err := l.Node(name)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, n.Device.Settings.Timeouts.Power)
	defer cancel()
	return fn(pctx, n)
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}
