package main

// Tests of booting by client architecture against the real parts, in a
// network namespace of the test's own (`go test -run TestLabUEFI
// ./cmd/labctl`, as root): dnsmasq runs the config `labctl netboot
// dhcp-config` writes for the lab, labctl's boot server listens on the
// namespace's bridge, busybox udhcpc asks DHCP as each client
// architecture, and QEMU with Debian's OVMF boots the UEFI loaders (iPXE;
// shim, signed GRUB and the signed kernel under Secure Boot) to the master
// prompt. No packet leaves the namespace.

import (
	"context"
	"debug/pe"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/lab"
	"github.com/labctl/labctl/netboot"
	"github.com/labctl/labctl/simlab"
	"github.com/labctl/labctl/simlab/simlabtest"
)

// The lab network inside the namespace: the boot server and dnsmasq on
// the bridge's address, the nodes' fixed addresses from their devices.
const (
	efiBridgeAddr = "10.77.0.1"
	efiHTTPURL    = "http://10.77.0.1:8080"
)

// efiNode is one device of the test lab.
type efiNode struct {
	name, deviceType, mac, ip string
	override                  string // [override] lines, if any
	local                     bool   // the boot server gives it its local entry, not the master
}

var efiNodes = []efiNode{
	{"bios1", "simlab-qemu", "52:54:00:77:00:01", "10.77.0.11", "", false},
	{"uefi1", "simlab-qemu-uefi", "52:54:00:77:00:02", "10.77.0.12", "", false},
	{"http1", "simlab-qemu-httpboot", "52:54:00:77:00:03", "10.77.0.13", "", false},
	{"sb1", "simlab-qemu-secureboot", "52:54:00:77:00:04", "10.77.0.14", "", false},
	// Secure Boot with a kernel whose signature is stripped: refused.
	{"sbbad", "simlab-qemu-secureboot", "52:54:00:77:00:05", "10.77.0.15", `master.kernel = "simlab/vmlinuz-unsigned"`, false},
	// Local entries: iPXE's and GRUB's exit hand the boot back to OVMF.
	{"uefilocal", "simlab-qemu-uefi", "52:54:00:77:00:06", "10.77.0.16", "", true},
	{"sblocal", "simlab-qemu-secureboot", "52:54:00:77:00:07", "10.77.0.17", "", true},
}

// watch collects a process's output and lets a test wait for a pattern in
// it.
type watch struct {
	mu      sync.Mutex
	buf     strings.Builder
	changed chan struct{}
}

func newWatch() *watch { return &watch{changed: make(chan struct{})} }

func (w *watch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	close(w.changed)
	w.changed = make(chan struct{})
	return len(p), nil
}

func (w *watch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// wait returns the first match of re in the output (from offset from),
// waiting for more output until ctx ends.
func (w *watch) wait(ctx context.Context, from int, re *regexp.Regexp) ([]string, int, error) {
	for {
		w.mu.Lock()
		s, ch := w.buf.String(), w.changed
		w.mu.Unlock()
		if from < len(s) {
			if loc := re.FindStringSubmatchIndex(s[from:]); loc != nil {
				m := make([]string, len(loc)/2)
				for i := range m {
					if loc[2*i] >= 0 {
						m[i] = s[from+loc[2*i] : from+loc[2*i+1]]
					}
				}
				return m, from + loc[1], nil
			}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, from, fmt.Errorf("no %q: %w", re, context.Cause(ctx))
		}
	}
}

// efiLab is the namespace, the lab files, dnsmasq and the boot server.
type efiLab struct {
	ns, dir, root string
	cfg           *devices.Lab
	dhcpConf      string
	dhcpFormat    netboot.DHCPFormat
	dhcp          *watch // the DHCP server's log (dnsmasq's with log-dhcp)
	boot          *watch // the boot server's log
}

// command runs argv with a deadline and fails the test with its output.
func command(t *testing.T, argv ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

var efiLabSeq atomic.Int32

// startEFILab builds the namespace and starts dnsmasq and the boot server
// in it; everything goes with the test.
func startEFILab(t *testing.T, format netboot.DHCPFormat) *efiLab {
	t.Helper()
	if os.Geteuid() != 0 {
		simlabtest.SkipOrFail(t, errors.New("network namespaces need root"))
	}
	server := map[netboot.DHCPFormat]string{netboot.DHCPDnsmasq: "dnsmasq", netboot.DHCPISC: "dhcpd"}[format]
	for _, tool := range []string{"ip", server, "busybox"} {
		if _, err := exec.LookPath(tool); err != nil {
			simlabtest.SkipOrFail(t, fmt.Errorf("%s: %w (make deps)", tool, err))
		}
	}
	// Only the boot root is needed (make master), not the disk images.
	artDir, err := simlab.DefaultArtifactsDir()
	if err != nil {
		simlabtest.SkipOrFail(t, err)
	}
	bootRoot := filepath.Join(artDir, "bootroot")
	for _, f := range []string{"lpxelinux.0", "efi/snponly.efi", "shimx64.efi", "grubx64.efi", "simlab/vmlinuz", "simlab/master.gz"} {
		if _, err := os.Stat(filepath.Join(bootRoot, f)); err != nil {
			simlabtest.SkipOrFail(t, fmt.Errorf("boot root without the UEFI loaders (make master): %w", err))
		}
	}
	l := &efiLab{dir: t.TempDir(), dhcpFormat: format, dhcp: newWatch(), boot: newWatch()}
	l.ns = fmt.Sprintf("labctl-efi-%d-%d", os.Getpid(), efiLabSeq.Add(1))

	// The boot root: the artifacts' files, and a kernel without its
	// signature for the negative Secure Boot case. Copies, not links: the
	// boot server refuses links out of its root.
	l.root = filepath.Join(l.dir, "bootroot")
	for _, f := range []string{"lpxelinux.0", "ldlinux.c32", "efi/snponly.efi", "shimx64.efi", "grubx64.efi", "simlab/vmlinuz", "simlab/master.gz"} {
		copyFile(t, filepath.Join(bootRoot, f), filepath.Join(l.root, f))
	}
	stripSignature(t, filepath.Join(l.root, "simlab/vmlinuz"), filepath.Join(l.root, "simlab/vmlinuz-unsigned"))

	l.writeLab(t)
	cfg, err := devices.Load(filepath.Join(l.dir, "lab.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if ps := cfg.CheckBootFiles(); len(ps) > 0 {
		t.Fatalf("boot root: %v", ps)
	}
	l.cfg = cfg

	// The DHCP server's config is what the command prints, unmodified.
	env, stdout, _ := testEnv()
	if err := runDHCPConfig(context.Background(), dhcpConfigOptions{lab: filepath.Join(l.dir, "lab.toml"), format: format}, env); err != nil {
		t.Fatal(err)
	}
	if format == netboot.DHCPISC {
		// dhcpd serves only declared subnets: the lab's own line, as an
		// admin's dhcpd.conf has it beside labctl's part.
		stdout.WriteString("subnet 10.77.0.0 netmask 255.255.255.0 {\n  range 10.77.0.100 10.77.0.199;\n}\n")
	}
	l.dhcpConf = filepath.Join(l.dir, server+".conf")
	if err := os.WriteFile(l.dhcpConf, stdout.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	command(t, "ip", "netns", "add", l.ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", l.ns).Run() })
	for _, argv := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "link", "add", "br0", "type", "bridge"},
		{"ip", "addr", "add", efiBridgeAddr + "/24", "dev", "br0"},
		{"ip", "link", "set", "br0", "up"},
	} {
		command(t, append([]string{"ip", "netns", "exec", l.ns}, argv...)...)
	}

	ready := `DHCP, IP range`
	if format == netboot.DHCPISC {
		leases := filepath.Join(l.dir, "dhcpd.leases")
		if err := os.WriteFile(leases, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		l.start(t, "dhcpd", l.dhcp, "dhcpd", "-f", "-d", "-4", "-cf", l.dhcpConf, "-lf", leases, "-pf", filepath.Join(l.dir, "dhcpd.pid"), "br0")
		ready = `Listening on \S+/br0`
	} else {
		l.start(t, "dnsmasq", l.dhcp, "dnsmasq", "--keep-in-foreground", "--log-facility=-", "--user=root", "--group=root",
			"--conf-file="+l.dhcpConf, "--port=0", "--interface=br0", "--bind-interfaces", "--pid-file",
			"--dhcp-range=10.77.0.100,10.77.0.199,255.255.255.0,1h", "--dhcp-leasefile="+filepath.Join(l.dir, "leases"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, _, err := l.dhcp.wait(ctx, 0, regexp.MustCompile(ready)); err != nil {
		t.Fatalf("%s did not start: %v\n%s", server, err, l.dhcp)
	}

	// The boot server runs in a process inside the namespace (its TFTP
	// transfers open sockets of their own there): this test binary, as
	// TestHelperEFIBootServer.
	l.start(t, "boot server", l.boot, os.Args[0], "-test.run=^TestHelperEFIBootServer$", "-test.v")
	if _, _, err := l.boot.wait(ctx, 0, regexp.MustCompile(`boot server ready`)); err != nil {
		t.Fatalf("boot server did not start: %v\n%s", err, l.boot)
	}
	return l
}

// writeLab writes lab.toml and a device file per node; BMCs are never
// contacted.
func (l *efiLab) writeLab(t *testing.T) {
	types, err := filepath.Abs("../../device-types")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"lab.toml": fmt.Sprintf(`name = "efi"
device_types = [%q]
devices = ["devices"]
state_dir = "state"
[boot_server]
root = "bootroot"
tftp_listen = "%s:69"
http_listen = "%s:8080"
http_url = %q
`, types, efiBridgeAddr, efiBridgeAddr, efiHTTPURL)}
	for i, n := range efiNodes {
		d := fmt.Sprintf(`device_type = %q
mac = %q
ip = %q
[bmc]
host = "127.0.0.1"
port = %d
user = "admin"
password_env = "LABCTL_EFI_TEST_PASSWORD"
`, n.deviceType, n.mac, n.ip, 40000+i)
		if n.override != "" {
			d += "[override]\n" + n.override + "\n"
		}
		files["devices/"+n.name+".toml"] = d
	}
	for name, text := range files {
		p := filepath.Join(l.dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// start runs argv inside the namespace until the test ends, its output
// into w.
func (l *efiLab) start(t *testing.T, what string, w io.Writer, argv ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", l.ns}, argv...)...)
	cmd.Env = append(os.Environ(), "LABCTL_EFI_HELPER_LAB="+filepath.Join(l.dir, "lab.toml"))
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s (pid %d) did not exit", what, cmd.Process.Pid)
		}
	})
	return cmd
}

// TestHelperEFIBootServer is the boot server of startEFILab, run inside
// its namespace: every device of the lab gets its master entry. It serves
// until killed.
func TestHelperEFIBootServer(t *testing.T) {
	file := os.Getenv("LABCTL_EFI_HELPER_LAB")
	if file == "" {
		t.Skip("helper process of TestLabUEFI...")
	}
	cfg, err := devices.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := newBootServer(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	nodes := lab.New(cfg, srv, log)
	for _, d := range cfg.Devices {
		nb := nodes.Netboot(d)
		set := nb.BootMaster
		for _, n := range efiNodes {
			if n.name == d.Name && n.local {
				set = nb.BootLocal
			}
		}
		if err := set(); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Fprintln(os.Stderr, "boot server ready")
	t.Fatal(srv.Serve(context.Background()))
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// stripSignature writes src without its Authenticode signature: the
// certificate table (data directory 4) emptied and the bytes it pointed at
// cut off the end.
func stripSignature(t *testing.T, src, dst string) {
	t.Helper()
	f, err := pe.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	oh, ok := f.OptionalHeader.(*pe.OptionalHeader64)
	f.Close()
	if !ok || len(oh.DataDirectory) <= pe.IMAGE_DIRECTORY_ENTRY_SECURITY {
		t.Fatalf("%s: not a PE32+ image with a certificate table", src)
	}
	sec := oh.DataDirectory[pe.IMAGE_DIRECTORY_ENTRY_SECURITY]
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if sec.Size == 0 || int(sec.VirtualAddress)+int(sec.Size) != len(data) {
		t.Fatalf("%s: certificate table %+v is not at the end of the %d bytes", src, sec, len(data))
	}
	peOff := binary.LittleEndian.Uint32(data[0x3c:])
	dirOff := int(peOff) + 4 + 20 + 112 + 8*pe.IMAGE_DIRECTORY_ENTRY_SECURITY
	out := append([]byte(nil), data[:sec.VirtualAddress]...)
	binary.LittleEndian.PutUint64(out[dirOff:], 0)
	if err := os.WriteFile(dst, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// dhcpAnswer is what busybox udhcpc got.
type dhcpAnswer struct{ bootFile, siaddr, ip string }

// ask sends one DHCP exchange from a veth in the namespace with the
// node's MAC, as the given client architecture (option 93), vendor class
// (option 60) and user class (option 77).
func (l *efiLab) ask(t *testing.T, ifname, mac string, arch int, vendor, userClass string) dhcpAnswer {
	t.Helper()
	peer := ifname + "p"
	command(t, "ip", "netns", "exec", l.ns, "ip", "link", "add", ifname, "address", mac, "type", "veth", "peer", "name", peer)
	command(t, "ip", "netns", "exec", l.ns, "ip", "link", "set", peer, "master", "br0", "up")
	command(t, "ip", "netns", "exec", l.ns, "ip", "link", "set", ifname, "up")
	defer command(t, "ip", "netns", "exec", l.ns, "ip", "link", "del", ifname)
	script := filepath.Join(l.dir, "udhcpc.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n[ \"$1\" = bound ] && printf 'answer ip=%s siaddr=%s boot_file=%s\\n' \"$ip\" \"$siaddr\" \"$boot_file\"\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	argv := []string{"ip", "netns", "exec", l.ns, "busybox", "udhcpc", "-i", ifname, "-f", "-q", "-n", "-t", "5", "-T", "1", "-s", script,
		"-x", fmt.Sprintf("0x5d:%04x", arch)}
	if vendor != "" {
		argv = append(argv, "-V", vendor)
	}
	if userClass != "" {
		argv = append(argv, "-x", fmt.Sprintf("0x4d:%x", userClass))
	}
	out := command(t, argv...)
	m := regexp.MustCompile(`answer ip=(\S*) siaddr=(\S*) boot_file=(\S*)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("udhcpc: no lease:\n%s", out)
	}
	return dhcpAnswer{ip: m[1], siaddr: m[2], bootFile: m[3]}
}

// The generated dnsmasq config, unmodified in a real dnsmasq, answers each
// node by the architecture it asks with: the BIOS loader for arch 0, iPXE
// over TFTP for UEFI PXE, an http:// URL with vendor class HTTPClient for
// UEFI HTTP boot, shim for Secure Boot, iPXE's start script for iPXE's own
// request, and nothing (with a log line) for an architecture it has no
// loader for or one the node's device type does not boot with.
func TestLabUEFIDHCP(t *testing.T) {
	for _, format := range []netboot.DHCPFormat{netboot.DHCPDnsmasq, netboot.DHCPISC} {
		t.Run(string(format), func(t *testing.T) { testDHCPByArch(t, format) })
	}
}

func testDHCPByArch(t *testing.T, format netboot.DHCPFormat) {
	l := startEFILab(t, format)
	tests := []struct {
		name, mac         string
		arch              int
		vendor, userClass string
		want              dhcpAnswer
		log               string // dnsmasq: a tag in its log for this exchange; ISC: the profile in labctl's log line
		httpClient        bool   // option 60 HTTPClient in the answer (checked in dnsmasq's log)
	}{
		{"bios", "52:54:00:77:00:01", 0, "PXEClient:Arch:00000:UNDI:002001", "", dhcpAnswer{bootFile: "lpxelinux.0", siaddr: efiBridgeAddr, ip: "10.77.0.11"}, "", false},
		{"uefi pxe", "52:54:00:77:00:02", 7, "PXEClient:Arch:00007:UNDI:003016", "", dhcpAnswer{bootFile: "efi/snponly.efi", siaddr: efiBridgeAddr, ip: "10.77.0.12"}, "", false},
		{"uefi pxe arch 9", "52:54:00:77:00:02", 9, "PXEClient:Arch:00009:UNDI:003016", "", dhcpAnswer{bootFile: "efi/snponly.efi", siaddr: efiBridgeAddr, ip: "10.77.0.12"}, "", false},
		{"ipxe", "52:54:00:77:00:02", 7, "PXEClient:Arch:00007:UNDI:003010", "iPXE", dhcpAnswer{bootFile: efiHTTPURL + "/ipxe.cfg/boot", siaddr: efiBridgeAddr, ip: "10.77.0.12"}, "", false},
		{"http boot", "52:54:00:77:00:03", 16, "HTTPClient:Arch:00016:UNDI:003001", "", dhcpAnswer{bootFile: efiHTTPURL + "/efi/snponly.efi", ip: "10.77.0.13"}, "", true},
		{"http boot node over pxe", "52:54:00:77:00:03", 7, "PXEClient:Arch:00007:UNDI:003016", "", dhcpAnswer{ip: "10.77.0.13"}, "labctl-boot-uefi-http-ipxe-wrong-arch", false},
		{"secure boot", "52:54:00:77:00:04", 7, "PXEClient:Arch:00007:UNDI:003016", "", dhcpAnswer{bootFile: "shimx64.efi", siaddr: efiBridgeAddr, ip: "10.77.0.14"}, "", false},
		{"uefi node in legacy mode", "52:54:00:77:00:02", 0, "PXEClient:Arch:00000:UNDI:002001", "", dhcpAnswer{ip: "10.77.0.12"}, "labctl-boot-uefi-ipxe-wrong-arch", false},
		{"unknown arch", "52:54:00:77:00:01", 11, "PXEClient:Arch:00011:UNDI:003000", "", dhcpAnswer{ip: "10.77.0.11"}, "labctl-unknown-arch", false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			from := len(l.dhcp.String())
			got := l.ask(t, fmt.Sprintf("c%d", i), tt.mac, tt.arch, tt.vendor, tt.userClass)
			if tt.want.siaddr == "" {
				got.siaddr = "" // the server's own address when it names no server
			}
			if got != tt.want {
				t.Errorf("answer = %+v, want %+v", got, tt.want)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ack := `DHCPACK\(br0\) \S+ ` + regexp.QuoteMeta(tt.mac)
			if format == netboot.DHCPISC {
				ack = `DHCPACK on \S+ to ` + regexp.QuoteMeta(tt.mac)
			}
			if _, _, err := l.dhcp.wait(ctx, from, regexp.MustCompile(ack)); err != nil {
				t.Fatalf("%v\n%s", err, l.dhcp.String()[from:])
			}
			exchange := l.dhcp.String()[from:]
			if format == netboot.DHCPISC {
				// ISC: one log line per request that got no boot file.
				noFile := regexp.MustCompile(`labctl: [0-9a-f:]+: no boot file for client architecture ` + fmt.Sprint(tt.arch) + ` \(labctl-boot-`)
				if (tt.log != "") != noFile.MatchString(exchange) {
					t.Errorf("log line for no boot file: %v, want %v:\n%s", noFile.MatchString(exchange), tt.log != "", exchange)
				}
				return
			}
			// dnsmasq logs, with log-dhcp, the tags that decided it.
			if tt.log != "" && !regexp.MustCompile(`tags: .*\b`+regexp.QuoteMeta(tt.log)+`\b`).MatchString(exchange) {
				t.Errorf("dnsmasq's log has no tag %s:\n%s", tt.log, exchange)
			}
			if tt.log == "" && strings.Contains(exchange, "unknown-arch") {
				t.Errorf("dnsmasq's log tags a known architecture unknown:\n%s", exchange)
			}
			// busybox udhcpc does not pass option 60 to its script;
			// dnsmasq logs what it sent ("HTTPClient" in hex).
			sent60 := strings.Contains(exchange, "option: 60 vendor-class  48:54:54:50:43:6c:69:65:6e:74")
			if sent60 != tt.httpClient {
				t.Errorf("option 60 HTTPClient sent: %v, want %v:\n%s", sent60, tt.httpClient, exchange)
			}
		})
	}
}

// qemuNode is a QEMU VM with OVMF on a tap of the lab's bridge, its serial
// console into console.
type qemuNode struct {
	console *watch
}

// bootNode starts QEMU for the node: SeaBIOS with iPXE's option ROM as
// its PXE stack for a bios device, else OVMF (Secure Boot firmware and
// Microsoft's keys for a uefi-secureboot device) with its own network
// stack.
func (l *efiLab) bootNode(t *testing.T, name string) *qemuNode {
	t.Helper()
	d, ok := l.cfg.Device(name)
	if !ok {
		t.Fatalf("no device %s", name)
	}
	code, vars := "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"
	machine := "q35,accel=tcg"
	var extra []string
	if d.Settings.Boot.Method == devices.BootHTTP {
		// OVMF tries PXE over IPv4 and IPv6 before HTTP boot, a minute
		// or more each when DHCP offers no file: switch PXE off, as a
		// server's setup would for an HTTP-boot machine.
		extra = append(extra, "-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
			"-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n")
	}
	if d.Settings.Boot.Firmware == devices.FirmwareSecureBoot {
		code, vars = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
		machine = "q35,smm=on,accel=tcg"
		extra = append(extra, "-global", "driver=cfi.pflash01,property=secure,value=on")
	}
	firmware := []string{"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + code,
		"-drive", "if=pflash,format=raw,unit=1,file=" + filepath.Join(l.dir, name+"-vars.fd")}
	// No iPXE option ROM under OVMF: its own PXE and HTTP boot, as a
	// server's.
	rom := ",romfile="
	if d.Settings.Boot.Firmware == devices.FirmwareBIOS {
		firmware, rom, machine = nil, "", "pc,accel=tcg"
	} else {
		for _, f := range []string{code, vars} {
			if _, err := os.Stat(f); err != nil {
				simlabtest.SkipOrFail(t, fmt.Errorf("OVMF: %w (apt-get install ovmf)", err))
			}
		}
		copyFile(t, vars, filepath.Join(l.dir, name+"-vars.fd"))
	}
	tap := "tap-" + name
	command(t, "ip", "netns", "exec", l.ns, "ip", "tuntap", "add", tap, "mode", "tap")
	command(t, "ip", "netns", "exec", l.ns, "ip", "link", "set", tap, "master", "br0", "up")
	n := &qemuNode{console: newWatch()}
	argv := []string{"qemu-system-x86_64", "-machine", machine, "-m", "512", "-nodefaults", "-display", "none",
		"-serial", "stdio", "-monitor", "none", "-no-reboot"}
	argv = append(append(argv, firmware...), "-netdev", "tap,id=n0,ifname="+tap+",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,bootindex=1,mac="+macString(d.MAC)+rom)
	argv = append(argv, extra...)
	l.start(t, "qemu "+name, n.console, argv...)
	return n
}

func macString(mac []byte) string {
	parts := make([]string, len(mac))
	for i, b := range mac {
		parts[i] = fmt.Sprintf("%02x", b)
	}
	return strings.Join(parts, ":")
}

// TestLabUEFILocalBoot: a UEFI node whose entry is local runs iPXE's
// exit and OVMF goes on to its next boot option, as it would to the disk;
// a Secure Boot node runs GRUB's and OVMF takes over (its boot manager).
func TestLabUEFILocalBoot(t *testing.T) {
	l := startEFILab(t, netboot.DHCPDnsmasq)
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		simlabtest.SkipOrFail(t, err)
	}
	for node, want := range map[string][]string{
		"uefilocal": {`labctl: local boot`, `>>Start PXE over IPv6`},
		// GRUB's exit returns success, and OVMF then opens its boot
		// manager rather than trying the next option.
		"sblocal": {`Fetching Netboot Image grubx64.efi`, `labctl: local boot`, `Boot Manager`},
	} {
		t.Run(node, func(t *testing.T) {
			t.Parallel()
			n := l.bootNode(t, node)
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
			defer cancel()
			pos := 0
			for _, w := range want {
				var err error
				if _, pos, err = n.console.wait(ctx, pos, regexp.MustCompile(w)); err != nil {
					t.Fatalf("%v\nconsole:\n%s\nboot server:\n%s", err, lastBytes(n.console.String(), 4000), lastBytes(l.boot.String(), 3000))
				}
			}
			// The boot server gave the node its local config, in its
			// family's language.
			name := map[string]string{"uefilocal": "ipxe.cfg/01-52-54-00-77-00-06", "sblocal": "grub/grub.cfg-01-52-54-00-77-00-07"}[node]
			served := false
			for _, line := range strings.Split(l.boot.String(), "\n") {
				served = served || strings.Contains(line, "transfer done") && strings.Contains(line, name+" ") && strings.Contains(line, ` local"`)
			}
			if !served {
				t.Errorf("boot server did not serve %s:\n%s", name, l.boot)
			}
		})
	}
}

// TestLabUEFIBoot boots nodes through dnsmasq and labctl's boot server to
// the master prompt, at once: BIOS (SeaBIOS, lpxelinux.0), and with OVMF
// UEFI PXE (iPXE), UEFI HTTP boot (iPXE from an http:// URL) and Secure
// Boot (shim, signed GRUB, signed kernel; the master reads SecureBoot =
// 1); and a Secure Boot node given an unsigned kernel is refused.
func TestLabUEFIBoot(t *testing.T) {
	l := startEFILab(t, netboot.DHCPDnsmasq)
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		simlabtest.SkipOrFail(t, err)
	}
	cases := []struct {
		node string
		want []string // in order on the console
		not  string   // never on the console
	}{
		{"bios1", []string{`firmware: bios`, `master# `}, ""},
		{"uefi1", []string{`(?s)Downloading NBP file.*iPXE`, `labctl: loading the master kernel`, `firmware: uefi, secure boot off`, `master# `}, ""},
		{"http1", []string{`(?s)HTTP Boot.*iPXE`, `labctl: loading the master kernel`, `firmware: uefi, secure boot off`, `master# `}, ""},
		{"sb1", []string{`Fetching Netboot Image grubx64.efi`, `labctl: loading the master kernel`, `firmware: uefi, secure boot on`, `master# `}, ""},
		// GRUB refuses the kernel, then has nothing to load the initrd
		// for: the kernel never ran.
		{"sbbad", []string{`labctl: loading the master kernel`, `error: [^\n]*signature[^\n]*`, `you need to load the kernel first`}, `EFI stub`},
	}
	for _, c := range cases {
		t.Run(c.node, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			n := l.bootNode(t, c.node)
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
			defer cancel()
			// A node whose boot failed (its kernel panics with no root, say)
			// ends the waiting at once, not at the timeout.
			ctx, failed := context.WithCancelCause(ctx)
			defer failed(nil)
			go func() {
				if m, _, err := n.console.wait(ctx, 0, regexp.MustCompile(`Kernel panic[^\n]*`)); err == nil {
					failed(fmt.Errorf("the node failed: %q", m[0]))
				}
			}()
			pos := 0
			for _, w := range c.want {
				var err error
				var m []string
				if m, pos, err = n.console.wait(ctx, pos, regexp.MustCompile(w)); err != nil {
					t.Fatalf("%v\nconsole:\n%s\nboot server:\n%s", err, lastBytes(n.console.String(), 4000), lastBytes(l.boot.String(), 3000))
				}
				t.Logf("%s: %q after %.1fs", c.node, lastBytes(m[0], 80), time.Since(start).Seconds())
			}
			if c.not != "" && strings.Contains(n.console.String(), c.not) {
				t.Errorf("console shows %q:\n%s", c.not, lastBytes(n.console.String(), 4000))
			}
		})
	}
}

// lastBytes is the end of s, for failure messages.
func lastBytes(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
