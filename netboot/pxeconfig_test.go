package netboot

import (
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
)

func TestCleanPath(t *testing.T) {
	tests := map[string]struct {
		in   string
		want string // "" means refused
	}{
		"plain":               {in: "pxelinux.0", want: "pxelinux.0"},
		"nested":              {in: "bios/pxelinux.cfg/default", want: "bios/pxelinux.cfg/default"},
		"dot prefix":          {in: "./pxelinux.0", want: "pxelinux.0"},
		"double slash":        {in: "a//b", want: "a/b"},
		"trailing slash":      {in: "a/", want: "a"},
		"dots in name":        {in: "a..b", want: "a..b"},
		"empty":               {in: ""},
		"dot":                 {in: "."},
		"absolute":            {in: "/etc/passwd"},
		"double absolute":     {in: "//etc/passwd"},
		"parent":              {in: "../etc/passwd"},
		"parent inside":       {in: "a/../b"},
		"parent at end":       {in: "a/.."},
		"deep parent":         {in: "pxelinux.cfg/../../../../etc/shadow"},
		"nul":                 {in: "pxelinux.0\x00.txt"},
		"newline":             {in: "a\nb"},
		"del":                 {in: "a\x7fb"},
		"too long":            {in: strings.Repeat("a", MaxPathLen+1)},
		"longest":             {in: strings.Repeat("a", MaxPathLen), want: strings.Repeat("a", MaxPathLen)},
		"backslash is a name": {in: `boot\x86\wdsnbp.com`, want: `boot\x86\wdsnbp.com`},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := cleanPath(tt.in)
			if tt.want == "" {
				if err == nil || !errors.Is(err, errBadName) {
					t.Fatalf("cleanPath(%q) = %q, %v; want errBadName", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("cleanPath(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{"pxelinux.0", "../x", "/abs", "a/./b", "a\x00b", "a//..//b", "....//"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		p, err := cleanPath(in)
		if err != nil {
			return
		}
		if !filepath.IsLocal(p) || strings.HasPrefix(p, "/") || len(p) > MaxPathLen {
			t.Fatalf("cleanPath(%q) = %q: not a local path", in, p)
		}
		for _, e := range strings.Split(p, "/") {
			if e == ".." || e == "." || e == "" {
				t.Fatalf("cleanPath(%q) = %q: element %q", in, p, e)
			}
		}
		if strings.ContainsFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("cleanPath(%q) = %q: control character", in, p)
		}
	})
}

func TestParseConfigName(t *testing.T) {
	tests := map[string]struct {
		in   string
		want configName
		ok   bool
	}{
		"mac":              {in: "pxelinux.cfg/01-52-54-00-ab-cd-ef", want: configName{kind: nameMAC, mac: "52:54:00:ab:cd:ef"}, ok: true},
		"mac upper":        {in: "pxelinux.cfg/01-52-54-00-AB-CD-EF", want: configName{kind: nameMAC, mac: "52:54:00:ab:cd:ef"}, ok: true},
		"mac in subdir":    {in: "bios/pxelinux.cfg/01-52-54-00-ab-cd-ef", want: configName{kind: nameMAC, mac: "52:54:00:ab:cd:ef"}, ok: true},
		"hex full":         {in: "pxelinux.cfg/C000025B", want: configName{kind: nameHexIP, hex: "C000025B"}, ok: true},
		"hex lower":        {in: "pxelinux.cfg/c000025b", want: configName{kind: nameHexIP, hex: "C000025B"}, ok: true},
		"hex prefix":       {in: "pxelinux.cfg/C000025", want: configName{kind: nameHexIP, hex: "C000025"}, ok: true},
		"hex one":          {in: "pxelinux.cfg/C", want: configName{kind: nameHexIP, hex: "C"}, ok: true},
		"default":          {in: "pxelinux.cfg/default"},
		"hex too long":     {in: "pxelinux.cfg/C000025B0"},
		"non hex":          {in: "pxelinux.cfg/C00002G"},
		"mac wrong arp":    {in: "pxelinux.cfg/06-52-54-00-ab-cd-ef"},
		"mac colons":       {in: "pxelinux.cfg/01:52:54:00:ab:cd:ef"},
		"mac bad digit":    {in: "pxelinux.cfg/01-52-54-00-ab-cd-eg"},
		"mac short":        {in: "pxelinux.cfg/01-52-54-00-ab-cd"},
		"uuid":             {in: "pxelinux.cfg/b8945908-d6a6-41a9-611d-74a6ab80b83d"},
		"no dir":           {in: "C000025B"},
		"glued dir":        {in: "xpxelinux.cfg/C000025B"},
		"deeper":           {in: "pxelinux.cfg/x/C000025B"},
		"cfg dir itself":   {in: "pxelinux.cfg/"},
		"other cfg prefix": {in: "pxelinux.cfgX/C0"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, ok := parseConfigName(tt.in)
			if ok != tt.ok || got != tt.want {
				t.Fatalf("parseConfigName(%q) = %+v, %v; want %+v, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// FuzzParseConfigName checks that whatever the parser accepts round-trips
// to the name pxelinux would have asked for.
func FuzzParseConfigName(f *testing.F) {
	for _, s := range []string{"pxelinux.cfg/01-52-54-00-ab-cd-ef", "pxelinux.cfg/C000025B", "pxelinux.cfg/C", "a/pxelinux.cfg/01-00-00-00-00-00-00", "pxelinux.cfg/default", "pxelinux.cfg/01-zz-54-00-ab-cd-ef"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		name, ok := parseConfigName(in)
		if !ok {
			return
		}
		base := in[strings.LastIndex(in, "/")+1:]
		switch name.kind {
		case nameMAC:
			mac, err := net.ParseMAC(name.mac)
			if err != nil || len(mac) != 6 {
				t.Fatalf("%q: mac %q does not parse", in, name.mac)
			}
			if want := "01-" + strings.ReplaceAll(mac.String(), ":", "-"); !strings.EqualFold(base, want) {
				t.Fatalf("%q: parsed as %q, which pxelinux asks for as %q", in, name.mac, want)
			}
		case nameHexIP:
			if len(name.hex) < 1 || len(name.hex) > 8 || !strings.EqualFold(base, name.hex) || strings.ToUpper(name.hex) != name.hex {
				t.Fatalf("%q: hex %q", in, name.hex)
			}
		default:
			t.Fatalf("%q: ok with kind %d", in, name.kind)
		}
	})
}

func TestRenderEntry(t *testing.T) {
	const base = "http://10.0.2.2:16901"
	tests := map[string]struct {
		entry   Entry
		want    string
		wantErr string
	}{
		"master over http": {
			entry: MasterEntry("master/vmlinuz", "master/initrd.gz", "console=ttyS0,115200 panic=10"),
			want: "# labctl: master entry for node1\nDEFAULT labctl\nPROMPT 0\nLABEL labctl\n" +
				"  KERNEL http://10.0.2.2:16901/master/vmlinuz\n" +
				"  APPEND initrd=http://10.0.2.2:16901/master/initrd.gz console=ttyS0,115200 panic=10\n",
		},
		"master over tftp": {
			entry: Entry{Kind: KindMaster, Kernel: "vmlinuz", Initrd: "initrd.gz", Append: "quiet", OverTFTP: true},
			want:  "# labctl: master entry for node1\nDEFAULT labctl\nPROMPT 0\nLABEL labctl\n  KERNEL vmlinuz\n  APPEND initrd=initrd.gz quiet\n",
		},
		"master no initrd no append": {
			entry: MasterEntry("vmlinuz", "", ""),
			want:  "# labctl: master entry for node1\nDEFAULT labctl\nPROMPT 0\nLABEL labctl\n  KERNEL http://10.0.2.2:16901/vmlinuz\n",
		},
		"master escapes url": {
			entry: MasterEntry("k%rnel+1", "", ""),
			want:  "# labctl: master entry for node1\nDEFAULT labctl\nPROMPT 0\nLABEL labctl\n  KERNEL http://10.0.2.2:16901/k%25rnel+1\n",
		},
		"localboot": {
			entry: LocalEntry("LOCALBOOT 0"),
			want:  "# labctl: local boot for node1\nDEFAULT local\nPROMPT 0\nLABEL local\n  LOCALBOOT 0\n",
		},
		"chain": {
			entry: LocalEntry("COM32 chain.c32\r\n   APPEND hd0 0\n\n"),
			want:  "# labctl: local boot for node1\nDEFAULT local\nPROMPT 0\nLABEL local\n  COM32 chain.c32\n  APPEND hd0 0\n",
		},
		"no kernel":        {entry: MasterEntry("", "i", ""), wantErr: "kernel is required"},
		"kernel traversal": {entry: MasterEntry("../vmlinuz", "", ""), wantErr: "contains .."},
		"kernel absolute":  {entry: MasterEntry("/boot/vmlinuz", "", ""), wantErr: "absolute"},
		"kernel space":     {entry: MasterEntry("vm linuz", "", ""), wantErr: "white space"},
		"initrd newline":   {entry: MasterEntry("vmlinuz", "a\nDEFAULT x", ""), wantErr: "control character"},
		"append newline":   {entry: MasterEntry("vmlinuz", "", "quiet\nLABEL evil"), wantErr: "control character"},
		"local empty":      {entry: LocalEntry(" \n "), wantErr: "no lines"},
		"local label":      {entry: LocalEntry("LOCALBOOT 0\nlabel evil"), wantErr: "LABEL is set by labctl"},
		"local default":    {entry: LocalEntry("default evil"), wantErr: "DEFAULT is set by labctl"},
		"local control":    {entry: LocalEntry("LOCALBOOT\x000"), wantErr: "control character"},
		"kernel urls": {
			entry: KernelEntry("http://10.0.2.2:16901/images/abc/vmlinuz", "http://10.0.2.2:16901/images/def/initrd.gz", "console=ttyS0 nfsroot=10.0.2.2:/r,ro"),
			want: "# labctl: kernel entry for node1\nDEFAULT labctl\nPROMPT 0\nLABEL labctl\n" +
				"  KERNEL http://10.0.2.2:16901/images/abc/vmlinuz\n" +
				"  APPEND initrd=http://10.0.2.2:16901/images/def/initrd.gz console=ttyS0 nfsroot=10.0.2.2:/r,ro\n",
		},
		"kernel entry path":  {entry: KernelEntry("vmlinuz", "", ""), wantErr: "want an http(s) URL"},
		"kernel entry tftp":  {entry: KernelEntry("tftp://h/vmlinuz", "", ""), wantErr: "want an http(s) URL"},
		"kernel entry space": {entry: KernelEntry("http://h/a", "http://h/b c", ""), wantErr: "white space"},
		"no kind":            {entry: Entry{Kernel: "vmlinuz"}, wantErr: "want local, master or kernel"},
		"http without base":  {entry: MasterEntry("vmlinuz", "", ""), wantErr: "no HTTP URL"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			b := base
			if name == "http without base" {
				b = ""
			}
			got, err := renderEntry(tt.entry, b, "node1")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("renderEntry = %q, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("renderEntry = %v\n%s\nwant:\n%s", err, got, tt.want)
			}
		})
	}
}

// FuzzRenderEntry checks that no entry input, however odd, changes the
// shape of the config: one DEFAULT, one LABEL, the keyword lines labctl
// writes, and nothing that escapes a line.
func FuzzRenderEntry(f *testing.F) {
	f.Add(uint8(KindMaster), "vmlinuz", "initrd.gz", "console=ttyS0", false, "")
	f.Add(uint8(KindMaster), "k", "", "a\nLABEL x", true, "")
	f.Add(uint8(KindLocal), "", "", "", false, "LOCALBOOT 0")
	f.Add(uint8(KindKernel), "http://h/k", "http://h/i", "console=ttyS0", false, "")
	f.Add(uint8(KindLocal), "", "", "", false, "COM32 chain.c32\nAPPEND hd0 0\nlabel x")
	f.Fuzz(func(t *testing.T, kind uint8, kernel, initrd, appendLine string, overTFTP bool, local string) {
		e := Entry{Kind: EntryKind(kind), Kernel: kernel, Initrd: initrd, Append: appendLine, OverTFTP: overTFTP, Local: local}
		out, err := renderEntry(e, "http://h:1", "node")
		if err != nil {
			return
		}
		lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
		var defaults, labels int
		for i, l := range lines {
			if strings.ContainsFunc(l, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }) {
				t.Fatalf("line %d %q: control character", i, l)
			}
			switch w := strings.ToUpper(strings.Fields(l + " x")[0]); {
			case w == "DEFAULT":
				defaults++
			case w == "LABEL":
				labels++
			case i > 3 && !strings.HasPrefix(l, "  "):
				t.Fatalf("line %d %q: body line not indented", i, l)
			}
		}
		if defaults != 1 || labels != 1 {
			t.Fatalf("%d DEFAULT and %d LABEL lines in:\n%s", defaults, labels, out)
		}
		if (e.Kind == KindMaster || e.Kind == KindKernel) && (len(lines) < 5 || len(lines) > 6) {
			t.Fatalf("master config has %d lines:\n%s", len(lines), out)
		}
	})
}

func TestNodeTable(t *testing.T) {
	mac1, _ := net.ParseMAC("52:54:00:00:00:01")
	mac2, _ := net.ParseMAC("52:54:00:00:00:02")
	ip1 := net.ParseIP("192.0.2.91") // C000025B
	ip2 := net.ParseIP("192.0.2.92") // C000025C
	tab := newNodeTable("http://h")
	local := LocalEntry("LOCALBOOT 0")
	master := MasterEntry("vmlinuz", "initrd", "")
	if err := tab.set(mac1, ip1, local); err != nil {
		t.Fatal(err)
	}
	if err := tab.set(mac2, ip2, local); err != nil {
		t.Fatal(err)
	}
	if err := tab.set(mac1, ip1, master); err != nil {
		t.Fatal(err)
	}
	lookups := []struct {
		path   string
		client string
		want   string // "" = no generated config; else the node label
	}{
		{"pxelinux.cfg/01-52-54-00-00-00-01", "127.0.0.1", "52:54:00:00:00:01 master"},
		{"pxelinux.cfg/01-52-54-00-00-00-02", "127.0.0.1", "52:54:00:00:00:02 local"},
		{"pxelinux.cfg/01-52-54-00-00-00-03", "127.0.0.1", ""},
		{"pxelinux.cfg/C000025B", "127.0.0.1", "52:54:00:00:00:01 master"},
		{"pxelinux.cfg/C000025C", "", "52:54:00:00:00:02 local"},
		{"pxelinux.cfg/C000025", "192.0.2.92", "52:54:00:00:00:02 local"},
		{"pxelinux.cfg/C", "192.0.2.91", "52:54:00:00:00:01 master"},
		{"pxelinux.cfg/C000025", "127.0.0.1", ""},  // a prefix never picks someone else's node
		{"pxelinux.cfg/C000025", "192.0.2.93", ""}, // client not registered
		{"pxelinux.cfg/C000026", "192.0.2.91", ""}, // not the client's prefix
		{"pxelinux.cfg/default", "192.0.2.91", ""}, // served from the root, if there
		{"pxelinux.cfg/C000025D", "127.0.0.1", ""}, // no such node
		{"other/pxelinux.0", "192.0.2.91", ""},     // not a config name
		{"pxelinux.cfg/C000025", "::1", ""},        // IPv6 client
		{"pxelinux.cfg/C000025B", "::1", "52:54:00:00:00:01 master"},
	}
	for _, l := range lookups {
		_, label, ok := tab.lookup(l.path, net.ParseIP(l.client))
		if ok != (l.want != "") || label != l.want {
			t.Errorf("lookup(%q, %s) = %q, %v; want %q", l.path, l.client, label, ok, l.want)
		}
	}

	// Another node may not take an IP in use.
	mac3, _ := net.ParseMAC("52:54:00:00:00:03")
	if err := tab.set(mac3, ip1, local); err == nil || !strings.Contains(err.Error(), "already belongs") {
		t.Fatalf("duplicate IP: err = %v", err)
	}
	// Clearing the job entry falls back to local; moving the IP re-indexes.
	tab.clear(mac1)
	if _, label, _ := tab.lookup("pxelinux.cfg/C000025B", nil); label != "52:54:00:00:00:01 local" {
		t.Fatalf("after clear: %q", label)
	}
	if err := tab.set(mac1, net.ParseIP("192.0.2.100"), local); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := tab.lookup("pxelinux.cfg/C000025B", nil); ok {
		t.Fatal("old IP still maps to the node")
	}
	if _, _, ok := tab.lookup("pxelinux.cfg/C0000264", nil); !ok {
		t.Fatal("new IP does not map to the node")
	}
	// A node with only a job entry has nothing once it is cleared.
	mac4, _ := net.ParseMAC("52:54:00:00:00:04")
	if err := tab.set(mac4, nil, master); err != nil {
		t.Fatal(err)
	}
	tab.clear(mac4)
	if _, _, ok := tab.lookup("pxelinux.cfg/01-52-54-00-00-00-04", nil); ok {
		t.Fatal("cleared node without local entry still has a config")
	}
	tab.remove(mac2)
	if _, _, ok := tab.lookup("pxelinux.cfg/C000025C", nil); ok {
		t.Fatal("removed node still found by IP")
	}
	// Bad input.
	if err := tab.set(net.HardwareAddr{1, 2, 3}, nil, local); err == nil {
		t.Fatal("short MAC accepted")
	}
	if err := tab.set(mac4, net.ParseIP("2001:db8::1"), local); err == nil {
		t.Fatal("IPv6 accepted")
	}
	if err := tab.set(mac4, nil, LocalEntry("")); err == nil {
		t.Fatal("empty local entry accepted")
	}
}
