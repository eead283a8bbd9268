package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"

	"github.com/labctl/labctl/simlab"
	"github.com/urfave/cli/v2"
)

func relayCommand() *cli.Command {
	return &cli.Command{
		Name:   "relay",
		Usage:  "internal: run one node (ipmi_sim, console relay, fault knobs, QEMU on request)",
		Hidden: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "node", Required: true, Usage: "node directory (with node.json)"},
			&cli.IntFlag{Name: "slot-fd", Usage: "inherited descriptor of the locked slot file, kept open while running"},
			&cli.BoolFlag{Name: "watch-stdin", Usage: "stop when stdin closes (the starting process died)"},
		},
		Action: func(c *cli.Context) error {
			return runRelay(c.Context, c.String("node"), c.Int("slot-fd"), c.Bool("watch-stdin"))
		},
	}
}

func runRelay(ctx context.Context, nodeDir string, slotFD int, watchStdin bool) error {
	cfg, err := simlab.ReadNodeConfig(nodeDir)
	if err != nil {
		return err
	}
	// The slot stays locked while this process holds the inherited file.
	var slot *os.File
	if slotFD > 0 {
		slot = os.NewFile(uintptr(slotFD), "slot")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("node", cfg.Name)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if watchStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			log.Info("stdin closed: the process that started the lab is gone, stopping")
			cancel()
		}()
	}
	r, err := simlab.NewRelay(cfg, log)
	if err != nil {
		return err
	}
	log.Info("relay start", "pid", os.Getpid(), "bmc_port", cfg.Ports.BMC, "accel", cfg.Accel)
	err = r.Serve(ctx)
	log.Info("relay stop", "err", err)
	runtime.KeepAlive(slot)
	if err != nil {
		return fmt.Errorf("relay %s: %w", cfg.Name, err)
	}
	return nil
}
