package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/labctl/labctl/simlab"
	"github.com/urfave/cli/v2"
)

func upCommand() *cli.Command {
	return &cli.Command{
		Name:  "up",
		Usage: "start N nodes and write the lab config; the last line printed is `lab: PATH`",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "nodes", Aliases: []string{"n"}, Value: 2, Usage: "how many nodes"},
			&cli.StringFlag{Name: "dir", Value: "build/simlab/lab", Usage: "lab directory (state, logs, lab.toml)"},
			&cli.StringFlag{Name: "artifacts", Usage: "artifacts directory (default build/simlab/artifacts of this repository)"},
			&cli.StringFlag{Name: "device-types", Usage: "device type directory for lab.toml (default device-types of this repository)"},
			&cli.StringFlag{Name: "accel", EnvVars: []string{"SIMLAB_ACCEL"}, Usage: "tcg, kvm or auto (KVM only after a smoke boot works)"},
			&cli.IntFlag{Name: "memory", Usage: "RAM per node in MiB (default 256 on BIOS, 512 on UEFI)"},
			&cli.DurationFlag{Name: "slot-wait", Value: 30 * time.Minute, Usage: "how long to wait for free machine-wide slots"},
			&cli.StringFlag{Name: "network", Value: simlab.NetUser, Usage: "`MODE`: user (QEMU user-mode networking per node) or bridge (own network namespace, bridge, taps, dnsmasq; root)"},
			&cli.StringFlag{Name: "labctl", Usage: "labctl `BINARY` whose `netboot dhcp-config` dnsmasq runs (bridge; default: labctl beside simlab, then PATH)"},
			&cli.StringFlag{Name: "firmware", Usage: "per node, comma-separated: bios, uefi, uefi-httpboot (PXE off, UEFI HTTP boot) or uefi-secureboot (default bios; the uefi kinds netboot on --network bridge only: user-mode DHCP cannot answer them), e.g. bios,uefi,uefi-httpboot,uefi-secureboot"},
			&cli.BoolFlag{Name: "nfs", Usage: "also start an nfs-ganesha for diskless nfs jobs and write its [nfs] section into lab.toml (network user; root)"},
		},
		Action: func(c *cli.Context) error {
			return runUp(c.Context, simlab.Options{
				Nodes:       c.Int("nodes"),
				Dir:         c.String("dir"),
				Artifacts:   c.String("artifacts"),
				DeviceTypes: c.String("device-types"),
				Accel:       c.String("accel"),
				MemoryMB:    c.Int("memory"),
				SlotWait:    c.Duration("slot-wait"),
				Network:     c.String("network"),
				Labctl:      labctlBinary(c.String("labctl"), c.String("network")),
				Firmware:    splitList(c.String("firmware")),
				NFS:         c.Bool("nfs"),
			}, os.Stdout)
		},
	}
}

// runUp starts the lab. Its relays keep running after simlab exits.
func runUp(ctx context.Context, opts simlab.Options, out io.Writer) error {
	if _, err := os.Stat(opts.Dir + "/nodes"); err == nil {
		// A lab left in the directory: stop what it started first.
		if err := simlab.Down(opts.Dir); err != nil {
			return fmt.Errorf("stop the previous lab in %s: %w", opts.Dir, err)
		}
		if err := os.RemoveAll(opts.Dir); err != nil {
			return err
		}
	}
	opts.Progress = func(s string) { fmt.Fprintln(out, s) }
	// Labs started by hand take the slots above the test slots.
	opts.Pool = simlab.LabPool()
	start := time.Now()
	lab, err := simlab.Up(ctx, opts)
	if err != nil {
		return err
	}
	for _, n := range lab.Nodes {
		fmt.Fprintf(out, "%s: bmc %s user %s (password in %s), mac %s, console log %s\n",
			n.Name, n.BMC.Addr(), n.BMC.User, n.BMC.PasswordFile, n.MAC, n.ConsoleLog)
	}
	fmt.Fprintf(out, "boot server: serve %s on tftp %s and http %s (nodes fetch %s)\n",
		lab.BootServer.Root, lab.BootServer.TFTPAddr, lab.BootServer.HTTPAddr, lab.BootServer.HTTPURL)
	if n := lab.Network; n != nil {
		fmt.Fprintf(out, "network: namespace %s, bridge %s %s, dnsmasq log %s; run labctl with: ip netns exec %s labctl ...\n",
			n.NetNS, n.Bridge, n.Address, n.DHCPLog, n.NetNS)
	}
	if s := lab.NFS; s != nil {
		fmt.Fprintf(out, "nfs: ganesha on 127.0.0.1:%d (nodes mount %s:%d), log %s\n", s.Config.Port, simlab.HostFromGuest, s.Config.Port, s.Config.LogFile)
	}
	fmt.Fprintf(out, "%d node(s) up in %.1fs (QEMU %s); stop with: simlab down --dir %s\n", len(lab.Nodes), time.Since(start).Seconds(), lab.Accel, lab.Dir)
	fmt.Fprintf(out, "lab: %s\n", lab.ConfigPath)
	return nil
}

// labctlBinary is the labctl a bridge lab generates its DHCP config with:
// flag, else labctl beside this executable (bin/), else PATH.
func labctlBinary(flag, network string) string {
	if flag != "" || network != simlab.NetBridge {
		return flag
	}
	if self, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(self), "labctl"); fileExists(p) {
			return p
		}
	}
	if p, err := exec.LookPath("labctl"); err == nil {
		return p
	}
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// splitList splits a comma-separated flag value.
func splitList(s string) []string {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	var out []string
	for _, f := range strings.Split(s, ",") {
		out = append(out, strings.TrimSpace(f))
	}
	return out
}
