//go:build !labctl_run

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
			Description: `Prints what a lab's DHCP server needs so that each device boots from
labctl's boot server, with the boot file chosen by the client architecture
the request carries (DHCP option 93, RFC 4578) and the device type's [boot]
table (firmware, loader, file):

   arch 0 (BIOS)            the BIOS loader over TFTP (lpxelinux.0)
   arch 7 or 9 (x86-64 UEFI) the EFI loader over TFTP (efi/snponly.efi; for
                            Secure Boot shimx64.efi, which loads grubx64.efi)
   arch 16 + vendor class HTTPClient (UEFI HTTP boot; device types with
                            boot.method = "http", which get nothing over PXE)
                            an http:// URL to the EFI loader, option 60
                            HTTPClient in the answer
   user class iPXE          the URL of labctl's iPXE start script
   anything else            no boot file, and a line in the DHCP server's log
                            (dnsmasq: tag labctl-unknown-arch with log-dhcp;
                            ISC: "labctl: ... no boot file")

For dnsmasq: the architecture and class tags, dhcp-boot lines per kind of
device, a dhcp-host line per device (its tags as set:labctl-TAG); for ISC
dhcpd: a group per kind of device with conditional filenames, a host block
per device. next-server is the lab's boot_server.tftp_server, URLs start
with boot_server.http_url. docs/uefi.md shows a whole lab's setup.

Real PXE firmware fetches the boot file from TFTP port 69: run the boot
server there (boot_server.tftp_listen = "0.0.0.0:69").

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
		b := d.Settings.Boot
		h := netboot.DHCPHost{Name: d.Name, MAC: net.HardwareAddr(d.MAC), Tags: d.Tags,
			Boot: netboot.DHCPLoader{Firmware: string(b.Firmware), Loader: netboot.Loader(b.Loader), File: b.File,
				HTTP: b.Method == devices.BootHTTP}}
		if d.IP.IsValid() {
			h.IP = net.IP(d.IP.AsSlice())
		}
		hosts = append(hosts, h)
	}
	boot := netboot.DHCPBoot{NextServer: next, HTTPURL: cfg.BootServer.HTTPURL}
	return netboot.WriteDHCPConfig(env.stdout, opts.format, boot, hosts)
}
