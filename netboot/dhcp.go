package netboot

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
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
	Boot DHCPLoader       // how it boots (its device type's [boot])
}

// DHCPLoader says how a host's firmware boots from the network and which
// loader it gets. Hosts with the same DHCPLoader share one set of rules.
type DHCPLoader struct {
	// Firmware is "bios", "uefi", "uefi-secureboot" or "uboot" (no loader
	// file: U-Boot reads pxelinux configs itself).
	Firmware string
	// Loader is the family of File; for iPXE the DHCP server also answers
	// iPXE's own request (user class "iPXE") with IPXEStartScript's URL.
	Loader Loader
	// File is the loader under the boot root; "" for uboot.
	File string
	// HTTP is UEFI HTTP boot: the host gets File as an http:// URL when it
	// asks with architecture 16 and vendor class HTTPClient, and nothing
	// over PXE, so that its firmware goes on to its HTTP boot option.
	HTTP bool
}

// DHCPBoot says where the lab's nodes find labctl's boot server.
type DHCPBoot struct {
	NextServer net.IP // the TFTP server's IPv4 address (next-server, siaddr)
	// HTTPURL is the boot server's base URL as nodes reach it, for UEFI
	// HTTP boot and iPXE (no trailing slash).
	HTTPURL string
	// Tag is the dnsmasq tag that marks labctl's hosts, and the prefix of
	// every tag the config sets; default "labctl".
	Tag string
}

// Client architectures (DHCP option 93, RFC 4578 and IANA's registry)
// that labctl answers.
const (
	ArchBIOS        = 0  // x86 BIOS
	ArchEFIBC       = 7  // x86-64 UEFI (what x86-64 firmware sends)
	ArchEFIx64      = 9  // x86-64 UEFI (the RFC's code; some firmware sends it)
	ArchEFIx64HTTP  = 16 // x86-64 UEFI HTTP boot
	HTTPClientClass = "HTTPClient"
)

// answers lists the client architectures a host of this kind gets a boot
// file for: BIOS 0; UEFI PXE 7 and 9 over TFTP; UEFI HTTP boot 16 as an
// URL; U-Boot none.
func (l DHCPLoader) answers() (pxe []int, http bool) {
	switch {
	case l.Firmware == "bios":
		return []int{ArchBIOS}, false
	case l.HTTP:
		return nil, true
	case l.Firmware == "uefi" || l.Firmware == "uefi-secureboot":
		return []int{ArchEFIBC, ArchEFIx64}, false
	}
	return nil, false
}

// profile is one DHCPLoader and its hosts, in the order of first use.
type profile struct {
	DHCPLoader
	tag   string
	hosts []string
}

// writeTitle writes the comment line that opens the profile's part of a
// DHCP config, without its newline: its tag and how its hosts boot.
func (p *profile) writeTitle(b *bytes.Buffer) {
	fmt.Fprintf(b, "\n# %s: firmware %s, loader %s", p.tag, p.Firmware, p.Loader)
	if p.File != "" {
		fmt.Fprintf(b, " %s", p.File)
	}
	if p.HTTP {
		b.WriteString(" over UEFI HTTP boot")
	}
}

// profiles groups hosts by how they boot; each group gets a tag
// TAG-boot-FIRMWARE-LOADER (with a number when two groups would share it).
func profiles(tag string, hosts []DHCPHost) ([]*profile, map[string]*profile) {
	var list []*profile
	byLoader := map[DHCPLoader]*profile{}
	byHost := map[string]*profile{}
	used := map[string]int{}
	for _, h := range hosts {
		p, ok := byLoader[h.Boot]
		if !ok {
			name := tag + "-boot-" + h.Boot.Firmware
			if h.Boot.HTTP {
				name += "-http"
			}
			if h.Boot.Loader != "" {
				name += "-" + string(h.Boot.Loader)
			}
			used[name]++
			if used[name] > 1 {
				name += fmt.Sprintf("-%d", used[name])
			}
			p = &profile{DHCPLoader: h.Boot, tag: name}
			byLoader[h.Boot] = p
			list = append(list, p)
		}
		p.hosts = append(p.hosts, h.Name)
		byHost[h.Name] = p
	}
	return list, byHost
}

// WriteDHCPConfig writes the DHCP configuration that makes the hosts boot
// from labctl's boot server, with boot files by client architecture (DHCP
// option 93): for dnsmasq, tags for the architectures, the HTTP-boot vendor
// class and iPXE's user class, one dhcp-boot line per kind of host and
// architecture, and a dhcp-host line per host; for ISC dhcpd, one group per
// kind of host with conditional filenames and a log line for an
// architecture it has no file for, and a host block per host. Input is
// checked first and nothing is written if any of it is wrong; the error
// lists every problem.
func WriteDHCPConfig(w io.Writer, format DHCPFormat, boot DHCPBoot, hosts []DHCPHost) error {
	if boot.Tag == "" {
		boot.Tag = "labctl"
	}
	boot.HTTPURL = strings.TrimSuffix(boot.HTTPURL, "/")
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

// httpFile is the URL of a file under the boot root.
func (b DHCPBoot) httpFile(p string) string { return b.HTTPURL + "/" + escapePath(p) }

func renderDnsmasq(b *bytes.Buffer, boot DHCPBoot, hosts []DHCPHost) {
	t := boot.Tag
	list, byHost := profiles(t, hosts)
	fmt.Fprintf(b, "# dnsmasq: labctl boot server (written by labctl netboot dhcp-config)\n")
	fmt.Fprintf(b, "# Hosts tagged %q boot from the TFTP server at %s and %s,\n", t, boot.NextServer, boot.HTTPURL)
	fmt.Fprintf(b, "# with a boot file chosen by client architecture (option 93, RFC 4578).\n")
	fmt.Fprintf(b, "# Hosts with a loader are tagged %s-netboot. log-dhcp logs each request's\n", t)
	fmt.Fprintf(b, "# tags: %s-unknown-arch marks a boot request\n", t)
	fmt.Fprintf(b, "# with an architecture labctl has no loader for (no boot file offered),\n")
	fmt.Fprintf(b, "# %s-boot-*-wrong-arch one that the host's device type does not boot with.\n", t)
	fmt.Fprintf(b, "log-dhcp\n")
	fmt.Fprintf(b, "dhcp-match=set:%s-pxe,option:client-arch\n", t)
	fmt.Fprintf(b, "dhcp-match=set:%s-arch-bios,option:client-arch,%d\n", t, ArchBIOS)
	fmt.Fprintf(b, "dhcp-match=set:%s-arch-efi64,option:client-arch,%d\n", t, ArchEFIBC)
	fmt.Fprintf(b, "dhcp-match=set:%s-arch-efi64,option:client-arch,%d\n", t, ArchEFIx64)
	fmt.Fprintf(b, "dhcp-match=set:%s-arch-efi64-http-code,option:client-arch,%d\n", t, ArchEFIx64HTTP)
	fmt.Fprintf(b, "dhcp-vendorclass=set:%s-httpclient,%s\n", t, HTTPClientClass)
	fmt.Fprintf(b, "tag-if=set:%s-arch-efi64-http,tag:%s-arch-efi64-http-code,tag:%s-httpclient\n", t, t, t)
	fmt.Fprintf(b, "dhcp-userclass=set:%s-ipxe,iPXE\n", t)
	// iPXE waits about 2 s for ProxyDHCP offers unless told there are none
	// (its option 175.176, no-pxedhcp): labctl's hosts get their boot file
	// in this answer.
	fmt.Fprintf(b, "dhcp-option=tag:%s-netboot,tag:%s-ipxe,encap:175,176,1b\n", t, t)
	fmt.Fprintf(b, "tag-if=set:%s-unknown-arch,tag:%s-netboot,tag:%s-pxe,tag:!%s-arch-bios,tag:!%s-arch-efi64,tag:!%s-arch-efi64-http\n", t, t, t, t, t, t)
	for _, p := range list {
		p.writeTitle(b)
		fmt.Fprintf(b, " (%s)\n", strings.Join(p.hosts, ", "))
		pxe, http := p.answers()
		notIPXE := ""
		if p.Loader == LoaderIPXE {
			notIPXE = ",tag:!" + t + "-ipxe"
		}
		var archTags []string
		if len(pxe) > 0 {
			arch := t + "-arch-efi64"
			if pxe[0] == ArchBIOS {
				arch = t + "-arch-bios"
			}
			archTags = append(archTags, arch)
			fmt.Fprintf(b, "dhcp-boot=tag:%s,tag:%s%s,%s,,%s\n", p.tag, arch, notIPXE, p.File, boot.NextServer)
		}
		if http {
			arch := t + "-arch-efi64-http"
			archTags = append(archTags, arch)
			fmt.Fprintf(b, "dhcp-boot=tag:%s,tag:%s%s,%s\n", p.tag, arch, notIPXE, boot.httpFile(p.File))
			fmt.Fprintf(b, "dhcp-option-force=tag:%s,tag:%s%s,option:vendor-class,%s\n", p.tag, arch, notIPXE, HTTPClientClass)
		}
		if p.Loader == LoaderIPXE {
			fmt.Fprintf(b, "dhcp-boot=tag:%s,tag:%s-ipxe,%s\n", p.tag, t, boot.httpFile(IPXEStartScript))
		}
		if len(archTags) > 0 {
			fmt.Fprintf(b, "tag-if=set:%s-wrong-arch,tag:%s,tag:%s-pxe", p.tag, p.tag, t)
			for _, a := range archTags {
				fmt.Fprintf(b, ",tag:!%s", a)
			}
			if p.Loader == LoaderIPXE {
				fmt.Fprintf(b, ",tag:!%s-ipxe", t)
			}
			b.WriteString("\n")
		}
	}
	b.WriteString("\n")
	for _, h := range hosts {
		fields := []string{"set:" + t, "set:" + byHost[h.Name].tag}
		if byHost[h.Name].File != "" {
			fields = append(fields, "set:"+t+"-netboot")
		}
		for _, tg := range h.Tags {
			fields = append(fields, "set:"+t+"-"+tg)
		}
		fields = append(fields, h.MAC.String(), h.Name)
		if h.IP != nil {
			fields = append(fields, h.IP.To4().String())
		}
		fmt.Fprintf(b, "dhcp-host=%s\n", strings.Join(fields, ","))
	}
}

func renderISC(b *bytes.Buffer, boot DHCPBoot, hosts []DHCPHost) {
	list, _ := profiles(boot.Tag, hosts)
	opt := boot.Tag + "-client-arch"
	fmt.Fprintf(b, "# ISC dhcpd: labctl boot server (written by labctl netboot dhcp-config)\n")
	fmt.Fprintf(b, "# Boot files by client architecture (option 93, RFC 4578); a boot request\n")
	fmt.Fprintf(b, "# with an architecture a host's device type has no loader for gets no\n")
	fmt.Fprintf(b, "# filename and a \"labctl: ... no boot file\" line in dhcpd's log.\n")
	fmt.Fprintf(b, "option %s code 93 = unsigned integer 16;\n", opt)
	byName := map[string]DHCPHost{}
	for _, h := range hosts {
		byName[h.Name] = h
	}
	for _, p := range list {
		p.writeTitle(b)
		b.WriteString("\ngroup {\n")
		fmt.Fprintf(b, "  next-server %s;\n", boot.NextServer)
		pxe, http := p.answers()
		var conds []string
		if p.Loader == LoaderIPXE {
			conds = append(conds, fmt.Sprintf("exists user-class and option user-class = \"iPXE\" {\n    filename \"%s\";\n  }", boot.httpFile(IPXEStartScript)))
		}
		if len(pxe) > 0 {
			var eq []string
			for _, a := range pxe {
				eq = append(eq, fmt.Sprintf("option %s = %02x:%02x", opt, a>>8, a&0xff))
			}
			conds = append(conds, fmt.Sprintf("%s {\n    filename \"%s\";\n  }", strings.Join(eq, " or "), p.File))
		}
		if http {
			conds = append(conds, fmt.Sprintf("option %s = %02x:%02x and substring(option vendor-class-identifier, 0, %d) = \"%s\" {\n    option vendor-class-identifier \"%s\";\n    filename \"%s\";\n  }",
				opt, ArchEFIx64HTTP>>8, ArchEFIx64HTTP&0xff, len(HTTPClientClass), HTTPClientClass, HTTPClientClass, boot.httpFile(p.File)))
		}
		if len(conds) > 0 {
			conds = append(conds, fmt.Sprintf("exists %s {\n    log(info, concat(\"labctl: \", binary-to-ascii(16, 8, \":\", substring(hardware, 1, 6)), \": no boot file for client architecture \", binary-to-ascii(10, 16, \"\", option %s), \" (%s)\"));\n  }", opt, opt, p.tag))
			fmt.Fprintf(b, "  if %s\n", strings.Join(conds, " elsif "))
		}
		for _, name := range p.hosts {
			h := byName[name]
			fmt.Fprintf(b, "  host %s {\n", h.Name)
			if len(h.Tags) > 0 {
				fmt.Fprintf(b, "    # tags: %s\n", strings.Join(h.Tags, ", "))
			}
			fmt.Fprintf(b, "    hardware ethernet %s;\n", h.MAC)
			if h.IP != nil {
				fmt.Fprintf(b, "    fixed-address %s;\n", h.IP.To4())
			}
			b.WriteString("  }\n")
		}
		b.WriteString("}\n")
	}
}

// validateDHCP checks every field that reaches the output, and that no two
// hosts share a name, MAC or IP.
func validateDHCP(boot DHCPBoot, hosts []DHCPHost) error {
	var errs []error
	if boot.NextServer.To4() == nil {
		errs = append(errs, fmt.Errorf("next server %q: want an IPv4 address", boot.NextServer))
	}
	if u, err := url.Parse(boot.HTTPURL); err != nil || u.Scheme != "http" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" ||
		strings.ContainsAny(boot.HTTPURL, " \t,\"'\\#;") {
		errs = append(errs, fmt.Errorf("HTTP URL %q: want http://HOST[:PORT][/PATH] (firmware HTTP boot and iPXE fetch from it; no quotes, commas, ';' or '#')", boot.HTTPURL))
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
		if err := h.Boot.check(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		}
	}
	return errors.Join(errs...)
}

// check refuses a firmware or loader DHCP cannot be written for, and a
// file name that would break out of a config line.
func (l DHCPLoader) check() error {
	switch l.Firmware {
	case "bios", "uefi", "uefi-secureboot":
		if _, err := ParseLoader(string(l.Loader)); err != nil {
			return fmt.Errorf("loader: %w", err)
		}
		if p, err := cleanPath(l.File); err != nil {
			return fmt.Errorf("boot file %q: %w", l.File, err)
		} else if p != l.File || strings.ContainsAny(p, " \t,\"'\\#;$") {
			return fmt.Errorf("boot file %q: want a plain path under the boot root (no spaces, quotes, commas, ';', '$' or '#')", l.File)
		}
		if l.HTTP && (l.Firmware != "uefi" || l.Loader != LoaderIPXE) {
			return fmt.Errorf("UEFI HTTP boot: want firmware uefi and loader ipxe, not %s and %s", l.Firmware, l.Loader)
		}
	case "uboot":
		if l.HTTP {
			return errors.New("U-Boot has no UEFI HTTP boot")
		}
		if l.File != "" {
			return fmt.Errorf("boot file %q: U-Boot gets none", l.File)
		}
	default:
		return fmt.Errorf("firmware %q: want bios, uefi, uefi-secureboot or uboot", l.Firmware)
	}
	return nil
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
