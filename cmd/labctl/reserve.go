//go:build !labctl_run

package main

import (
	"context"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/labctl/labctl"
)

type reserveOptions struct {
	client  clientOptions
	node    string
	release bool
	dur     time.Duration
	reason  string
	output  string
}

func newReserveCommand(env *appEnv) *cli.Command {
	return &cli.Command{
		Name:      "reserve",
		Usage:     "hold a device for yourself for a while: no one else's jobs run on it",
		ArgsUsage: "NODE",
		Description: `Reserves the device for the owner of your token (its name in the lab's
[[server.tokens]]) for --for from now, like a labgrid lock. While the
reservation holds, jobs chosen by device type never land on the device,
and jobs naming it wait, unless they are your own ("device = NODE" in
your job file): use it to power, boot and watch a node by hand, or to
run your own jobs there. Periodic health checks leave it alone.

Reserving again renews your reservation (from now, for --for; the
reason stays unless you give a new one). It ends by itself when the time
is up, or with labctl release. A device someone else holds is refused.
Reservations survive daemon restarts. labctl devices shows who holds
what until when. Needs role submitter.

EXAMPLES:
   labctl reserve node1 --for 2h --reason "bisecting the NIC driver"
   labctl reserve node1 --for 30m
   labctl release node1

EXIT STATUS:
   0 reserved, 1 an error (held by someone else, no such device, no
   daemon), 64 the command line is wrong.`,
		Flags: append(clientFlags(),
			&cli.DurationFlag{Name: "for", Usage: "how long to hold it, from now (`DURATION`, e.g. 2h; at most 168h)"},
			&cli.StringFlag{Name: "reason", Usage: "what you need it for (shown in labctl devices)"},
			outputFlag(),
		),
		BashComplete: completeNodes(env, nil),
		Action: func(c *cli.Context) error {
			args, err := commandArgs(c)
			if err != nil {
				return err
			}
			if len(args) != 1 {
				return usageErrorf("reserve: want one NODE (see labctl reserve --help)")
			}
			if c.Duration("for") <= 0 {
				return usageErrorf("reserve: --for DURATION is required (e.g. --for 2h)")
			}
			out, err := outputFormat(c)
			if err != nil {
				return err
			}
			return runReserve(c.Context, reserveOptions{client: clientOptionsFrom(c), node: args[0],
				dur: c.Duration("for"), reason: c.String("reason"), output: out}, env)
		},
	}
}

func newReleaseCommand(env *appEnv) *cli.Command {
	return &cli.Command{
		Name:      "release",
		Usage:     "end a device's reservation",
		ArgsUsage: "NODE",
		Description: `Ends the reservation of the device (labctl reserve): queued jobs may run
on it again at once. Its owner may release it; releasing someone else's
reservation needs role operator.

EXAMPLES:
   labctl release node1

EXIT STATUS:
   0 released, 1 an error (not reserved, someone else's reservation and
   not an operator, no daemon), 64 the command line is wrong.`,
		Flags:        append(clientFlags(), outputFlag()),
		BashComplete: completeNodes(env, nil),
		Action: func(c *cli.Context) error {
			args, err := commandArgs(c)
			if err != nil {
				return err
			}
			if len(args) != 1 {
				return usageErrorf("release: want one NODE (see labctl release --help)")
			}
			out, err := outputFormat(c)
			if err != nil {
				return err
			}
			return runReserve(c.Context, reserveOptions{client: clientOptionsFrom(c), node: args[0], release: true, output: out}, env)
		},
	}
}

func runReserve(ctx context.Context, opts reserveOptions, env *appEnv) error {
	client, err := connect(opts.client, env)
	if err != nil {
		return err
	}
	var d labctl.Device
	if opts.release {
		d, err = client.Release(ctx, opts.node)
	} else {
		d, err = client.Reserve(ctx, opts.node, labctl.ReserveRequest{For: opts.dur, Reason: opts.reason})
	}
	if err != nil {
		return err
	}
	if opts.output == outputJSON {
		return printJSON(env.stdout, d)
	}
	if opts.release {
		fmt.Fprintf(env.stdout, "%s: released\n", d.Name)
		return nil
	}
	printDevice(env, d)
	return nil
}

// reservationText says who holds a device until when.
func reservationText(r *labctl.Reservation) string {
	s := fmt.Sprintf("%s until %s", r.Owner, r.Until.Local().Format("2006-01-02 15:04"))
	if r.Reason != "" {
		s += " (" + r.Reason + ")"
	}
	return s
}
