//go:build !labctl_run

package main

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/urfave/cli/v2"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/lab"
)

type devicesOptions struct {
	client clientOptions
	lab    string // list from the lab config, without a daemon
	power  bool   // with lab: read each node's power state
	output string
}

func newDevicesCommand(env *appEnv) *cli.Command {
	return &cli.Command{
		Name:  "devices",
		Usage: "list the lab's devices and their states",
		Description: `Lists the devices the daemon runs jobs on: type, state (idle, running,
checking, offline, maintenance), since when, the job running on it, who
holds it until when (labctl reserve), and the reason for the state (why
it is offline, who took it out of service).

With --lab FILE it lists the lab's devices from the config instead,
without a daemon: type, tags, MAC, BMC; --power also asks each BMC for
the power state.

EXAMPLES:
   labctl devices
   labctl devices -o json
   labctl devices --lab examples/lab.toml --power

EXIT STATUS:
   0 listed, 1 an error (no daemon, bad lab file), 64 the command line is wrong.`,
		Flags: append(clientFlags(),
			&cli.StringFlag{Name: "lab", Usage: "list the devices of the lab `FILE`, without a daemon", TakesFile: true},
			&cli.BoolFlag{Name: "power", Usage: "with --lab: read each node's power state from its BMC"},
			outputFlag(),
		),
		Action: func(c *cli.Context) error {
			out, err := listArgs(c, "labctl device NODE shows one")
			if err != nil {
				return err
			}
			if c.Bool("power") && c.String("lab") == "" {
				return usageErrorf("devices: --power needs --lab (the daemon's list has the states)")
			}
			return runDevices(c.Context, devicesOptions{client: clientOptionsFrom(c), lab: c.String("lab"), power: c.Bool("power"), output: out}, env)
		},
	}
}

func runDevices(ctx context.Context, opts devicesOptions, env *appEnv) error {
	if opts.lab != "" {
		return listLabDevices(ctx, opts, env)
	}
	client, err := connect(opts.client, env)
	if err != nil {
		return err
	}
	list, err := client.Devices(ctx)
	if err != nil {
		return err
	}
	if opts.output == outputJSON {
		return printJSON(env.stdout, list)
	}
	tw := table(env.stdout)
	// A lab of several hosts shows which host owns each device.
	hosts := slices.ContainsFunc(list, func(d labctl.Device) bool { return d.Host != "" })
	if hosts {
		fmt.Fprint(tw, "HOST\t")
	}
	fmt.Fprintln(tw, "NAME\tTYPE\tSTATE\tSINCE\tJOB\tRESERVED\tREASON")
	for _, d := range list {
		if hosts {
			fmt.Fprintf(tw, "%s\t", cmp.Or(d.Host, "-"))
		}
		job := "-"
		if d.Job != 0 {
			job = fmt.Sprint(d.Job)
		}
		reserved := "-"
		if r := d.Reservation; r != nil {
			reserved = r.Owner + " until " + r.Until.Local().Format("01-02 15:04")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Name, d.DeviceType, d.State, when(d.Since), job, reserved, shorten(d.Reason, 70))
	}
	return tw.Flush()
}

// labDevice is a device as the lab config describes it (devices --lab).
type labDevice struct {
	Name       string   `json:"name"`
	DeviceType string   `json:"device_type"`
	Tags       []string `json:"tags,omitempty"`
	MAC        string   `json:"mac"`
	IP         string   `json:"ip,omitempty"`
	BMC        string   `json:"bmc"`
	Power      string   `json:"power,omitempty"` // on, off, or the error (--power)
}

func listLabDevices(ctx context.Context, opts devicesOptions, env *appEnv) error {
	cfg, err := devices.Load(opts.lab)
	if err != nil {
		return err
	}
	list := make([]labDevice, len(cfg.Devices))
	for i, d := range cfg.Devices {
		list[i] = labDevice{Name: d.Name, DeviceType: d.DeviceType, Tags: d.Tags, MAC: d.MAC.String(),
			BMC: fmt.Sprintf("%s@%s:%d", d.BMC.User, d.BMC.Host, d.BMC.Port)}
		if d.IP.IsValid() {
			list[i].IP = d.IP.String()
		}
	}
	if opts.power {
		l := lab.New(cfg, nil, newLogger(env, slog.LevelError))
		defer l.Close()
		var wg sync.WaitGroup
		for i, d := range cfg.Devices {
			wg.Add(1)
			go func() {
				defer wg.Done()
				list[i].Power = powerState(ctx, l, d)
			}()
		}
		wg.Wait()
	}
	if opts.output == outputJSON {
		return printJSON(env.stdout, list)
	}
	tw := table(env.stdout)
	header := "NAME\tTYPE\tTAGS\tMAC\tBMC"
	if opts.power {
		header += "\tPOWER"
	}
	fmt.Fprintln(tw, header)
	for _, d := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s", d.Name, d.DeviceType, cmp.Or(strings.Join(d.Tags, ","), "-"), d.MAC, d.BMC)
		if opts.power {
			fmt.Fprintf(tw, "\t%s", shorten(d.Power, 60))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// powerState reads a device's power state: "on", "off" or the error.
func powerState(ctx context.Context, l *lab.Lab, d *devices.Device) string {
	p, err := l.Power(d)
	if err != nil {
		return err.Error()
	}
	pctx, cancel := context.WithTimeout(ctx, d.Settings.Timeouts.Power)
	defer cancel()
	on, err := p.PowerState(pctx)
	if err != nil {
		return err.Error()
	}
	if on {
		return "on"
	}
	return "off"
}
