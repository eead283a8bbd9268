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

// Entry is what a node's pxelinux config says. Build one with MasterEntry
// or LocalEntry.
type Entry struct {
	Kind EntryKind

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
	// hang on LOCALBOOT.
	Local string
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

// renderEntry produces the pxelinux config for entry. httpURL is the base
// URL nodes use (no trailing slash); it may be empty when no entry uses
// HTTP. node names the node in a comment line.
func renderEntry(entry Entry, httpURL, node string) ([]byte, error) {
	var b bytes.Buffer
	switch entry.Kind {
	case KindMaster, KindKernel:
		if entry.Kernel == "" {
			return nil, fmt.Errorf("%s entry: kernel is required", entry.Kind)
		}
		file := func(what, p string) (string, error) {
			if entry.Kind == KindKernel {
				return entryURL(what, p)
			}
			return entryFile(what, p, entry.OverTFTP, httpURL)
		}
		kernel, err := file("kernel", entry.Kernel)
		if err != nil {
			return nil, err
		}
		initrd := ""
		if entry.Initrd != "" {
			if initrd, err = file("initrd", entry.Initrd); err != nil {
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
		lines, err := localLines(entry.Local)
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

// localLines splits a local-boot entry into trimmed, non-empty lines and
// refuses directives that would change which label boots.
func localLines(s string) ([]string, error) {
	var lines []string
	for l := range strings.SplitSeq(strings.ReplaceAll(s, "\r\n", "\n"), "\n") {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		if err := checkLine(l); err != nil {
			return nil, fmt.Errorf("line %q: %w", l, err)
		}
		keyword := strings.ToUpper(strings.Fields(l)[0])
		for _, r := range reservedKeywords {
			if keyword == r {
				return nil, fmt.Errorf("line %q: %s is set by labctl", l, r)
			}
		}
		lines = append(lines, l)
	}
	if len(lines) == 0 {
		return nil, errors.New("no lines (want e.g. LOCALBOOT 0)")
	}
	return lines, nil
}

// configNameKind tells the generated pxelinux config names apart.
type configNameKind uint8

const (
	nameMAC   configNameKind = iota + 1 // pxelinux.cfg/01-aa-bb-cc-dd-ee-ff
	nameHexIP                           // pxelinux.cfg/C000025B and its prefixes
)

// configName is a parsed pxelinux config file name.
type configName struct {
	kind configNameKind
	mac  string // nameMAC: "aa:bb:cc:dd:ee:ff", lower case
	hex  string // nameHexIP: 1 to 8 upper-case hex digits
}

// parseConfigName recognises the names pxelinux asks for before "default":
// "01-" and the MAC in lower-case hex with dashes (ARP type 1, Ethernet),
// then the IPv4 address in upper-case hex, one digit shorter each time.
// The name may sit in any directory (pxelinux asks relative to its own,
// e.g. bios/pxelinux.cfg/...). Matching ignores case.
func parseConfigName(p string) (configName, bool) {
	dir, base, ok := strings.Cut(p, "pxelinux.cfg/")
	if !ok || (dir != "" && !strings.HasSuffix(dir, "/")) || strings.Contains(base, "/") {
		return configName{}, false
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
		return configName{kind: nameMAC, mac: mac.String()}, true
	}
	if len(base) >= 1 && len(base) <= 8 {
		for i := 0; i < len(base); i++ {
			if !isHexDigit(base[i]) {
				return configName{}, false
			}
		}
		return configName{kind: nameHexIP, hex: strings.ToUpper(base)}, true
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
	mac   string    // "aa:bb:cc:dd:ee:ff"
	ip    net.IP    // IPv4 or nil
	local []byte    // rendered local entry; nil until one is set
	job   []byte    // rendered job entry (master or kernel); nil when none
	kind  EntryKind // the job entry's kind
}

// config returns what the node boots now: the job entry, else the local one.
func (n *node) config() ([]byte, EntryKind) {
	if n.job != nil {
		return n.job, n.kind
	}
	return n.local, KindLocal
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
		n.local, n.job = rendered, nil
	case KindMaster, KindKernel:
		n.job, n.kind = rendered, entry.Kind
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

// lookup returns the generated config for a cleaned path, if it names a
// registered node that has one. A MAC name finds the node by MAC. A full
// 8-digit hex name finds the node with that IP; a shorter one matches only
// the requesting client's own IP, so that a subnet prefix never picks an
// arbitrary node. node is a label for the log.
func (t *nodeTable) lookup(p string, client net.IP) (cfg []byte, label string, ok bool) {
	name, ok := parseConfigName(p)
	if !ok {
		return nil, "", false
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
		return nil, "", false
	}
	cfg, kind := n.config()
	if cfg == nil {
		return nil, "", false
	}
	return cfg, n.mac + " " + kind.String(), true
}
