//go:build !labctl_run

package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/labctl/labctl"
)

type deviceOptions struct {
	client clientOptions
	node   string
	action string // "", maintenance, online, health
	reason string
	output string
}

var deviceActions = []string{"show", "maintenance", "online", "health"}

func newDeviceCommand(env *appEnv) *cli.Command {
	return &cli.Command{
		Name:      "device",
		Usage:     "show a device, or take it out of service, put it back, health-check it",
		ArgsUsage: "NODE [show|maintenance|online|health]",
		Description: `Without an action (or with show), shows the device: state, since when,
why, its job, its last health check.

maintenance takes the device out of service (--reason says why): it gets
no jobs until it is put online; a job running on it finishes first. The
state survives daemon restarts.

online puts it back: the daemon health-checks it and it takes jobs if the
check passes.

health runs the device's health check now (as its device type's [health]
says: the BMC answers and the power state reads, the console opens, and
optionally the master image boots) and shows the result. An offline
device that passes takes jobs again. Refused while a job runs on it.

EXAMPLES:
   labctl device node1
   labctl device node1 maintenance --reason "replacing the disk"
   labctl device node1 online
   labctl device node1 health

EXIT STATUS:
   0 done (health: the check passed), 1 an error (health: the check
   failed), 64 the command line is wrong.`,
		Flags: append(clientFlags(),
			&cli.StringFlag{Name: "reason", Usage: "maintenance: why the device is out of service"},
			outputFlag(),
		),
		BashComplete: completeNodes(env, deviceActions),
		Action: func(c *cli.Context) error {
			args, err := commandArgs(c)
			if err != nil {
				return err
			}
			out, err := outputFormat(c)
			if err != nil {
				return err
			}
			opts := deviceOptions{client: clientOptionsFrom(c), reason: c.String("reason"), output: out}
			switch len(args) {
			case 2:
				opts.action = args[1]
				if !validAction(opts.action) {
					return usageErrorf("device: action %q: use show, maintenance, online or health", opts.action)
				}
				fallthrough
			case 1:
				opts.node = args[0]
			default:
				return usageErrorf("device: want NODE [show|maintenance|online|health] (see labctl device --help)")
			}
			if opts.reason != "" && opts.action != "maintenance" {
				return usageErrorf("device: --reason goes with maintenance")
			}
			return runDevice(c.Context, opts, env)
		},
	}
}

func validAction(a string) bool {
	for _, v := range deviceActions {
		if a == v {
			return true
		}
	}
	return false
}

// errHealthFailed is a health check that did not pass: exit status 1.
var errHealthFailed = errors.New("health check failed")

func runDevice(ctx context.Context, opts deviceOptions, env *appEnv) error {
	client, err := connect(opts.client, env)
	if err != nil {
		return err
	}
	var d labctl.Device
	switch opts.action {
	case "", "show":
		d, err = client.Device(ctx, opts.node)
	case "maintenance":
		d, err = client.Maintenance(ctx, opts.node, opts.reason)
	case "online":
		d, err = client.Online(ctx, opts.node)
	case "health":
		d, err = client.CheckHealth(ctx, opts.node)
	}
	if err != nil {
		return err
	}
	if opts.output == outputJSON {
		if err := printJSON(env.stdout, d); err != nil {
			return err
		}
	} else {
		printDevice(env, d)
	}
	if opts.action == "health" && (d.Health == nil || !d.Health.OK) {
		return fmt.Errorf("%s: %w", d.Name, errHealthFailed)
	}
	return nil
}

func printDevice(env *appEnv, d labctl.Device) {
	w := env.stdout
	fmt.Fprintf(w, "%s (%s)\n", d.Name, d.DeviceType)
	fmt.Fprintf(w, "state:   %s since %s\n", d.State, d.Since.Local().Format("2006-01-02 15:04:05"))
	if d.Reason != "" {
		fmt.Fprintf(w, "reason:  %s\n", d.Reason)
	}
	if d.Job != 0 {
		fmt.Fprintf(w, "job:     %d\n", d.Job)
	}
	if d.Reservation != nil {
		fmt.Fprintf(w, "reserved: by %s\n", reservationText(d.Reservation))
	}
	if d.Maintenance && d.State != labctl.DeviceMaintenance {
		fmt.Fprintln(w, "maintenance: after the current job")
	}
	if h := d.Health; h != nil {
		result := "passed"
		if !h.OK {
			result = "FAILED"
		}
		fmt.Fprintf(w, "health:  %s at %s in %s: %s\n", result, h.At.Local().Format("15:04:05"), h.Duration.Round(10*time.Millisecond), h.Detail)
	}
}
