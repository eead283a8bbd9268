package netboot

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
)

// EntryKind says what a node's generated pxelinux config boots.
type EntryKind uint8

const (
	// KindLocal boots the node from its own disk with the device type's
	// local-boot lines.
	KindLocal EntryKind = iota + 1
	// KindMaster boots the master kernel and initrd (the deploy image).
	KindMaster
	// KindKernel boots a job's own kernel and initrd, given as URLs (the
	// test OS of a ramdisk or NFS-root boot, published for the job).
	KindKernel
)

func (k EntryKind) String() string {
	switch k {
	case KindLocal:
		return "local"
	case KindMaster:
		return "master"
	case KindKernel:
		return "kernel"
	}
	return fmt.Sprintf("EntryKind(%d)", uint8(k))
}

// Entry is what a node's generated boot config says. Build one with
// MasterEntry or LocalEntry, and For to name the node's loader family.
type Entry struct {
	Kind EntryKind
	// Loader is the family whose config the node asks for (pxelinux if
	// empty). Local holds lines in that family's language.
	Loader Loader

	// Kernel and Initrd (master) are paths under the boot root. By default
	// the config names them as HTTP URLs (HTTPURL/<path>), which lpxelinux.0
	// loads about 20x faster than TFTP; Initrd may be empty.
	Kernel, Initrd string
	// Append (master) is the kernel command line, one line.
	Append string
	// OverTFTP (master) names Kernel and Initrd as plain root-relative
	// paths, loaded over TFTP, for NBPs without HTTP (plain pxelinux.0).
	// Those paths are relative to the NBP's directory, so the NBP must sit
	// at the top of the root.
	OverTFTP bool

	// Local (local) holds the device type's local-boot lines, e.g.
	// "LOCALBOOT 0", or "COM32 chain.c32\nAPPEND hd0 0" for boards that
	// hang on LOCALBOOT; "exit" for GRUB and iPXE.
	Local string
}

// For returns the entry for a node whose loader is of family l.
func (e Entry) For(l Loader) Entry {
	e.Loader = l
	return e
}

// MasterEntry is the entry that boots the master kernel and initrd over HTTP.
func MasterEntry(kernel, initrd, appendLine string) Entry {
	return Entry{Kind: KindMaster, Kernel: kernel, Initrd: initrd, Append: appendLine}
}

// KernelEntry is the entry that boots a kernel and initrd the node fetches
// from the given http(s) URLs (such as images published for a job), with
// the given command line. initrdURL may be empty.
func KernelEntry(kernelURL, initrdURL, appendLine string) Entry {
	return Entry{Kind: KindKernel, Kernel: kernelURL, Initrd: initrdURL, Append: appendLine}
}

// LocalEntry is the entry that boots from the local disk with the given
// pxelinux lines.
func LocalEntry(lines string) Entry {
	return Entry{Kind: KindLocal, Local: lines}
}

// reservedKeywords are the pxelinux directives that pick which label boots;
// a local entry may not carry them, or it could take over the whole config.
var reservedKeywords = []string{"LABEL", "DEFAULT", "UI", "INCLUDE", "ONTIMEOUT", "ONERROR", "MENU"}

// renderEntry produces the config of entry's loader family. httpURL is
// the base URL nodes use (no trailing slash); it may be empty when no
// entry uses HTTP. node names the node in a comment line.
func renderEntry(entry Entry, httpURL, node string) ([]byte, error) {
	return entry.Loader.render(entry, httpURL, node)
}

// renderPXELinux writes a pxelinux config.
func renderPXELinux(entry Entry, httpURL, node string) ([]byte, error) {
	var b bytes.Buffer
	switch entry.Kind {
	case KindMaster, KindKernel:
		if entry.Kernel == "" {
			return nil, fmt.Errorf("%s entry: kernel is required", entry.Kind)
		}
		kernel, err := entry.source("kernel", entry.Kernel, entry.OverTFTP, httpURL)
		if err != nil {
			return nil, err
		}
		initrd := ""
		if entry.Initrd != "" {
			if initrd, err = entry.source("initrd", entry.Initrd, entry.OverTFTP, httpURL); err != nil {
				return nil, err
			}
		}
		if err := checkLine(entry.Append); err != nil {
			return nil, fmt.Errorf("%s entry: append: %w", entry.Kind, err)
		}
		args := strings.TrimSpace(entry.Append)
		if initrd != "" {
			args = strings.TrimSpace("initrd=" + initrd + " " + args)
		}
		fmt.Fprintf(&b, "# labctl: %s entry for %s\nDEFAULT labctl\nPROMPT 0\nLABEL labctl\n  KERNEL %s\n", entry.Kind, node, kernel)
		if args != "" {
			fmt.Fprintf(&b, "  APPEND %s\n", args)
		}
	case KindLocal:
		lines, err := LoaderPXELinux.localLines(entry.Local)
		if err != nil {
			return nil, fmt.Errorf("local entry: %w", err)
		}
		fmt.Fprintf(&b, "# labctl: local boot for %s\nDEFAULT local\nPROMPT 0\nLABEL local\n", node)
		for _, l := range lines {
			fmt.Fprintf(&b, "  %s\n", l)
		}
	default:
		return nil, fmt.Errorf("entry kind %d: want local, master or kernel", entry.Kind)
	}
	return b.Bytes(), nil
}

// source turns a master or kernel entry's kernel or initrd into what a
// config names: a kernel entry (a diskless job's own kernel) names URLs
// as given; a master entry names files of the boot root, over TFTP or
// HTTP (see entryFile).
func (entry Entry) source(what, p string, overTFTP bool, httpURL string) (string, error) {
	if entry.Kind == KindKernel {
		return entryURL(what, p)
	}
	return entryFile(what, p, overTFTP, httpURL)
}

// entryFile checks a kernel or initrd path and turns it into what the
// config names: an HTTP URL, or the path itself for TFTP.
func entryFile(what, p string, overTFTP bool, httpURL string) (string, error) {
	clean, err := cleanPath(p)
	if err != nil {
		return "", fmt.Errorf("master entry: %s %q: %w", what, p, err)
	}
	if strings.ContainsAny(clean, " \t") {
		return "", fmt.Errorf("master entry: %s %q: contains white space", what, p)
	}
	if overTFTP {
		return clean, nil
	}
	if httpURL == "" {
		return "", fmt.Errorf("master entry: %s over HTTP but the boot server has no HTTP URL", what)
	}
	return httpURL + "/" + escapePath(clean), nil
}

// entryURL checks a kernel or initrd URL of a kernel entry: http or
// https, one word.
func entryURL(what, u string) (string, error) {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
		return "", fmt.Errorf("kernel entry: %s %q: want an http(s) URL", what, u)
	}
	if strings.ContainsAny(u, " \t") || checkLine(u) != nil {
		return "", fmt.Errorf("kernel entry: %s %q: contains white space or control characters", what, u)
	}
	return u, nil
}

// escapePath escapes each element of a slash-separated path for a URL.
func escapePath(p string) string {
	elems := strings.Split(p, "/")
	for i, e := range elems {
		elems[i] = url.PathEscape(e)
	}
	return strings.Join(elems, "/")
}

// checkLine refuses what would break out of one config line.
func checkLine(s string) error {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return fmt.Errorf("control character %#02x", c)
		}
	}
	return nil
}

// configNameKind tells the generated config names apart.
type configNameKind uint8

const (
	nameMAC   configNameKind = iota + 1 // pxelinux.cfg/01-aa-bb-cc-dd-ee-ff, grub.cfg-01-..., ipxe.cfg/01-...
	nameHexIP                           // pxelinux.cfg/C000025B and its prefixes
)

// configName is a parsed per-node config file name.
type configName struct {
	loader Loader // the family that asks for this name
	kind   configNameKind
	mac    string // nameMAC: "aa:bb:cc:dd:ee:ff", lower case
	hex    string // nameHexIP: 1 to 8 upper-case hex digits
}

// configPrefixes are the per-node name patterns of each family: the name
// ends in prefix + "01-" + the MAC with dashes (pxelinux also asks for
// hex-IP names after its prefix). The name may sit in any directory.
var configPrefixes = []struct {
	prefix string
	loader Loader
}{
	{"pxelinux.cfg/", LoaderPXELinux},
	{"grub.cfg-", LoaderGRUB},
	{"ipxe.cfg/", LoaderIPXE},
}

// parseConfigName recognises the per-node names the loaders ask for:
// "01-" and the MAC in lower-case hex with dashes (ARP type 1, Ethernet)
// after pxelinux.cfg/, grub.cfg- or ipxe.cfg/; for pxelinux also the IPv4
// address in upper-case hex, one digit shorter each time. The name may sit
// in any directory (pxelinux asks relative to its own, e.g.
// bios/pxelinux.cfg/...). Matching ignores case.
func parseConfigName(p string) (configName, bool) {
	dir, file := "", p
	if i := strings.LastIndex(p, "/"); i >= 0 {
		dir, file = p[:i+1], p[i+1:]
	}
	for _, cp := range configPrefixes {
		var rest, base string
		if d, ok := strings.CutSuffix(cp.prefix, "/"); ok {
			// A directory: dir must end in it, as a whole element.
			rest, ok = strings.CutSuffix(dir, d+"/")
			if !ok || (rest != "" && !strings.HasSuffix(rest, "/")) {
				continue
			}
			base = file
		} else {
			var ok bool
			if base, ok = strings.CutPrefix(file, cp.prefix); !ok {
				continue
			}
		}
		if len(base) == 20 && strings.HasPrefix(base, "01-") {
			b := []byte(strings.ToLower(base[3:]))
			for i := 2; i < len(b); i += 3 {
				if b[i] != '-' {
					return configName{}, false
				}
				b[i] = ':'
			}
			mac, err := net.ParseMAC(string(b))
			if err != nil || len(mac) != 6 {
				return configName{}, false
			}
			return configName{loader: cp.loader, kind: nameMAC, mac: mac.String()}, true
		}
		if cp.loader == LoaderPXELinux && len(base) >= 1 && len(base) <= 8 {
			for i := 0; i < len(base); i++ {
				if !isHexDigit(base[i]) {
					return configName{}, false
				}
			}
			return configName{loader: cp.loader, kind: nameHexIP, hex: strings.ToUpper(base)}, true
		}
		return configName{}, false
	}
	return configName{}, false
}

func isHexDigit(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// hexIP is the name pxelinux gives an IPv4 address: 8 upper-case hex digits.
func hexIP(ip net.IP) string {
	return strings.ToUpper(hex.EncodeToString(ip.To4()))
}

// node is one registered node and its rendered configs.
type node struct {
	mac         string    // "aa:bb:cc:dd:ee:ff"
	ip          net.IP    // IPv4 or nil
	local       []byte    // rendered local entry; nil until one is set
	job         []byte    // rendered job entry (master or kernel); nil when none
	kind        EntryKind // the job entry's kind
	localLoader Loader    // the family local and job are written for
	jobLoader   Loader
}

// config returns what the node boots now: the job entry, else the local
// one, and the loader family it is written for.
func (n *node) config() ([]byte, EntryKind, Loader) {
	if n.job != nil {
		return n.job, n.kind, n.jobLoader
	}
	return n.local, KindLocal, n.localLoader
}

// nodeTable holds the registered nodes. Jobs change entries while
// transfers read them, so every access takes the lock; rendered configs are
// immutable once stored and can be served without it.
type nodeTable struct {
	httpURL string

	mu    sync.RWMutex
	byMAC map[string]*node
	byIP  map[string]*node // key: hexIP
}

func newNodeTable(httpURL string) *nodeTable {
	return &nodeTable{httpURL: httpURL, byMAC: map[string]*node{}, byIP: map[string]*node{}}
}

// set registers or updates a node. A local entry becomes the node's local
// entry and ends any job entry; a master entry becomes its job entry.
func (t *nodeTable) set(mac net.HardwareAddr, ip net.IP, entry Entry) error {
	if len(mac) != 6 {
		return fmt.Errorf("node %q: want a 6-byte Ethernet MAC", mac)
	}
	var ip4 net.IP
	if ip != nil {
		if ip4 = ip.To4(); ip4 == nil {
			return fmt.Errorf("node %s: IP %s: pxelinux names configs by IPv4 only", mac, ip)
		}
		ip4 = append(net.IP(nil), ip4...)
	}
	rendered, err := renderEntry(entry, t.httpURL, mac.String())
	if err != nil {
		return fmt.Errorf("node %s: %w", mac, err)
	}
	key := mac.String()

	t.mu.Lock()
	defer t.mu.Unlock()
	if ip4 != nil {
		if other, ok := t.byIP[hexIP(ip4)]; ok && other.mac != key {
			return fmt.Errorf("node %s: IP %s already belongs to node %s", key, ip4, other.mac)
		}
	}
	n, ok := t.byMAC[key]
	if !ok {
		n = &node{mac: key}
		t.byMAC[key] = n
	}
	if n.ip != nil && !n.ip.Equal(ip4) {
		delete(t.byIP, hexIP(n.ip))
	}
	n.ip = ip4
	if ip4 != nil {
		t.byIP[hexIP(ip4)] = n
	}
	switch entry.Kind {
	case KindLocal:
		n.local, n.job, n.localLoader = rendered, nil, entry.Loader.orPXELinux()
	case KindMaster, KindKernel:
		n.job, n.kind, n.jobLoader = rendered, entry.Kind, entry.Loader.orPXELinux()
	}
	return nil
}

// clear drops a node's job entry; it boots its local entry again.
func (t *nodeTable) clear(mac net.HardwareAddr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n, ok := t.byMAC[mac.String()]; ok {
		n.job = nil
	}
}

// remove forgets a node.
func (t *nodeTable) remove(mac net.HardwareAddr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n, ok := t.byMAC[mac.String()]; ok {
		delete(t.byMAC, n.mac)
		if n.ip != nil {
			delete(t.byIP, hexIP(n.ip))
		}
	}
}

// errWrongLoader is a request for a node's config in the language of
// another loader family than the node's device type names: the node booted
// a loader it should not have (firmware mode, DHCP answer). Nothing is
// served; the server logs it.
var errWrongLoader = errors.New("the node asked with another boot loader than its device type names")

// lookup returns the generated config for a cleaned path, if it names a
// registered node that has one. A MAC name finds the node by MAC. A full
// 8-digit hex name finds the node with that IP; a shorter one matches only
// the requesting client's own IP, so that a subnet prefix never picks an
// arbitrary node. The families' fixed first configs (GRUBStartConfig,
// IPXEStartScript) are served to anyone. label names the node for the log.
// A node's name asked in another family's language is errWrongLoader.
func (t *nodeTable) lookup(p string, client net.IP) (cfg []byte, label string, err error) {
	if cfg, l, ok := startConfig(p); ok {
		return cfg, string(l) + " start", nil
	}
	name, ok := parseConfigName(p)
	if !ok {
		return nil, "", nil
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	var n *node
	switch name.kind {
	case nameMAC:
		n = t.byMAC[name.mac]
	case nameHexIP:
		if len(name.hex) == 8 {
			n = t.byIP[name.hex]
		} else if client.To4() != nil && strings.HasPrefix(hexIP(client), name.hex) {
			n = t.byIP[hexIP(client)]
		}
	}
	if n == nil {
		return nil, "", nil
	}
	cfg, kind, loader := n.config()
	if cfg == nil {
		return nil, "", nil
	}
	label = n.mac + " " + kind.String()
	if loader != name.loader {
		return nil, label, fmt.Errorf("node %s: %w (asked as %s, device type names %s)", n.mac, errWrongLoader, name.loader, loader)
	}
	return cfg, label, nil
}
