package netboot

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
)

// DHCPFormat names a DHCP server's configuration dialect.
type DHCPFormat string

const (
	// DHCPDnsmasq renders dhcp-host and dhcp-boot lines for dnsmasq.
	DHCPDnsmasq DHCPFormat = "dnsmasq"
	// DHCPISC renders host declarations for ISC dhcpd.
	DHCPISC DHCPFormat = "isc"
)

// DHCPHost is one node as the lab's DHCP server must know it.
type DHCPHost struct {
	Name string           // host name: letters, digits and '-', at most 63
	MAC  net.HardwareAddr // 6-byte Ethernet address
	IP   net.IP           // fixed IPv4 address; nil leaves it to the pool
	Tags []string         // labctl device tags; dnsmasq gets them as set:labctl-<tag>
}

// DHCPBoot says where the lab's nodes find labctl's boot server.
type DHCPBoot struct {
	NextServer net.IP // the TFTP server's IPv4 address (next-server, siaddr)
	BootFile   string // the NBP under the boot root, e.g. "lpxelinux.0"
	// Tag is the dnsmasq tag that marks labctl's hosts; default "labctl".
	Tag string
}

// WriteDHCPConfig writes the DHCP configuration that makes the hosts boot
// from labctl's boot server: for dnsmasq, one dhcp-boot line for the tag
// and one dhcp-host line per host (seed 003's shape); for ISC dhcpd, one
// host block per host with next-server and filename (seeds 000 and 004).
// Input is checked first and nothing is written if any of it is wrong;
// the error lists every problem.
func WriteDHCPConfig(w io.Writer, format DHCPFormat, boot DHCPBoot, hosts []DHCPHost) error {
	if boot.Tag == "" {
		boot.Tag = "labctl"
	}
	if err := validateDHCP(boot, hosts); err != nil {
		return fmt.Errorf("dhcp config: %w", err)
	}
	var b bytes.Buffer
	switch format {
	case DHCPDnsmasq:
		renderDnsmasq(&b, boot, hosts)
	case DHCPISC:
		renderISC(&b, boot, hosts)
	default:
		return fmt.Errorf("dhcp config: format %q: want %s or %s", format, DHCPDnsmasq, DHCPISC)
	}
	_, err := w.Write(b.Bytes())
	return err
}

func renderDnsmasq(b *bytes.Buffer, boot DHCPBoot, hosts []DHCPHost) {
	fmt.Fprintf(b, "# dnsmasq: labctl boot server (written by labctl netboot dhcp-config)\n")
	fmt.Fprintf(b, "# Hosts tagged %q boot %s from the TFTP server at %s.\n", boot.Tag, boot.BootFile, boot.NextServer)
	fmt.Fprintf(b, "dhcp-boot=tag:%s,%s,,%s\n", boot.Tag, boot.BootFile, boot.NextServer)
	for _, h := range hosts {
		fields := []string{"set:" + boot.Tag}
		for _, t := range h.Tags {
			fields = append(fields, "set:"+boot.Tag+"-"+t)
		}
		fields = append(fields, h.MAC.String(), h.Name)
		if h.IP != nil {
			fields = append(fields, h.IP.To4().String())
		}
		fmt.Fprintf(b, "dhcp-host=%s\n", strings.Join(fields, ","))
	}
}

func renderISC(b *bytes.Buffer, boot DHCPBoot, hosts []DHCPHost) {
	fmt.Fprintf(b, "# ISC dhcpd: labctl boot server (written by labctl netboot dhcp-config)\n")
	for _, h := range hosts {
		fmt.Fprintf(b, "host %s {\n", h.Name)
		if len(h.Tags) > 0 {
			fmt.Fprintf(b, "  # tags: %s\n", strings.Join(h.Tags, ", "))
		}
		fmt.Fprintf(b, "  hardware ethernet %s;\n", h.MAC)
		if h.IP != nil {
			fmt.Fprintf(b, "  fixed-address %s;\n", h.IP.To4())
		}
		fmt.Fprintf(b, "  next-server %s;\n  filename \"%s\";\n}\n", boot.NextServer, boot.BootFile)
	}
}

// validateDHCP checks every field that reaches the output, and that no two
// hosts share a name, MAC or IP.
func validateDHCP(boot DHCPBoot, hosts []DHCPHost) error {
	var errs []error
	if boot.NextServer.To4() == nil {
		errs = append(errs, fmt.Errorf("next server %q: want an IPv4 address", boot.NextServer))
	}
	if p, err := cleanPath(boot.BootFile); err != nil {
		errs = append(errs, fmt.Errorf("boot file %q: %w", boot.BootFile, err))
	} else if p != boot.BootFile || strings.ContainsAny(p, " \t,\"'\\#;") {
		errs = append(errs, fmt.Errorf("boot file %q: want a plain path under the boot root (no spaces, quotes, commas, ';' or '#')", boot.BootFile))
	}
	if !isTag(boot.Tag) {
		errs = append(errs, fmt.Errorf("tag %q: want letters, digits, '_' and '-'", boot.Tag))
	}
	if len(hosts) == 0 {
		errs = append(errs, errors.New("no hosts"))
	}
	names, macs, ips := map[string]int{}, map[string]int{}, map[string]int{}
	for i, h := range hosts {
		where := fmt.Sprintf("host %d (%q)", i+1, h.Name)
		if !isHostName(h.Name) {
			errs = append(errs, fmt.Errorf("%s: name: want letters, digits and '-', 1 to 63, not starting or ending with '-'", where))
		} else if j, dup := names[strings.ToLower(h.Name)]; dup {
			errs = append(errs, fmt.Errorf("%s: name also used by host %d", where, j))
		} else {
			names[strings.ToLower(h.Name)] = i + 1
		}
		if len(h.MAC) != 6 {
			errs = append(errs, fmt.Errorf("%s: MAC %q: want a 6-byte Ethernet address", where, h.MAC))
		} else if j, dup := macs[h.MAC.String()]; dup {
			errs = append(errs, fmt.Errorf("%s: MAC %s also used by host %d", where, h.MAC, j))
		} else {
			macs[h.MAC.String()] = i + 1
		}
		if h.IP != nil {
			if h.IP.To4() == nil {
				errs = append(errs, fmt.Errorf("%s: IP %s: want IPv4", where, h.IP))
			} else if j, dup := ips[h.IP.To4().String()]; dup {
				errs = append(errs, fmt.Errorf("%s: IP %s also used by host %d", where, h.IP, j))
			} else {
				ips[h.IP.To4().String()] = i + 1
			}
		}
		for _, t := range h.Tags {
			if !isTag(t) {
				errs = append(errs, fmt.Errorf("%s: tag %q: want letters, digits, '_' and '-'", where, t))
			}
		}
	}
	return errors.Join(errs...)
}

// isHostName reports whether s is one DNS label (RFC 1123).
func isHostName(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// isTag reports whether s is safe as a dnsmasq tag and an ISC comment.
func isTag(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
