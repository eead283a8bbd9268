package main

import (
	"context"
	"strings"
	"testing"

	"github.com/labctl/labctl/netboot"
)

func TestDHCPConfig(t *testing.T) {
	for _, tc := range []struct {
		format netboot.DHCPFormat
		want   []string
	}{
		{netboot.DHCPDnsmasq, []string{
			"dhcp-boot=tag:labctl-boot-bios-pxelinux,tag:labctl-arch-bios,lpxelinux.0,,192.168.2.1\n",
			"dhcp-boot=tag:labctl-boot-uefi-ipxe,tag:labctl-arch-efi64,tag:!labctl-ipxe,efi/snponly.efi,,192.168.2.1\n",
			"dhcp-host=set:labctl,set:labctl-boot-bios-pxelinux,set:labctl-netboot,set:labctl-x86_64,set:labctl-sata-ssd,0c:c4:7a:10:00:01,x86-01,192.168.2.11\n",
			"dhcp-host=set:labctl,set:labctl-boot-uboot-pxelinux,set:labctl-armhf,set:labctl-sata,fc:2f:40:17:da:2a,highbank-01,192.168.2.78\n",
		}},
		{netboot.DHCPISC, []string{
			"  host x86-02 {", "hardware ethernet 0c:c4:7a:10:00:02;", "next-server 192.168.2.1;", `filename "lpxelinux.0";`,
			`filename "efi/snponly.efi";`,
		}},
	} {
		t.Run(string(tc.format), func(t *testing.T) {
			env, stdout, _ := testEnv()
			if err := runDHCPConfig(context.Background(), dhcpConfigOptions{lab: "../../examples/rack/lab.toml", format: tc.format}, env); err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, stdout)
				}
			}
			if n := strings.Count(stdout.String(), "0c:c4:7a:10:00:0"); n != 2 {
				t.Errorf("%d x86 hosts in the output, want 2", n)
			}
		})
	}
}
