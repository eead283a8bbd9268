package simlab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Network modes of a lab (Options.Network).
const (
	// NetUser puts each node on its own QEMU user-mode network: no root,
	// QEMU's built-in DHCP hands out a fixed TFTP URL (make demo).
	NetUser = "user"
	// NetBridge puts the lab in its own network namespace: a bridge, a tap
	// device per node, dnsmasq as the DHCP server, and labctl's boot server
	// on the bridge address. Needs root.
	NetBridge = "bridge"
)

// The bridge network's addresses. Every lab has its own namespace, so
// every lab uses the same ones.
const (
	// BridgeIP is the bridge's address: the boot server and DHCP server.
	BridgeIP     = "10.76.0.1"
	bridgePrefix = 24
	bridgeName   = "br0"
	// dhcpRangeFirst..dhcpRangeLast is dnsmasq's pool for hosts it does not
	// know; known nodes get fixed addresses below it.
	dhcpRangeFirst = "10.76.0.100"
	dhcpRangeLast  = "10.76.0.199"
	// BridgeTFTPPort and BridgeHTTPPort are the boot server's ports on the
	// bridge: the standard ones, as a real lab's firmware expects.
	BridgeTFTPPort = 69
	BridgeHTTPPort = 80
)

// bridgeNodeIP is the fixed address of the i-th node (from 1) on the bridge.
func bridgeNodeIP(i int) string { return "10.76.0." + strconv.Itoa(10+i) }

// tapName is a node's tap device in the namespace.
func tapName(node string) string { return "tap-" + node }

// Files of the bridge network in the lab directory.
const (
	networkFile    = "network.json"
	dhcpDir        = "dhcp"
	dhcpSimlabConf = "simlab.conf" // what simlab owns: interface, range, logging
	dhcpLabctlConf = "labctl.conf" // `labctl netboot dhcp-config` output, unmodified
	dhcpLogFile    = "dnsmasq.log"
	dhcpLeaseFile  = "leases"
	dhcpPidFile    = "dnsmasq.pid"
	dhcpStderrFile = "dnsmasq.stderr"
	netnsRunDir    = "/run/netns"
	dnsmasqBinary  = "dnsmasq"
)

// Network is a lab's bridge network, as written to DIR/network.json.
type Network struct {
	// NetNS is the network namespace (ip netns) holding the bridge, the
	// taps, dnsmasq and, when run with `ip netns exec`, labctl.
	NetNS  string `json:"netns"`
	Bridge string `json:"bridge"`
	// Address is the bridge's address: where nodes find DHCP, TFTP, HTTP.
	Address string `json:"address"`
	// DHCPLog is dnsmasq's log (--log-dhcp: every request, its options and
	// the boot file sent).
	DHCPLog string `json:"dhcp_log"`
	// DHCPConfig is the labctl-generated dnsmasq config dnsmasq runs.
	DHCPConfig string `json:"dhcp_config"`
	// DHCPPidFile holds dnsmasq's pid.
	DHCPPidFile string `json:"dhcp_pid_file"`
}

// netnsName is the namespace of the lab whose first slot is s in the pool
// at poolDir: distinct per pool, so labs of two pools never share one.
func netnsName(poolDir string, s int) string {
	h := fnv.New32a()
	h.Write([]byte(poolDir))
	return fmt.Sprintf("simlab-%06x-s%d", h.Sum32()&0xffffff, s)
}

// ipTool finds iproute2's ip.
func ipTool() (string, error) {
	for _, p := range []string{"ip", "/usr/sbin/ip", "/sbin/ip"} {
		if path, err := exec.LookPath(p); err == nil {
			return path, nil
		}
	}
	return "", fmt.Errorf("%w: ip (iproute2) not found", ErrMissingTool)
}

func dnsmasqTool() (string, error) {
	for _, p := range []string{dnsmasqBinary, "/usr/sbin/dnsmasq"} {
		if path, err := exec.LookPath(p); err == nil {
			return path, nil
		}
	}
	return "", fmt.Errorf("%w: dnsmasq not found (Debian package dnsmasq-base)", ErrMissingTool)
}

// run runs one setup command and names it in the error.
func run(ctx context.Context, argv ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// createNetwork makes the namespace, its loopback and bridge, and one tap per
// node on the bridge. A namespace of the same name is a leftover of a lab
// that died holding this slot (slots are exclusive): it is removed first.
func createNetwork(ctx context.Context, ip, name string, nodes []string) error {
	if err := deleteNetNS(ctx, ip, name); err != nil {
		return err
	}
	steps := [][]string{
		{ip, "netns", "add", name},
		{ip, "-n", name, "link", "set", "lo", "up"},
		{ip, "-n", name, "link", "add", bridgeName, "type", "bridge"},
		{ip, "-n", name, "addr", "add", fmt.Sprintf("%s/%d", BridgeIP, bridgePrefix), "dev", bridgeName},
		{ip, "-n", name, "link", "set", bridgeName, "up"},
	}
	for _, n := range nodes {
		tap := tapName(n)
		steps = append(steps,
			[]string{ip, "-n", name, "tuntap", "add", "dev", tap, "mode", "tap"},
			[]string{ip, "-n", name, "link", "set", tap, "master", bridgeName},
			[]string{ip, "-n", name, "link", "set", tap, "up"},
		)
	}
	for _, s := range steps {
		if err := run(ctx, s...); err != nil {
			return fmt.Errorf("create lab network: %w", err)
		}
	}
	return nil
}

// deleteNetNS removes the namespace name, if it exists, and with it the
// bridge and taps in it. Processes still in it (a QEMU or dnsmasq that
// outlived its lab: only a lab of this slot puts processes there) are
// killed first by pid, or the namespace would live on.
func deleteNetNS(ctx context.Context, ip, name string) error {
	if _, err := os.Stat(filepath.Join(netnsRunDir, name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	out, err := exec.CommandContext(ctx, ip, "netns", "pids", name).Output()
	if err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
				_ = unix.Kill(pid, unix.SIGKILL)
				waitDead(pid, 3*time.Second)
			}
		}
	}
	if err := run(ctx, ip, "netns", "del", name); err != nil {
		return fmt.Errorf("delete lab network: %w", err)
	}
	return nil
}

// InNetNS runs fn on an OS thread that is in the network namespace name
// (ip netns), so the sockets fn opens belong to that namespace for their
// whole life. Other goroutines are unaffected. If the thread cannot be moved
// back, it is thrown away rather than reused.
func InNetNS(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		restored := false
		defer func() {
			if restored {
				runtime.UnlockOSThread()
			}
			// Without Unlock, the runtime ends the thread with the goroutine.
		}()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			restored = true
			errc <- fmt.Errorf("netns %s: %w", name, err)
			return
		}
		defer self.Close()
		target, err := os.Open(filepath.Join(netnsRunDir, name))
		if err != nil {
			restored = true
			errc <- fmt.Errorf("netns %s: %w", name, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			restored = true
			errc <- fmt.Errorf("netns %s: setns: %w", name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err == nil {
			restored = true
		}
		errc <- ferr
	}()
	return <-errc
}

// DialContext connects to addr from inside the lab's network namespace: for
// tests and tools in the host namespace that talk to a labctl running in it.
func (n Network) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := InNetNS(n.NetNS, func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Exec returns argv prefixed to run in the lab's namespace (ip netns exec).
func (n Network) Exec(argv ...string) []string {
	ip, err := ipTool()
	if err != nil {
		ip = "ip"
	}
	return append([]string{ip, "netns", "exec", n.NetNS}, argv...)
}

// writeDHCPConfig writes the part of dnsmasq's configuration simlab owns:
// the interface, the dynamic range, no DNS, the log and the lease file. What
// each node boots comes from labctl's file beside it, read unmodified.
func writeDHCPConfig(dir string) error {
	conf := fmt.Sprintf(`# dnsmasq of a simulated lab's bridge network, written by simlab up.
# Only DHCP: no DNS (port=0); labctl's boot server serves TFTP and HTTP.
# What each node boots is in %s (labctl netboot dhcp-config, unmodified).
port=0
interface=%s
bind-interfaces
dhcp-authoritative
# Hosts labctl does not know get an address from this pool and no boot file.
dhcp-range=%s,%s,255.255.255.0,1h
dhcp-leasefile=%s
log-dhcp
log-facility=%s
# The lab directory may be private to root (a test's temporary directory).
user=root
`, dhcpLabctlConf, bridgeName, dhcpRangeFirst, dhcpRangeLast,
		filepath.Join(dir, dhcpLeaseFile), filepath.Join(dir, dhcpLogFile))
	return os.WriteFile(filepath.Join(dir, dhcpSimlabConf), []byte(conf), 0o644)
}

// startDHCP generates the DHCP config with labctl from the lab's lab.toml,
// and starts dnsmasq in the namespace with it. It returns once dnsmasq
// listens (its log says so) or fails with dnsmasq's own words.
func (l *Lab) startDHCP(ctx context.Context, labctl string, watch bool) error {
	if labctl == "" {
		return errors.New("bridge network: no labctl binary to generate the DHCP config (Options.Labctl, --labctl)")
	}
	dir := filepath.Join(l.Dir, dhcpDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, labctl, "netboot", "dhcp-config", "--format", "dnsmasq", "--lab", l.ConfigPath)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("labctl netboot dhcp-config --lab %s: %v: %s", l.ConfigPath, err, strings.TrimSpace(stderr.String()))
	}
	if err := os.WriteFile(filepath.Join(dir, dhcpLabctlConf), out, 0o644); err != nil {
		return err
	}
	if err := writeDHCPConfig(dir); err != nil {
		return err
	}
	dnsmasq, err := dnsmasqTool()
	if err != nil {
		return err
	}
	ip, err := ipTool()
	if err != nil {
		return err
	}
	errf, err := os.OpenFile(filepath.Join(dir, dhcpStderrFile), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer errf.Close()
	d := exec.Command(ip, "netns", "exec", l.Network.NetNS, dnsmasq, "--keep-in-foreground",
		"--conf-file="+filepath.Join(dir, dhcpSimlabConf), "--conf-file="+filepath.Join(dir, dhcpLabctlConf))
	d.Stdout, d.Stderr = errf, errf
	d.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	if watch {
		d.SysProcAttr.Pdeathsig = unix.SIGTERM
	}
	if err := d.Start(); err != nil {
		return fmt.Errorf("start dnsmasq: %w", err)
	}
	l.dhcp = d
	exited := make(chan error, 1)
	go func() { exited <- d.Wait() }()
	l.dhcpExited = exited
	if err := writePidFile(l.Network.DHCPPidFile, d.Process.Pid); err != nil {
		return err
	}
	// dnsmasq logs "DHCP, IP range ..." once its socket is bound.
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(l.Network.DHCPLog)
		if strings.Contains(string(b), "DHCP, IP range") {
			return nil
		}
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("dnsmasq exited: %v%s", err, logTail(filepath.Join(dir, dhcpStderrFile), l.Network.DHCPLog))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dnsmasq did not start in 20 s%s", logTail(filepath.Join(dir, dhcpStderrFile), l.Network.DHCPLog))
		}
	}
}

// stopNetwork stops dnsmasq and removes the namespace with its bridge and
// taps. The nodes' QEMUs must be stopped first.
func stopNetwork(ctx context.Context, labDir string) error {
	b, err := os.ReadFile(filepath.Join(labDir, networkFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var n Network
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(labDir, networkFile), err)
	}
	var errs []error
	if n.DHCPPidFile != "" {
		errs = append(errs, stopPid(n.DHCPPidFile, 3*time.Second, dnsmasqBinary, filepath.Join(labDir, dhcpDir)))
	}
	ip, err := ipTool()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	if n.NetNS != "" {
		errs = append(errs, deleteNetNS(ctx, ip, n.NetNS))
	}
	return errors.Join(errs...)
}

func writeNetworkFile(labDir string, n Network) error {
	b, err := json.MarshalIndent(n, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(labDir, networkFile), append(b, '\n'), 0o644)
}
