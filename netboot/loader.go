package netboot

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// Loader names a family of network boot loaders: the config language a
// node's loader reads and the file names it asks the boot server for. The
// boot server writes every family's per-node config on request, from the
// same Entry, so that "master" and "local" mean the same whatever the node
// boots with.
type Loader string

const (
	// LoaderPXELinux is pxelinux (lpxelinux.0, pxelinux.0: BIOS). It asks
	// for pxelinux.cfg/01-<mac>, then hex-IP names, then default.
	LoaderPXELinux Loader = "pxelinux"
	// LoaderGRUB is GRUB's network image (Debian's signed grubnetx64.efi,
	// loaded directly or by shim under Secure Boot). Its built-in prefix is
	// /grub: it reads grub/grub.cfg, which the boot server answers with a
	// config that goes on to grub/grub.cfg-01-<mac>. Kernel and initrd come
	// from the server GRUB was loaded from (TFTP), as paths.
	LoaderGRUB Loader = "grub"
	// LoaderIPXE is iPXE (snponly.efi, ipxe.efi, undionly.kpxe). The DHCP
	// server answers iPXE's own request (user class "iPXE") with the URL of
	// ipxe.cfg/boot, which the boot server answers with a script that
	// chains ipxe.cfg/01-<mac>.
	LoaderIPXE Loader = "ipxe"
)

// Loaders lists the loader families, in the order documentation names them.
var Loaders = []Loader{LoaderPXELinux, LoaderGRUB, LoaderIPXE}

// ParseLoader returns the loader family named s.
func ParseLoader(s string) (Loader, error) {
	for _, l := range Loaders {
		if string(l) == s {
			return l, nil
		}
	}
	return "", fmt.Errorf("%q is not a boot loader family: use pxelinux, grub or ipxe", s)
}

// Names of the fixed files the boot server writes for a family: the first
// config the loader reads, which sends each node on to its own.
const (
	// GRUBStartConfig is what Debian's GRUB network image reads first
	// ($prefix/grub.cfg with its built-in prefix /grub).
	GRUBStartConfig = "grub/grub.cfg"
	// IPXEStartScript is what the DHCP server names for iPXE's own DHCP
	// request (as an HTTP URL).
	IPXEStartScript = "ipxe.cfg/boot"
)

// DefaultLocal is the local-boot entry a family uses when the device type
// gives none: each hands the boot back to the firmware or boots disk 0.
func (l Loader) DefaultLocal() string {
	switch l {
	case LoaderGRUB, LoaderIPXE:
		// Both return to the UEFI boot manager, which tries the next
		// boot option (the disk).
		return "exit"
	}
	return "LOCALBOOT 0"
}

// orPXELinux is l, or pxelinux for the zero Loader (entries made before a
// loader was set).
func (l Loader) orPXELinux() Loader {
	if l == "" {
		return LoaderPXELinux
	}
	return l
}

// CheckLocal checks local-boot lines for the family: no control
// characters, and nothing that would take over the config labctl writes
// around them.
func (l Loader) CheckLocal(s string) error {
	_, err := l.localLines(s)
	return err
}

// localLines splits a local-boot entry into trimmed, non-empty lines and
// refuses what the family's config would misread.
func (l Loader) localLines(s string) ([]string, error) {
	var lines []string
	for line := range strings.SplitSeq(strings.ReplaceAll(s, "\r\n", "\n"), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if err := checkLine(line); err != nil {
			return nil, fmt.Errorf("line %q: %w", line, err)
		}
		keyword := strings.Fields(line)[0]
		switch l.orPXELinux() {
		case LoaderPXELinux:
			for _, r := range reservedKeywords {
				if strings.EqualFold(keyword, r) {
					return nil, fmt.Errorf("line %q: %s is set by labctl", line, r)
				}
			}
		case LoaderGRUB:
			if strings.ContainsAny(line, "{}") {
				return nil, fmt.Errorf("line %q: braces: labctl writes the menu entry around these lines", line)
			}
			if keyword == "menuentry" || keyword == "submenu" || keyword == "configfile" || keyword == "source" ||
				keyword == "set" && len(strings.Fields(line)) > 1 && (strings.HasPrefix(strings.Fields(line)[1], "default") || strings.HasPrefix(strings.Fields(line)[1], "timeout")) {
				return nil, fmt.Errorf("line %q: %s is set by labctl", line, keyword)
			}
		case LoaderIPXE:
			if strings.HasPrefix(line, "#!") || strings.HasPrefix(keyword, ":") {
				return nil, fmt.Errorf("line %q: script headers and labels are set by labctl", line)
			}
		}
		lines = append(lines, line)
	}
	if len(lines) == 0 {
		return nil, fmt.Errorf("no lines (want e.g. %s)", l.orPXELinux().DefaultLocal())
	}
	return lines, nil
}

// grubUnsafe are the characters GRUB's script parser gives a meaning to;
// a kernel command line for GRUB may not hold them.
const grubUnsafe = "$;\"'\\{}|&<>#`"

// ipxeUnsafe are the characters iPXE's script parser gives a meaning to
// in a command's arguments (settings expansion, command chaining).
const ipxeUnsafe = "$|&\"'\\#"

// render produces the family's per-node config for entry. httpURL is the
// base URL nodes use (no trailing slash); node names the node in a comment.
func (l Loader) render(entry Entry, httpURL, node string) ([]byte, error) {
	switch l.orPXELinux() {
	case LoaderPXELinux:
		return renderPXELinux(entry, httpURL, node)
	case LoaderGRUB:
		return renderGRUB(entry, node)
	case LoaderIPXE:
		return renderIPXE(entry, httpURL, node)
	}
	return nil, fmt.Errorf("boot loader %q: want pxelinux, grub or ipxe", l)
}

// masterArgs checks the master entry's common fields.
func masterArgs(entry Entry, unsafe string) (args string, err error) {
	if entry.Kernel == "" {
		return "", errors.New("master entry: kernel is required")
	}
	if err := checkLine(entry.Append); err != nil {
		return "", fmt.Errorf("master entry: append: %w", err)
	}
	args = strings.TrimSpace(entry.Append)
	if i := strings.IndexAny(args, unsafe); i >= 0 {
		return "", fmt.Errorf("master entry: append: %q has a meaning in the %s config language", string(args[i]), entry.Loader.orPXELinux())
	}
	return args, nil
}

// renderGRUB writes a GRUB config. The kernel and initrd are paths on
// $root, the server GRUB was loaded from: GRUB 2.06's HTTP client knows no
// port, and a Secure Boot node's GRUB has no other way to reach it.
func renderGRUB(entry Entry, node string) ([]byte, error) {
	var b bytes.Buffer
	switch entry.Kind {
	case KindMaster:
		args, err := masterArgs(entry, grubUnsafe)
		if err != nil {
			return nil, err
		}
		kernel, err := entryFile("kernel", entry.Kernel, true, "")
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "# labctl: master entry for %s\nset timeout=0\nset default=labctl\nmenuentry labctl --id labctl {\n", node)
		fmt.Fprintf(&b, "\techo \"labctl: loading the master kernel\"\n\tlinux /%s %s\n", kernel, args)
		if entry.Initrd != "" {
			initrd, err := entryFile("initrd", entry.Initrd, true, "")
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(&b, "\tinitrd /%s\n", initrd)
		}
		b.WriteString("}\n")
	case KindLocal:
		lines, err := LoaderGRUB.localLines(entry.Local)
		if err != nil {
			return nil, fmt.Errorf("local entry: %w", err)
		}
		fmt.Fprintf(&b, "# labctl: local boot for %s\nset timeout=0\nset default=local\nmenuentry local --id local {\n\techo \"labctl: local boot\"\n", node)
		for _, l := range lines {
			fmt.Fprintf(&b, "\t%s\n", l)
		}
		b.WriteString("}\n")
	case KindKernel:
		return nil, errors.New("kernel entry: GRUB loads files over TFTP only (its HTTP client knows no port), and a diskless job's kernel is an HTTP URL: boot diskless jobs through pxelinux or iPXE")
	default:
		return nil, fmt.Errorf("entry kind %d: want local or master", entry.Kind)
	}
	return b.Bytes(), nil
}

// renderIPXE writes an iPXE script. The kernel and initrd are HTTP URLs
// (iPXE always has HTTP); the initrd is named for the kernel's EFI stub
// (initrd=NAME), which reads it from iPXE's image list.
func renderIPXE(entry Entry, httpURL, node string) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("#!ipxe\n")
	switch entry.Kind {
	case KindMaster, KindKernel:
		args, err := masterArgs(entry, ipxeUnsafe)
		if err != nil {
			return nil, err
		}
		kernel, err := entry.source("kernel", entry.Kernel, false, httpURL)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "# labctl: %s entry for %s\necho labctl: loading the %s kernel\n", entry.Kind, node, entry.Kind)
		initrd := ""
		if entry.Initrd != "" {
			if initrd, err = entry.source("initrd", entry.Initrd, false, httpURL); err != nil {
				return nil, err
			}
			args = strings.TrimSpace("initrd=initrd " + args)
		}
		fmt.Fprintf(&b, "kernel %s %s\n", kernel, args)
		if initrd != "" {
			fmt.Fprintf(&b, "initrd --name initrd %s\n", initrd)
		}
		b.WriteString("boot\n")
	case KindLocal:
		lines, err := LoaderIPXE.localLines(entry.Local)
		if err != nil {
			return nil, fmt.Errorf("local entry: %w", err)
		}
		fmt.Fprintf(&b, "# labctl: local boot for %s\necho labctl: local boot\n", node)
		for _, l := range lines {
			fmt.Fprintf(&b, "%s\n", l)
		}
	default:
		return nil, fmt.Errorf("entry kind %d: want local, master or kernel", entry.Kind)
	}
	return b.Bytes(), nil
}

// grubStart is GRUB's first config: it turns $net_default_mac
// (aa:bb:...) into the per-node name and reads that; a node the boot
// server does not know goes back to the firmware.
var grubStart = []byte(`# labctl: GRUB's first config. Each node's own config is
# grub.cfg-01-<mac> beside it, written by labctl's boot server.
set timeout=0
if regexp --set=1:m1 --set=2:m2 --set=3:m3 --set=4:m4 --set=5:m5 --set=6:m6 '^([0-9a-f][0-9a-f]):([0-9a-f][0-9a-f]):([0-9a-f][0-9a-f]):([0-9a-f][0-9a-f]):([0-9a-f][0-9a-f]):([0-9a-f][0-9a-f])$' "$net_default_mac"; then
	configfile "$prefix/grub.cfg-01-$m1-$m2-$m3-$m4-$m5-$m6"
fi
echo "labctl: no boot config for $net_default_mac: back to the firmware"
exit
`)

// ipxeStart is iPXE's first script: it chains the booting interface's
// per-node script (a relative URI: same server, same directory).
var ipxeStart = []byte(`#!ipxe
# labctl: iPXE's first script. Each node's own script is ipxe.cfg/01-<mac>
# beside it, written by labctl's boot server.
chain 01-${netX/mac:hexhyp} || goto none
:none
echo labctl: no boot script for ${netX/mac}: back to the firmware
exit 1
`)

// startConfig returns the fixed first config of a family for a cleaned
// path, if p names one.
func startConfig(p string) ([]byte, Loader, bool) {
	switch p {
	case GRUBStartConfig:
		return grubStart, LoaderGRUB, true
	case IPXEStartScript:
		return ipxeStart, LoaderIPXE, true
	}
	return nil, "", false
}
