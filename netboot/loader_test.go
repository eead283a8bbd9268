package netboot

import (
	"net"
	"strings"
	"testing"
)

// Each family's config for the same entries: the master boots the same
// kernel, initrd and command line; local hands back to the firmware.
func TestRenderFamilies(t *testing.T) {
	master := MasterEntry("simlab/vmlinuz", "simlab/master.gz", "console=ttyS0,115200 panic=10")
	tests := map[string]struct {
		entry Entry
		want  string
	}{
		"grub master": {master.For(LoaderGRUB), `# labctl: master entry for node1
set timeout=0
set default=labctl
menuentry labctl --id labctl {
	echo "labctl: loading the master kernel"
	linux /simlab/vmlinuz console=ttyS0,115200 panic=10
	initrd /simlab/master.gz
}
`},
		"grub local": {LocalEntry("exit").For(LoaderGRUB), `# labctl: local boot for node1
set timeout=0
set default=local
menuentry local --id local {
	echo "labctl: local boot"
	exit
}
`},
		"ipxe master": {master.For(LoaderIPXE), `#!ipxe
# labctl: master entry for node1
echo labctl: loading the master kernel
kernel http://10.0.2.2:8080/simlab/vmlinuz initrd=initrd console=ttyS0,115200 panic=10
initrd --name initrd http://10.0.2.2:8080/simlab/master.gz
boot
`},
		"ipxe master without initrd": {MasterEntry("k", "", "quiet").For(LoaderIPXE), `#!ipxe
# labctl: master entry for node1
echo labctl: loading the master kernel
kernel http://10.0.2.2:8080/k quiet
boot
`},
		"ipxe local": {LocalEntry("exit").For(LoaderIPXE), "#!ipxe\n# labctl: local boot for node1\necho labctl: local boot\nexit\n"},
		"pxelinux master": {master.For(LoaderPXELinux), `# labctl: master entry for node1
DEFAULT labctl
PROMPT 0
LABEL labctl
  KERNEL http://10.0.2.2:8080/simlab/vmlinuz
  APPEND initrd=http://10.0.2.2:8080/simlab/master.gz console=ttyS0,115200 panic=10
`},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := renderEntry(tt.entry, "http://10.0.2.2:8080", "node1")
			if err != nil || string(got) != tt.want {
				t.Fatalf("renderEntry = %v\n%s\nwant:\n%s", err, got, tt.want)
			}
		})
	}
}

// What each family's config language would misread is refused, not
// written.
func TestRenderFamiliesRefuse(t *testing.T) {
	tests := map[string]struct {
		entry Entry
		want  string
	}{
		"grub append with $":       {MasterEntry("k", "", "root=$x").For(LoaderGRUB), `"$" has a meaning in the grub config language`},
		"grub append with ;":       {MasterEntry("k", "", "a; reboot").For(LoaderGRUB), `";" has a meaning`},
		"grub append brace":        {MasterEntry("k", "", "a }").For(LoaderGRUB), `"}" has a meaning`},
		"grub local brace":         {LocalEntry("exit\n}\nmenuentry x {").For(LoaderGRUB), "braces"},
		"grub local menuentry":     {LocalEntry("menuentry x").For(LoaderGRUB), "menuentry is set by labctl"},
		"grub local set default":   {LocalEntry("set default=2").For(LoaderGRUB), "set is set by labctl"},
		"grub newline":             {MasterEntry("k", "", "a\nlinux /evil").For(LoaderGRUB), "control character"},
		"ipxe append with ${}":     {MasterEntry("k", "", "a=${net0/ip}").For(LoaderIPXE), `"$" has a meaning in the ipxe`},
		"ipxe append chaining":     {MasterEntry("k", "", "a || shell").For(LoaderIPXE), `"|" has a meaning`},
		"ipxe local header":        {LocalEntry("#!ipxe\nexit").For(LoaderIPXE), "script headers"},
		"ipxe local label":         {LocalEntry(":top\ngoto top").For(LoaderIPXE), "labels"},
		"ipxe empty local":         {LocalEntry("").For(LoaderIPXE), "no lines (want e.g. exit)"},
		"unknown family":           {LocalEntry("exit").For("refind"), `boot loader "refind"`},
		"grub kernel outside root": {MasterEntry("../k", "", "").For(LoaderGRUB), "kernel"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := renderEntry(tt.entry, "http://h", "node1")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("renderEntry = %q, %v; want error containing %q", got, err, tt.want)
			}
		})
	}
}

func TestParseConfigNameFamilies(t *testing.T) {
	tests := map[string]struct {
		in   string
		want configName
		ok   bool
	}{
		"grub":                 {in: "grub/grub.cfg-01-52-54-00-ab-cd-ef", want: configName{loader: LoaderGRUB, kind: nameMAC, mac: "52:54:00:ab:cd:ef"}, ok: true},
		"grub at top":          {in: "grub.cfg-01-52-54-00-AB-CD-EF", want: configName{loader: LoaderGRUB, kind: nameMAC, mac: "52:54:00:ab:cd:ef"}, ok: true},
		"ipxe":                 {in: "ipxe.cfg/01-52-54-00-ab-cd-ef", want: configName{loader: LoaderIPXE, kind: nameMAC, mac: "52:54:00:ab:cd:ef"}, ok: true},
		"ipxe deeper":          {in: "x/ipxe.cfg/01-52-54-00-ab-cd-ef", want: configName{loader: LoaderIPXE, kind: nameMAC, mac: "52:54:00:ab:cd:ef"}, ok: true},
		"grub hex ip":          {in: "grub/grub.cfg-C000025B"},
		"ipxe hex ip":          {in: "ipxe.cfg/C000025B"},
		"grub glued":           {in: "xgrub.cfg-01-52-54-00-ab-cd-ef"},
		"ipxe glued dir":       {in: "xipxe.cfg/01-52-54-00-ab-cd-ef"},
		"grub start":           {in: "grub/grub.cfg"},
		"grub bad mac":         {in: "grub/grub.cfg-01-52-54-00-ab-cd-eg"},
		"ipxe start is fixed":  {in: "ipxe.cfg/boot"},
		"grub colons":          {in: "grub/grub.cfg-01-52:54:00:ab:cd:ef"},
		"pxelinux still works": {in: "efi/pxelinux.cfg/01-52-54-00-ab-cd-ef", want: configName{loader: LoaderPXELinux, kind: nameMAC, mac: "52:54:00:ab:cd:ef"}, ok: true},
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

// A node is served in its own family's language only; another family's
// name for it is refused (the node booted the wrong loader). The families'
// start configs are served to every client.
func TestLookupFamilies(t *testing.T) {
	tab := newNodeTable("http://h:1")
	mac, _ := net.ParseMAC("52:54:00:00:00:01")
	if err := tab.set(mac, nil, LocalEntry("exit").For(LoaderIPXE)); err != nil {
		t.Fatal(err)
	}
	cfg, label, err := tab.lookup("ipxe.cfg/01-52-54-00-00-00-01", nil)
	if err != nil || !strings.Contains(string(cfg), "\nexit\n") || label != "52:54:00:00:00:01 local" {
		t.Fatalf("ipxe lookup = %q, %q, %v", cfg, label, err)
	}
	if err := tab.set(mac, nil, MasterEntry("k", "i", "quiet").For(LoaderIPXE)); err != nil {
		t.Fatal(err)
	}
	cfg, _, _ = tab.lookup("ipxe.cfg/01-52-54-00-00-00-01", nil)
	if !strings.Contains(string(cfg), "kernel http://h:1/k initrd=initrd quiet\n") {
		t.Fatalf("master script = %q", cfg)
	}
	for _, name := range []string{"pxelinux.cfg/01-52-54-00-00-00-01", "grub/grub.cfg-01-52-54-00-00-00-01"} {
		cfg, label, err := tab.lookup(name, nil)
		if cfg != nil || err == nil || !strings.Contains(err.Error(), "asked as") || !strings.Contains(err.Error(), "device type names ipxe") || label == "" {
			t.Errorf("lookup(%q) = %q, %q, %v; want the wrong-loader error", name, cfg, label, err)
		}
	}
	for name, want := range map[string]string{
		GRUBStartConfig: `configfile "$prefix/grub.cfg-01-$m1-$m2-$m3-$m4-$m5-$m6"`,
		IPXEStartScript: "chain 01-${netX/mac:hexhyp} || goto none",
	} {
		cfg, _, err := tab.lookup(name, net.ParseIP("192.0.2.9"))
		if err != nil || !strings.Contains(string(cfg), want) {
			t.Errorf("lookup(%q) = %q, %v; want it to hold %q", name, cfg, err, want)
		}
	}
}

// A diskless job's kernel entry names URLs: iPXE fetches them itself;
// GRUB, which loads over TFTP only, refuses the entry by name.
func TestRenderKernelEntryFamilies(t *testing.T) {
	e := KernelEntry("http://10.0.0.1:8080/images/t1/vmlinuz", "http://10.0.0.1:8080/images/t2/testos.gz", "console=ttyS0 quiet")
	got, err := renderEntry(e.For(LoaderIPXE), "http://10.0.0.1:8080", "node1")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"kernel http://10.0.0.1:8080/images/t1/vmlinuz initrd=initrd console=ttyS0 quiet\n",
		"initrd --name initrd http://10.0.0.1:8080/images/t2/testos.gz\n",
		"boot\n",
	} {
		if !strings.Contains(string(got), want) {
			t.Errorf("iPXE kernel entry lacks %q:\n%s", want, got)
		}
	}
	if _, err := renderEntry(KernelEntry("/vmlinuz", "", "").For(LoaderIPXE), "http://10.0.0.1:8080", "node1"); err == nil || !strings.Contains(err.Error(), "want an http(s) URL") {
		t.Errorf("iPXE kernel entry with a path: %v", err)
	}
	if _, err := renderEntry(e.For(LoaderGRUB), "", "node1"); err == nil || !strings.Contains(err.Error(), "GRUB loads files over TFTP only") {
		t.Errorf("GRUB kernel entry: %v", err)
	}
}
