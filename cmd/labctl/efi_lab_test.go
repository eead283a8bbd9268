package main

// A mixed lab on a real DHCP server: simlab's bridge network (its own
// network namespace, a bridge, taps, dnsmasq) with nodes of each firmware
// kind, labctl serve running inside the namespace. Needs root.

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/labctl/labctl/internal/testutil"
	"github.com/labctl/labctl/simlab"
	"github.com/labctl/labctl/simlab/simlabtest"
)

// firmwareKind is one kind of node in the mixed lab and what its DHCP
// exchange must show.
type firmwareKind struct {
	firmware string
	// arch is the client architecture (DHCP option 93) in dnsmasq's
	// "vendor class" line: PXEClient:Arch:00000 (BIOS), 00007 (x64 UEFI),
	// HTTPClient:Arch:00016 (x64 UEFI HTTP boot).
	vendorClass string
	// bootFile matches the boot file dnsmasq must send that request
	// (docs/uefi.md: which loader serves which firmware).
	bootFile *regexp.Regexp
	// steps are test steps beside the smoke job's.
	steps string
}

// mixedKinds are the node kinds of TestLabMixedFirmware; each has its
// device type in device-types/.
var mixedKinds = []firmwareKind{
	{firmware: simlab.FirmwareBIOS, vendorClass: "PXEClient:Arch:00000", bootFile: regexp.MustCompile(`^lpxelinux\.0$`)},
	{firmware: simlab.FirmwareUEFI, vendorClass: "PXEClient:Arch:00007", bootFile: regexp.MustCompile(`^efi/snponly\.efi$`)},
	// OVMF's own UEFI HTTP boot: an http:// URL to the EFI loader.
	{firmware: simlab.FirmwareHTTPBoot, vendorClass: "HTTPClient:Arch:00016", bootFile: regexp.MustCompile(`^http://10\.76\.0\.1(:\d+)?/efi/snponly\.efi$`)},
	{firmware: simlab.FirmwareSecureBoot, vendorClass: "PXEClient:Arch:00007", bootFile: regexp.MustCompile(`^shimx64\.efi$`),
		// The kernel says so when the firmware booted it with Secure Boot on.
		steps: "[[test]]\nname = \"secureboot\"\ncommands = [\"dmesg | grep 'Secure boot enabled'\"]\n"},
}

// smokeSteps returns the test steps of examples/jobs/smoke.toml (the repo
// at root): everything from its first [[test]] table on.
func smokeSteps(t *testing.T, root string) string {
	t.Helper()
	path := filepath.Join(root, "examples", "jobs", "smoke.toml")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(b), "[[test]]")
	if i < 0 {
		t.Fatalf("%s: no [[test]] steps", path)
	}
	return string(b[i:])
}

// TestLabMixedFirmware: nodes of every firmware kind on simlab's bridge
// network run the smoke job at once through labctl serve in the lab's
// namespace, and each completes. dnsmasq runs labctl netboot dhcp-config's
// output unmodified; its log shows each node's lease at its fixed address
// with the node's client architecture and the boot file labctl chose for it.
// A DHCP client of an unknown architecture gets an address, no boot file.
func TestLabMixedFirmware(t *testing.T) {
	if os.Geteuid() != 0 {
		simlabtest.SkipOrFail(t, fmt.Errorf("the bridge network needs root (network namespace, bridge, taps)"))
	}
	root, err := simlab.RepoRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	kinds := mixedKinds
	var firmware []string
	for _, k := range kinds {
		dt := simlab.DeviceTypeFor(k.firmware)
		if _, err := os.Stat(filepath.Join(root, "device-types", dt+".toml")); err != nil {
			t.Fatalf("firmware %s: no device type %s in device-types/: %v", k.firmware, dt, err)
		}
		firmware = append(firmware, k.firmware)
	}
	bin := labctlBinary(t)
	lab := simlabtest.StartLab(t, len(kinds), simlab.Options{Network: simlab.NetBridge, Labctl: bin, Firmware: firmware})
	t.Cleanup(func() { killStrays(lab) })
	netw := lab.Network

	// The config dnsmasq runs is labctl's output, byte for byte, and
	// dnsmasq reads it.
	want, err := exec.Command(bin, "netboot", "dhcp-config", "--format", "dnsmasq", "--lab", lab.ConfigPath).Output()
	if err != nil {
		t.Fatalf("labctl netboot dhcp-config: %v", err)
	}
	if got, err := os.ReadFile(netw.DHCPConfig); err != nil || string(got) != string(want) {
		t.Errorf("dnsmasq's labctl config %s differs from labctl netboot dhcp-config's output (%v)", netw.DHCPConfig, err)
	}
	if cmdline := dnsmasqCmdline(t, netw); !strings.Contains(cmdline, "--conf-file="+netw.DHCPConfig) {
		t.Errorf("dnsmasq does not read %s: %s", netw.DHCPConfig, cmdline)
	}

	token, err := os.ReadFile(filepath.Join(lab.Dir, "ci.token"))
	if err != nil {
		t.Fatal(err)
	}
	server := "http://" + lab.BootServer.ServerAddr
	startServeInNetNS(t, bin, lab)

	start := time.Now()
	type result struct {
		code int
		out  string
	}
	results := make([]result, len(kinds))
	steps := smokeSteps(t, root)
	var wg sync.WaitGroup
	for i, k := range kinds {
		n := lab.Nodes[i]
		job := labJobFile(t, lab, "smoke-"+k.firmware, fmt.Sprintf("device = %q", n.Name), steps+k.steps)
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i].code, results[i].out = runInNetNS(t, netw, bin, server, strings.TrimSpace(string(token)), 20*time.Minute,
				"submit", "--follow", job)
		}()
	}
	wg.Wait()
	t.Logf("%d jobs ended %.0fs after they were submitted at once", len(kinds), time.Since(start).Seconds())

	leases := dnsmasqLog(t, netw.DHCPLog)
	for i, k := range kinds {
		n := lab.Nodes[i]
		r := results[i]
		if r.code != 0 || !strings.Contains(r.out, "COMPLETE") {
			t.Errorf("%s (%s): labctl submit --follow: exit %d\n%s", n.Name, k.firmware, r.code, tail(r.out, 60))
		}
		t.Logf("%s (%s): %s", n.Name, k.firmware, phaseTimes(r.out))
		tx := leases.byMAC(n.MAC)
		if len(tx) == 0 {
			t.Errorf("%s (%s): no DHCP exchange with MAC %s in %s", n.Name, k.firmware, n.MAC, netw.DHCPLog)
			continue
		}
		if !slices.ContainsFunc(tx, func(x dhcpExchange) bool { return x.ack == n.IP }) {
			t.Errorf("%s (%s): no DHCPACK of its address %s in %s", n.Name, k.firmware, n.IP, netw.DHCPLog)
		}
		boot := slices.IndexFunc(tx, func(x dhcpExchange) bool {
			return strings.HasPrefix(x.vendorClass, k.vendorClass) && x.ack == n.IP && k.bootFile.MatchString(x.bootFile)
		})
		if boot < 0 {
			t.Errorf("%s (%s): no DHCPACK to a %s client with a boot file matching %s in %s", n.Name, k.firmware, k.vendorClass, k.bootFile, netw.DHCPLog)
		} else {
			t.Logf("%s (%s): DHCP %s -> %s, boot file %s", n.Name, k.firmware, tx[boot].vendorClass, tx[boot].ack, tx[boot].bootFile)
		}
		st, err := n.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.Power {
			t.Errorf("%s left powered on", n.Name)
		}
	}

	// A node that asks as a client of an architecture labctl does not boot:
	// an address, no boot file, and dnsmasq's log names what it saw.
	if !strings.Contains(string(want), "client-arch") {
		t.Fatalf("labctl's dnsmasq config does not choose boot files by client architecture:\n%s", want)
	}
	xid := unknownArchDiscover(t, netw, lab.Nodes[0].MAC)
	leases = dnsmasqLog(t, netw.DHCPLog)
	var seen *dhcpExchange
	for i := range leases {
		if leases[i].xid == xid {
			seen = &leases[i]
		}
	}
	switch {
	case seen == nil:
		t.Errorf("the unknown-architecture DISCOVER (xid %s) is not in %s", xid, netw.DHCPLog)
	case !strings.Contains(seen.vendorClass, "Arch:00099"):
		t.Errorf("dnsmasq's log does not name the unknown architecture: %+v", *seen)
	case seen.offer == "" || seen.bootFile != "":
		t.Errorf("unknown architecture: want an offer without a boot file, got %+v", *seen)
	case !strings.Contains(seen.tags, "labctl-unknown-arch"):
		t.Errorf("unknown architecture: dnsmasq's log does not tag it labctl-unknown-arch: %+v", *seen)
	default:
		t.Logf("unknown architecture: dnsmasq logged %q with tags %q, offered %s, no boot file", seen.vendorClass, seen.tags, seen.offer)
	}
}

// dnsmasqCmdline is the running dnsmasq's command line.
func dnsmasqCmdline(t *testing.T, n *simlab.Network) string {
	t.Helper()
	b, err := os.ReadFile(n.DHCPPidFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := os.ReadFile("/proc/" + strings.TrimSpace(string(b)) + "/cmdline")
	if err != nil {
		t.Fatalf("dnsmasq (pid %s) not running: %v", strings.TrimSpace(string(b)), err)
	}
	return strings.ReplaceAll(string(c), "\x00", " ")
}

// startServeInNetNS runs labctl serve in the lab's namespace (where its boot
// server listens on the bridge) and waits until its API accepts
// connections there; the cleanup stops it with SIGTERM.
func startServeInNetNS(t *testing.T, bin string, lab *simlab.Lab) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "serve.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	argv := lab.Network.Exec(bin, "serve", "--lab", lab.ConfigPath)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(cleanEnv(), "HOME="+t.TempDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(3 * time.Minute):
			t.Error("labctl serve did not stop within 3 minutes of SIGTERM")
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("labctl serve log:\n%s", tail(string(b), 150))
		}
	})
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := lab.Network.DialContext(ctx, "tcp", lab.BootServer.ServerAddr)
		cancel()
		if err == nil {
			c.Close()
			return
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("labctl serve exited: %v\n%s", err, b)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("labctl serve's API did not listen within a minute: %v", err)
		}
	}
}

// runInNetNS runs a labctl client command in the lab's namespace.
func runInNetNS(t *testing.T, n *simlab.Network, bin, server, token string, timeout time.Duration, args ...string) (int, string) {
	t.Helper()
	var out testutil.SyncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	argv := n.Exec(append([]string{bin}, args...)...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = append(cleanEnv(), "HOME="+t.TempDir(), "LABCTL_SERVER="+server, "LABCTL_TOKEN="+token)
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Errorf("labctl %s did not end within %s", strings.Join(args, " "), timeout)
	}
	if err != nil && cmd.ProcessState == nil {
		t.Errorf("labctl %s: %v", strings.Join(args, " "), err)
		return -1, out.String()
	}
	return cmd.ProcessState.ExitCode(), out.String()
}

// phaseTimes picks the phase times out of a job log: power-on to master
// prompt, the write, disk boot to login.
func phaseTimes(log string) string {
	var parts []string
	for _, re := range []*regexp.Regexp{
		regexp.MustCompile(`master prompt [0-9hm.]+s after power on`),
		regexp.MustCompile(`wrote the image in [0-9hm.]+s`),
		regexp.MustCompile(`logged in as \S+, [0-9hm.]+s after`),
	} {
		if m := re.FindStringSubmatch(log); m != nil {
			parts = append(parts, m[0])
		}
	}
	return strings.Join(parts, "; ")
}

// dhcpExchange is one DHCP transaction in dnsmasq's --log-dhcp output.
type dhcpExchange struct {
	xid         string
	mac         string
	vendorClass string
	tags        string // the tags dnsmasq set for the request
	offer, ack  string // addresses offered and acknowledged
	bootFile    string // option 67 or the BOOTP file field dnsmasq sent
}

type dhcpLog []dhcpExchange

func (l dhcpLog) byMAC(mac string) []dhcpExchange {
	var out []dhcpExchange
	for _, x := range l {
		if strings.EqualFold(x.mac, mac) {
			out = append(out, x)
		}
	}
	return out
}

var (
	dhcpLine    = regexp.MustCompile(`dnsmasq-dhcp\[\d+\]: (\d+) (.*)$`)
	dhcpMessage = regexp.MustCompile(`^(DHCP[A-Z]+)\(\S+\) (?:(\d+\.\d+\.\d+\.\d+) )?([0-9a-f:]{17})`)
)

// dnsmasqLog reads dnsmasq's log into exchanges: a client message (its
// "vendor class:" line starts one) and dnsmasq's answer. DISCOVER/OFFER
// and REQUEST/ACK of one lease share an xid.
func dnsmasqLog(t *testing.T, path string) dhcpLog {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out dhcpLog
	cur := map[string]*dhcpExchange{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := dhcpLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		xid, msg := m[1], m[2]
		x := cur[xid]
		switch {
		case strings.HasPrefix(msg, "vendor class: "):
			// The first line of a client message: a new transaction.
			if x != nil && (x.offer != "" || x.ack != "") {
				out = append(out, *x)
			}
			x = &dhcpExchange{xid: xid, vendorClass: strings.TrimPrefix(msg, "vendor class: ")}
			cur[xid] = x
		case x == nil:
			x = &dhcpExchange{xid: xid}
			cur[xid] = x
		}
		if mm := dhcpMessage.FindStringSubmatch(msg); mm != nil {
			x.mac = mm[3]
			switch mm[1] {
			case "DHCPOFFER":
				x.offer = mm[2]
			case "DHCPACK":
				x.ack = mm[2]
			}
		}
		if strings.HasPrefix(msg, "tags: ") {
			x.tags = strings.TrimPrefix(msg, "tags: ")
		}
		if i := strings.Index(msg, "option: 67 bootfile-name"); i >= 0 {
			x.bootFile = strings.TrimSpace(msg[i+len("option: 67 bootfile-name"):])
		}
		if strings.HasPrefix(msg, "bootfile name: ") {
			x.bootFile = strings.TrimPrefix(msg, "bootfile name: ")
		}
	}
	for _, x := range cur {
		out = append(out, *x)
	}
	return out
}

// unknownArchDiscover sends one DHCPDISCOVER from inside the lab's
// namespace with client architecture 99 (no such RFC 4578 type) and the
// MAC of a known node, and returns its xid once dnsmasq has answered it.
func unknownArchDiscover(t *testing.T, n *simlab.Network, macText string) string {
	t.Helper()
	const xid = 0x4c616263
	mac, err := net.ParseMAC(macText)
	if err != nil {
		t.Fatal(err)
	}
	pkt := make([]byte, 240)
	pkt[0], pkt[1], pkt[2] = 1, 1, 6 // BOOTREQUEST, Ethernet, 6-byte address
	pkt[4], pkt[5], pkt[6], pkt[7] = xid>>24, xid>>16&0xff, xid>>8&0xff, xid&0xff
	pkt[10] = 0x80 // broadcast reply
	copy(pkt[28:], mac)
	copy(pkt[236:], []byte{99, 130, 83, 99})
	vendor := "PXEClient:Arch:00099:UNDI:003000"
	pkt = append(pkt, 53, 1, 1) // DHCPDISCOVER
	pkt = append(pkt, 93, 2, 0, 99)
	pkt = append(pkt, 60, byte(len(vendor)))
	pkt = append(pkt, vendor...)
	pkt = append(pkt, 55, 2, 66, 67, 255)

	var conn *net.UDPConn
	err = simlab.InNetNS(n.NetNS, func() error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero, Port: 68})
		if err != nil {
			return err
		}
		f, err := c.File()
		if err == nil {
			err = syscall.SetsockoptInt(int(f.Fd()), syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1)
			if err == nil {
				err = syscall.SetsockoptString(int(f.Fd()), syscall.SOL_SOCKET, syscall.SO_BINDTODEVICE, n.Bridge)
			}
			f.Close()
		}
		if err != nil {
			c.Close()
			return err
		}
		conn = c
		return nil
	})
	if err != nil {
		t.Fatalf("DHCP client socket in %s: %v", n.NetNS, err)
	}
	defer conn.Close()
	if _, err := conn.WriteToUDP(pkt, &net.UDPAddr{IP: net.IPv4bcast, Port: 67}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		k, _, err := conn.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("no answer to the unknown-architecture DISCOVER: %v", err)
		}
		if k >= 240 && buf[0] == 2 && string(buf[4:8]) == string(pkt[4:8]) {
			return fmt.Sprint(xid)
		}
	}
}
