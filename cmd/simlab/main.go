// Command simlab runs the simulated lab: `simlab up` starts nodes (ipmi_sim
// BMC + console relay + QEMU) and writes a lab config for labctl, `simlab
// down` stops them, `simlab fault` sets fault knobs. `relay` and `chassis`
// are internal: the per-node supervisor and ipmi_sim's chassis_control hook.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	app := &cli.App{
		Name:  "simlab",
		Usage: "run the simulated lab (ipmi_sim BMCs + QEMU nodes)",
		Commands: []*cli.Command{
			upCommand(),
			downCommand(),
			faultCommand(),
			relayCommand(),
			chassisCommand(),
		},
	}
	if err := app.RunContext(ctx, os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "simlab: %v\n", err)
		os.Exit(1)
	}
}
