package main

import (
	"context"
	"fmt"
	"net"

	"github.com/urfave/cli/v2"

	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/netboot"
)

type dhcpConfigOptions struct {
	lab    string
	format netboot.DHCPFormat
}

func newNetbootCommand(env *appEnv) *cli.Command {
	return &cli.Command{
		Name:  "netboot",
		Usage: "help a lab's DHCP server send its nodes to labctl's boot server",
		Subcommands: []*cli.Command{{
			Name:  "dhcp-config",
			Usage: "print the DHCP server configuration for the lab's devices",
			Description: `Prints what a lab's DHCP server needs so that each device PXE-boots from
labctl's boot server: for dnsmasq, a dhcp-boot line for the labctl tag
and a dhcp-host line per device (with its tags as set:labctl-TAG); for ISC
dhcpd, a host block per device with next-server and filename. The boot
server's address is the lab's boot_server.tftp_server, the boot file its
boot_server.boot_file (default lpxelinux.0, which loads kernels over HTTP).

Real PXE firmware fetches the boot file from TFTP port 69: run the boot
server there (boot_server.tftp_listen = "0.0.0.0:69") or chainload iPXE.

EXAMPLES:
   labctl netboot dhcp-config --lab lab.toml > /etc/dnsmasq.d/labctl.conf
   labctl netboot dhcp-config --lab lab.toml --format isc >> /etc/dhcp/dhcpd.conf`,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "lab", Usage: "the lab `FILE`", EnvVars: []string{"LABCTL_LAB"}, TakesFile: true, Required: true},
				&cli.StringFlag{Name: "format", Value: "dnsmasq", Usage: "`FORMAT` of the output: dnsmasq or isc"},
			},
			Action: func(c *cli.Context) error {
				f := netboot.DHCPFormat(c.String("format"))
				if f != netboot.DHCPDnsmasq && f != netboot.DHCPISC {
					return usageErrorf("netboot dhcp-config: --format %q: use dnsmasq or isc", f)
				}
				return runDHCPConfig(c.Context, dhcpConfigOptions{lab: c.String("lab"), format: f}, env)
			},
		}},
	}
}

func runDHCPConfig(ctx context.Context, opts dhcpConfigOptions, env *appEnv) error {
	cfg, err := devices.Load(opts.lab)
	if err != nil {
		return err
	}
	next := net.ParseIP(cfg.BootServer.TFTPServer)
	if next == nil {
		addrs, err := net.DefaultResolver.LookupIP(ctx, "ip4", cfg.BootServer.TFTPServer)
		if err != nil || len(addrs) == 0 {
			return fmt.Errorf("boot_server.tftp_server %q: not an IPv4 address and it does not resolve: %v", cfg.BootServer.TFTPServer, err)
		}
		next = addrs[0]
	}
	var hosts []netboot.DHCPHost
	for _, d := range cfg.Devices {
		h := netboot.DHCPHost{Name: d.Name, MAC: net.HardwareAddr(d.MAC), Tags: d.Tags}
		if d.IP.IsValid() {
			h.IP = net.IP(d.IP.AsSlice())
		}
		hosts = append(hosts, h)
	}
	boot := netboot.DHCPBoot{NextServer: next, BootFile: cfg.BootServer.BootFile}
	return netboot.WriteDHCPConfig(env.stdout, opts.format, boot, hosts)
}
