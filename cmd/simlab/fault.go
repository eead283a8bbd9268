package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/labctl/labctl/simlab"
	"github.com/urfave/cli/v2"
)

func faultCommand() *cli.Command {
	return &cli.Command{
		Name:      "fault",
		Usage:     "set a node's fault knobs at runtime and print its status (counters of dropped bytes)",
		ArgsUsage: "NODE",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Value: "build/simlab/lab", Usage: "lab directory"},
			&cli.IntFlag{Name: "max-unechoed", Usage: "lossy console: drop input arriving while more than K bytes are un-echoed (0 = off)"},
			&cli.DurationFlag{Name: "min-gap", Usage: "lossy console: drop input arriving closer than T after the previous accepted byte (0 = off)"},
			&cli.IntFlag{Name: "burst-bytes", Usage: "lossy console: close the SOL session when more than N input bytes arrive within --burst-window (0 = off)"},
			&cli.DurationFlag{Name: "burst-window", Value: 100 * time.Millisecond, Usage: "window of --burst-bytes"},
			&cli.BoolFlag{Name: "lossy-off", Usage: "turn the lossy console off"},
			&cli.DurationFlag{Name: "silence", Usage: "make the BMC stop answering IPMI for this long (0s with --unsilence ends it)"},
			&cli.BoolFlag{Name: "unsilence", Usage: "end a BMC silence now"},
			&cli.BoolFlag{Name: "kill-sol", Usage: "end the active SOL session from the BMC side"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("fault: want one NODE argument, got %d", c.NArg())
			}
			f := faultOptions{
				lossySet:  c.IsSet("max-unechoed") || c.IsSet("min-gap") || c.IsSet("burst-bytes") || c.Bool("lossy-off"),
				silence:   c.Duration("silence"),
				unsilence: c.Bool("unsilence"),
				killSOL:   c.Bool("kill-sol"),
			}
			if !c.Bool("lossy-off") {
				f.lossy = simlab.LossyConsole{
					MaxUnechoed: c.Int("max-unechoed"),
					MinGap:      simlab.Duration(c.Duration("min-gap")),
					BurstBytes:  c.Int("burst-bytes"),
					BurstWindow: simlab.Duration(c.Duration("burst-window")),
				}
			}
			return runFault(c.Context, c.String("dir"), c.Args().First(), f, os.Stdout)
		},
	}
}

type faultOptions struct {
	lossySet  bool
	lossy     simlab.LossyConsole
	silence   time.Duration
	unsilence bool
	killSOL   bool
}

func runFault(ctx context.Context, dir, node string, f faultOptions, out io.Writer) error {
	lab, err := simlab.OpenLab(dir)
	if err != nil {
		return err
	}
	n := lab.Node(node)
	if n == nil {
		return fmt.Errorf("fault: no node %q in %s", node, dir)
	}
	if f.lossySet {
		if err := n.SetLossyConsole(ctx, f.lossy); err != nil {
			return err
		}
	}
	if f.silence > 0 || f.unsilence {
		if err := n.SilenceBMC(ctx, f.silence); err != nil {
			return err
		}
	}
	if f.killSOL {
		if err := n.KillSOL(ctx); err != nil {
			return err
		}
	}
	st, err := n.Status(ctx)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintln(out, string(b))
	return nil
}
