package netboot

import (
	"bytes"
	"flag"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

func mustMAC(t testing.TB, s string) net.HardwareAddr {
	t.Helper()
	mac, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return mac
}

// The boot kinds of the device types in device-types/.
var (
	bootBIOS       = DHCPLoader{Firmware: "bios", Loader: LoaderPXELinux, File: "lpxelinux.0"}
	bootUEFI       = DHCPLoader{Firmware: "uefi", Loader: LoaderIPXE, File: "efi/snponly.efi"}
	bootHTTP       = DHCPLoader{Firmware: "uefi", Loader: LoaderIPXE, File: "efi/snponly.efi", HTTP: true}
	bootSecureBoot = DHCPLoader{Firmware: "uefi-secureboot", Loader: LoaderGRUB, File: "shimx64.efi"}
	bootUBoot      = DHCPLoader{Firmware: "uboot", Loader: LoaderPXELinux}
)

// labHosts is a small lab in the shape of seed 003 (calxeda nodes) plus
// x86 nodes of every firmware and a host left to the DHCP pool.
func labHosts(t testing.TB) []DHCPHost {
	return []DHCPHost{
		{Name: "calxeda02-01-00", MAC: mustMAC(t, "fc:2f:40:17:da:28"), IP: net.ParseIP("192.168.2.76"), Tags: []string{"arm", "highbank"}, Boot: bootUBoot},
		{Name: "calxeda02-02-00", MAC: mustMAC(t, "FC:2F:40:08:7E:4C"), IP: net.ParseIP("192.168.2.79"), Tags: []string{"arm"}, Boot: bootUBoot},
		{Name: "x86-node1", MAC: mustMAC(t, "52:54:00:00:00:01"), IP: net.ParseIP("192.168.2.90"), Boot: bootBIOS},
		{Name: "pool-node", MAC: mustMAC(t, "52:54:00:00:00:02"), Boot: bootBIOS},
		{Name: "uefi1", MAC: mustMAC(t, "52:54:00:00:00:03"), IP: net.ParseIP("192.168.2.91"), Boot: bootUEFI},
		{Name: "uefi2", MAC: mustMAC(t, "52:54:00:00:00:04"), IP: net.ParseIP("192.168.2.92"), Tags: []string{"httpboot"}, Boot: bootHTTP},
		{Name: "sb1", MAC: mustMAC(t, "52:54:00:00:00:05"), IP: net.ParseIP("192.168.2.93"), Boot: bootSecureBoot},
	}
}

func TestWriteDHCPConfigGolden(t *testing.T) {
	boot := DHCPBoot{NextServer: net.ParseIP("192.168.2.1"), HTTPURL: "http://192.168.2.1:8080"}
	for _, format := range []DHCPFormat{DHCPDnsmasq, DHCPISC} {
		t.Run(string(format), func(t *testing.T) {
			var b bytes.Buffer
			if err := WriteDHCPConfig(&b, format, boot, labHosts(t)); err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "dhcp", string(format)+".golden")
			if *update {
				if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(b.Bytes(), want) {
				t.Fatalf("output differs from %s:\n%s", golden, b.String())
			}
			checkDHCPSyntax(t, format, b.Bytes())
		})
	}
}

// checkDHCPSyntax has the real DHCP server check the rendered file, when
// it is installed (Debian packages dnsmasq-base, isc-dhcp-server).
func checkDHCPSyntax(t *testing.T, format DHCPFormat, conf []byte) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "dhcp.conf")
	if err := os.WriteFile(file, conf, 0o644); err != nil {
		t.Fatal(err)
	}
	var cmd *exec.Cmd
	switch format {
	case DHCPDnsmasq:
		bin, err := exec.LookPath("dnsmasq")
		if err != nil {
			t.Log("SKIP syntax check: dnsmasq not installed (apt-get install dnsmasq-base)")
			return
		}
		cmd = exec.Command(bin, "--test", "--conf-file="+file)
	case DHCPISC:
		bin, err := exec.LookPath("dhcpd")
		if err != nil {
			t.Log("SKIP syntax check: dhcpd not installed (apt-get install isc-dhcp-server)")
			return
		}
		cmd = exec.Command(bin, "-t", "-cf", file)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s rejects the config: %v\n%s", cmd.Path, err, out)
	}
}

func TestWriteDHCPConfigRejects(t *testing.T) {
	good := DHCPBoot{NextServer: net.ParseIP("10.0.0.1"), HTTPURL: "http://10.0.0.1"}
	host := func(name, mac, ip string) DHCPHost {
		h := DHCPHost{Name: name, MAC: mustMAC(t, mac), Boot: bootBIOS}
		if ip != "" {
			h.IP = net.ParseIP(ip)
		}
		return h
	}
	tests := map[string]struct {
		format DHCPFormat
		boot   DHCPBoot
		hosts  []DHCPHost
		want   []string // every one must appear in the error
	}{
		"unknown format": {format: "kea", boot: good, hosts: []DHCPHost{host("a", "52:54:00:00:00:01", "")}, want: []string{`format "kea"`}},
		"no hosts":       {format: DHCPISC, boot: good, want: []string{"no hosts"}},
		"ipv6 next server": {format: DHCPISC, boot: DHCPBoot{NextServer: net.ParseIP("::1"), HTTPURL: "http://h"},
			hosts: []DHCPHost{host("a", "52:54:00:00:00:01", "")}, want: []string{"next server"}},
		"boot file quote": {format: DHCPISC, boot: good,
			hosts: []DHCPHost{withBoot(host("a", "52:54:00:00:00:01", ""), DHCPLoader{"bios", LoaderPXELinux, `pxe"; evil`, false})}, want: []string{"boot file"}},
		"boot file absolute": {format: DHCPDnsmasq, boot: good,
			hosts: []DHCPHost{withBoot(host("a", "52:54:00:00:00:01", ""), DHCPLoader{"uefi", LoaderIPXE, "/efi/snponly.efi", false})}, want: []string{"boot file", "absolute"}},
		"boot file comma": {format: DHCPDnsmasq, boot: good,
			hosts: []DHCPHost{withBoot(host("a", "52:54:00:00:00:01", ""), DHCPLoader{"bios", LoaderPXELinux, "a,b", false})}, want: []string{"boot file"}},
		"boot file for uboot": {format: DHCPDnsmasq, boot: good,
			hosts: []DHCPHost{withBoot(host("a", "52:54:00:00:00:01", ""), DHCPLoader{"uboot", LoaderPXELinux, "x.0", false})}, want: []string{"U-Boot"}},
		"http boot with grub": {format: DHCPDnsmasq, boot: good,
			hosts: []DHCPHost{withBoot(host("a", "52:54:00:00:00:01", ""), DHCPLoader{"uefi-secureboot", LoaderGRUB, "shimx64.efi", true})}, want: []string{"UEFI HTTP boot: want firmware uefi and loader ipxe"}},
		"unknown firmware": {format: DHCPDnsmasq, boot: good,
			hosts: []DHCPHost{withBoot(host("a", "52:54:00:00:00:01", ""), DHCPLoader{"coreboot", LoaderPXELinux, "x.0", false})}, want: []string{`firmware "coreboot"`}},
		"unknown loader": {format: DHCPDnsmasq, boot: good,
			hosts: []DHCPHost{withBoot(host("a", "52:54:00:00:00:01", ""), DHCPLoader{"uefi", "refind", "x.efi", false})}, want: []string{`"refind" is not a boot loader family`}},
		"http url": {format: DHCPDnsmasq, boot: DHCPBoot{NextServer: net.ParseIP("10.0.0.1"), HTTPURL: "http://h/a,b"},
			hosts: []DHCPHost{host("a", "52:54:00:00:00:01", "")}, want: []string{`HTTP URL "http://h/a,b"`}},
		"https url": {format: DHCPDnsmasq, boot: DHCPBoot{NextServer: net.ParseIP("10.0.0.1"), HTTPURL: "ftp://h"},
			hosts: []DHCPHost{host("a", "52:54:00:00:00:01", "")}, want: []string{`HTTP URL "ftp://h"`}},
		"bad tag": {format: DHCPDnsmasq, boot: DHCPBoot{NextServer: net.ParseIP("10.0.0.1"), HTTPURL: "http://h", Tag: "a,b"},
			hosts: []DHCPHost{host("a", "52:54:00:00:00:01", "")}, want: []string{`tag "a,b"`}},
		"everything wrong with hosts": {format: DHCPDnsmasq, boot: good, hosts: []DHCPHost{
			host("node1", "52:54:00:00:00:01", "10.0.0.5"),
			host("NODE1", "52:54:00:00:00:01", "10.0.0.5"),
			host("-bad", "52:54:00:00:00:02", "2001:db8::1"),
			{Name: "short-mac", MAC: net.HardwareAddr{1, 2}, Boot: bootBIOS},
			{Name: "under_score", MAC: mustMAC(t, "52:54:00:00:00:03"), Tags: []string{"ok", "no,comma"}, Boot: bootBIOS},
		}, want: []string{
			`host 2 ("NODE1"): name also used by host 1`,
			`host 2 ("NODE1"): MAC 52:54:00:00:00:01 also used by host 1`,
			`host 2 ("NODE1"): IP 10.0.0.5 also used by host 1`,
			`host 3 ("-bad"): name`,
			`host 3 ("-bad"): IP 2001:db8::1: want IPv4`,
			`host 4 ("short-mac"): MAC`,
			`host 5 ("under_score"): name`,
			`host 5 ("under_score"): tag "no,comma"`,
		}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			var b bytes.Buffer
			err := WriteDHCPConfig(&b, tt.format, tt.boot, tt.hosts)
			if err == nil {
				t.Fatalf("accepted; wrote:\n%s", b.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if b.Len() != 0 {
				t.Errorf("wrote %d bytes despite the error", b.Len())
			}
		})
	}
}

func withBoot(h DHCPHost, l DHCPLoader) DHCPHost {
	h.Boot = l
	return h
}
