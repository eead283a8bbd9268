package simlab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/labctl/labctl/nfs"
)

// Options configure a lab (Up, simlabtest.StartLab).
type Options struct {
	// Nodes is how many nodes to start (Up; StartLab takes n).
	Nodes int
	// Dir is the lab directory: lab.toml, devices/, state/, nodes/.
	Dir string
	// Artifacts is the artifacts directory (default DefaultArtifactsDir).
	Artifacts string
	// DeviceTypes is the directory of device type files lab.toml points at
	// (default: device-types in the repository holding the artifacts).
	DeviceTypes string
	// Accel is "tcg", "kvm" or "auto"; empty reads SIMLAB_ACCEL (default auto).
	Accel string
	// MemoryMB is each node's RAM (default 256 MiB on BIOS, 512 MiB on UEFI:
	// Debian's GRUB on OVMF cannot allocate the kernel's buffer in 256).
	MemoryMB int
	// DiskMiB is the size of each node's disk (default 128).
	DiskMiB int
	// DiskImage, if set, is a raw image copied onto each node's disk, so a
	// test can boot from disk without deploying first (the default is a
	// blank disk that only boots once an image has been written to it).
	DiskImage string
	// Simlab is the simlab binary the relays and the chassis hook run
	// (default: this executable; StartLab builds cmd/simlab if needed).
	Simlab string
	// SlotWait bounds the wait for free machine-wide slots (default 30 min).
	SlotWait time.Duration
	// Pool hands out the slots (default DefaultPool()).
	Pool *Pool
	// Progress receives progress messages (nil: quiet).
	Progress func(string)
	// WatchStdin makes each relay stop when its stdin closes, i.e. when the
	// process that started the lab dies (StartLab sets it).
	WatchStdin bool
	// Network is NetUser (default: QEMU user-mode networking per node) or
	// NetBridge (a namespace with a bridge, taps and dnsmasq; needs root).
	Network string
	// Labctl is the labctl binary whose `netboot dhcp-config` output
	// dnsmasq runs (NetBridge only).
	Labctl string
	// Firmware is each node's firmware in order (FirmwareBIOS, FirmwareUEFI,
	// FirmwareSecureBoot); nodes past the end of the list get BIOS.
	Firmware []string
	// NFS starts an nfs-ganesha for the lab's diskless nfs jobs and writes
	// its [nfs] section into lab.toml (user-mode networking only).
	NFS bool
}

// Lab is a running simulated lab.
type Lab struct {
	// Dir is the lab directory; ConfigPath its lab.toml.
	Dir        string
	ConfigPath string
	Artifacts  Artifacts
	BootServer BootServer
	// Accel is the QEMU accelerator the nodes use ("tcg" or "kvm").
	Accel string
	Nodes []*Node
	// Network is the lab's bridge network; nil on user-mode networking.
	Network *Network
	// NFS is the lab's nfs-ganesha (Options.NFS); nil without one.
	NFS *nfs.Server

	slots      []*Slot
	dhcp       *exec.Cmd
	dhcpExited chan error
	relays     []*exec.Cmd
	stdins     []io.Closer
	closeOnce  sync.Once
	closeErr   error
}

// BootServer is where the lab's boot server is to listen and how nodes
// reach it (written to lab.toml's [boot_server]).
type BootServer struct {
	// Root is the boot root (the artifacts' bootroot).
	Root string
	// TFTPAddr and HTTPAddr are listen addresses: on 127.0.0.1 with
	// user-mode networking, on the bridge (in the lab's namespace) with
	// NetBridge.
	TFTPAddr, HTTPAddr string
	// HTTPURL is the HTTP server as nodes see it: http://10.0.2.2:PORT, or
	// http://BridgeIP.
	HTTPURL string
	// TFTPServer is the TFTP server address as nodes see it (10.0.2.2).
	TFTPServer string
	// TFTPPort is the TFTP port nodes' bootfile URLs name.
	TFTPPort int
	// ServerAddr is where `labctl serve` listens for this lab.
	ServerAddr string
}

// Node is one simulated machine of a lab.
type Node struct {
	Name string
	// Dir holds the node's config, logs (console.log, relay.log, qemu.log,
	// ipmi_sim.log), pid files and status.json.
	Dir  string
	Slot int
	MAC  string
	// IP is the address the node gets from DHCP (user-mode networking's,
	// or dnsmasq's fixed address on the bridge).
	IP string
	// Firmware is FirmwareBIOS, FirmwareUEFI or FirmwareSecureBoot.
	Firmware string
	BMC      BMC
	// DeviceFile is the node's device file (devices/NAME.toml).
	DeviceFile string
	// ConsoleLog is everything the node's console printed (capped at 64 MiB).
	ConsoleLog string

	control string
}

// BMC is how to reach a node's BMC.
type BMC struct {
	Host string
	Port int
	User string
	// Password is the BMC password (keep it out of logs and argv: give it
	// to ipmitool through IPMI_PASSWORD and -E, or use PasswordFile).
	Password     string
	PasswordFile string
	// CipherSuite is the lanplus cipher suite to use: 3 (ipmi_sim has no
	// SHA256 suites; without -C 3 ipmitool stalls ~10 s per command).
	CipherSuite int
}

// Addr is host:port.
func (b BMC) Addr() string { return fmt.Sprintf("%s:%d", b.Host, b.Port) }

// Layout of a lab directory.
const (
	labConfigFile = "lab.toml"
	devicesDir    = "devices"
	nodesDir      = "nodes"
	stateDir      = "state"
	// nfsDir holds the lab's nfs-ganesha (Options.NFS): config, pid, log.
	nfsDir = "nfs-server"
	// DeviceType is the device type of simlab nodes.
	DeviceType = "simlab-qemu"
	// NodeIP is every node's address on its own user-mode network.
	NodeIP = "10.0.2.15"
	// HostFromGuest is the host's loopback as nodes see it.
	HostFromGuest = "10.0.2.2"
)

// ErrMissingTool means a program the lab needs is not installed.
var ErrMissingTool = errors.New("simlab tool missing (run `make deps`)")

// Tools are the programs a lab runs.
type Tools struct{ QEMU, IPMISim, IPMITool string }

// FindTools looks the lab's programs up in PATH (and /usr/sbin).
func FindTools() (Tools, error) {
	var t Tools
	var missing []string
	look := func(name string) string {
		p, err := exec.LookPath(name)
		if err != nil {
			if _, err2 := os.Stat("/usr/sbin/" + name); err2 == nil {
				return "/usr/sbin/" + name
			}
			missing = append(missing, name)
		}
		return p
	}
	t.QEMU = look("qemu-system-x86_64")
	t.IPMISim = look("ipmi_sim")
	t.IPMITool = look("ipmitool")
	if len(missing) > 0 {
		return t, fmt.Errorf("%w: %s not found", ErrMissingTool, strings.Join(missing, ", "))
	}
	return t, nil
}

// Up starts opts.Nodes nodes in opts.Dir, waits until their BMCs answer and
// writes the lab config (lab.toml, devices/NAME.toml, devices/NAME.password).
// The nodes keep running after this process exits (unless WatchStdin); stop
// them with Lab.Close or Down(dir).
func Up(ctx context.Context, opts Options) (*Lab, error) {
	if opts.Nodes < 1 {
		return nil, fmt.Errorf("simlab up: %d nodes: need at least one", opts.Nodes)
	}
	if opts.Dir == "" {
		return nil, errors.New("simlab up: no lab directory")
	}
	if len(opts.Firmware) > opts.Nodes {
		return nil, fmt.Errorf("simlab up: %d firmware kinds for %d nodes", len(opts.Firmware), opts.Nodes)
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	progress := opts.Progress
	if progress == nil {
		progress = func(string) {}
	}
	tools, err := FindTools()
	if err != nil {
		return nil, fmt.Errorf("simlab up: %w", err)
	}
	if opts.Artifacts == "" {
		if opts.Artifacts, err = DefaultArtifactsDir(); err != nil {
			return nil, fmt.Errorf("simlab up: %w", err)
		}
	}
	art, err := LoadArtifacts(opts.Artifacts)
	if err != nil {
		return nil, fmt.Errorf("simlab up: %w", err)
	}
	if opts.DeviceTypes == "" {
		root, err := RepoRoot(opts.Artifacts)
		if err != nil {
			if root, err = RepoRoot("."); err != nil {
				return nil, fmt.Errorf("simlab up: device types: %w", err)
			}
		}
		opts.DeviceTypes = filepath.Join(root, "device-types")
	}
	if opts.Simlab == "" {
		if opts.Simlab, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("simlab up: %w", err)
		}
	}
	if opts.DiskMiB == 0 {
		opts.DiskMiB = 128
	}
	if opts.SlotWait == 0 {
		opts.SlotWait = 30 * time.Minute
	}
	pool := opts.Pool
	if pool == nil {
		if pool, err = DefaultPool(); err != nil {
			return nil, fmt.Errorf("simlab up: %w", err)
		}
	}
	accel, err := ChooseAccel(ctx, opts.Accel, tools.QEMU, art, pool.Dir, progress)
	if err != nil {
		return nil, fmt.Errorf("simlab up: %w", err)
	}

	wctx, cancel := context.WithTimeout(ctx, opts.SlotWait)
	slots, err := pool.Acquire(wctx, opts.Nodes, progress)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("simlab up: %w", err)
	}
	first := slots[0].Ports
	switch opts.Network {
	case "", NetUser:
		opts.Network = NetUser
	case NetBridge:
	default:
		releaseAll(slots)
		return nil, fmt.Errorf("simlab up: network %q: want %s or %s", opts.Network, NetUser, NetBridge)
	}
	if opts.NFS && opts.Network == NetBridge {
		releaseAll(slots)
		return nil, fmt.Errorf("simlab up: an NFS server runs with network %s only (it listens on the host's loopback, which bridge nodes do not reach)", NetUser)
	}
	lab := &Lab{
		Dir:        dir,
		ConfigPath: filepath.Join(dir, labConfigFile),
		Artifacts:  art,
		Accel:      accel,
		slots:      slots,
		BootServer: BootServer{
			Root:       art.BootRoot,
			TFTPAddr:   fmt.Sprintf("127.0.0.1:%d", first.TFTP),
			HTTPAddr:   fmt.Sprintf("127.0.0.1:%d", first.HTTP),
			HTTPURL:    fmt.Sprintf("http://%s:%d", HostFromGuest, first.HTTP),
			TFTPServer: HostFromGuest,
			TFTPPort:   first.TFTP,
			ServerAddr: fmt.Sprintf("127.0.0.1:%d", first.Server),
		},
	}
	if opts.Network == NetBridge {
		lab.Network = &Network{
			NetNS:       netnsName(pool.Dir, slots[0].N),
			Bridge:      bridgeName,
			Address:     BridgeIP,
			DHCPLog:     filepath.Join(dir, dhcpDir, dhcpLogFile),
			DHCPConfig:  filepath.Join(dir, dhcpDir, dhcpLabctlConf),
			DHCPPidFile: filepath.Join(dir, dhcpDir, dhcpPidFile),
		}
		lab.BootServer.TFTPAddr = fmt.Sprintf("%s:%d", BridgeIP, BridgeTFTPPort)
		lab.BootServer.HTTPAddr = fmt.Sprintf("%s:%d", BridgeIP, BridgeHTTPPort)
		lab.BootServer.HTTPURL = "http://" + BridgeIP
		lab.BootServer.TFTPServer = BridgeIP
		lab.BootServer.TFTPPort = BridgeTFTPPort
	}
	if err := lab.start(ctx, opts, tools, pool); err != nil {
		lab.Close()
		return nil, fmt.Errorf("simlab up: %w", err)
	}
	return lab, nil
}

func (l *Lab) start(ctx context.Context, opts Options, tools Tools, pool *Pool) error {
	for _, d := range []string{l.Dir, filepath.Join(l.Dir, devicesDir), filepath.Join(l.Dir, stateDir), filepath.Join(l.Dir, nodesDir)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	var names []string
	for i := range l.slots {
		names = append(names, "node"+strconv.Itoa(i+1))
	}
	var ipPath string
	if l.Network != nil {
		if os.Geteuid() != 0 {
			return fmt.Errorf("network %s needs root (it creates a network namespace, a bridge and tap devices); use network %s without root", NetBridge, NetUser)
		}
		var err error
		if ipPath, err = ipTool(); err != nil {
			return err
		}
		if _, err := dnsmasqTool(); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(l.Dir, dhcpDir), 0o755); err != nil {
			return err
		}
		// Written first, so that Down finds the namespace if a later step fails.
		if err := writeNetworkFile(l.Dir, *l.Network); err != nil {
			return err
		}
		if err := createNetwork(ctx, ipPath, l.Network.NetNS, names); err != nil {
			return err
		}
	}
	var configs []NodeConfig
	for i, s := range l.slots {
		name := names[i]
		firmware := FirmwareBIOS
		if i < len(opts.Firmware) && opts.Firmware[i] != "" {
			firmware = opts.Firmware[i]
		}
		nodeDir := filepath.Join(l.Dir, nodesDir, name)
		if err := os.MkdirAll(nodeDir, 0o755); err != nil {
			return err
		}
		password, err := randomHex(8) // 16 characters: IPMI 1.5 passwords hold at most 16 bytes
		if err != nil {
			return err
		}
		pwFile := filepath.Join(l.Dir, devicesDir, name+".password")
		if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
			return err
		}
		disk := filepath.Join(nodeDir, "disk.img")
		if err := makeDisk(disk, int64(opts.DiskMiB)<<20, opts.DiskImage); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		ip := NodeIP
		if l.Network != nil {
			ip = bridgeNodeIP(i + 1)
		}
		fw, err := firmwareFiles(firmware)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if fw.Vars != "" {
			if err := copyFile(fw.Vars, filepath.Join(nodeDir, varsFile)); err != nil {
				return fmt.Errorf("%s: firmware variable store: %w", name, err)
			}
		}
		c := NodeConfig{
			Name:          name,
			Firmware:      firmware,
			Slot:          s.N,
			Ports:         s.Ports,
			Dir:           nodeDir,
			ControlSocket: pool.ControlSocket(s.N),
			MAC:           MACForSlot(s.N),
			BMCUser:       "admin",
			PasswordFile:  pwFile,
			Accel:         l.Accel,
			MemoryMB:      memoryFor(opts.MemoryMB, firmware),
			Disk:          disk,
			BootFile:      fmt.Sprintf("tftp://%s:%d/pxelinux.0", HostFromGuest, l.BootServer.TFTPPort),
			Simlab:        opts.Simlab,
			QEMU:          tools.QEMU,
			IPMISim:       tools.IPMISim,
			IPMITool:      tools.IPMITool,
		}
		if l.Network != nil {
			c.NetNS = l.Network.NetNS
			c.Tap = tapName(name)
			c.IPTool = ipPath
		}
		if err := WriteNodeConfig(c); err != nil {
			return err
		}
		if err := writeBMCConfig(c, password); err != nil {
			return err
		}
		configs = append(configs, c)
		l.Nodes = append(l.Nodes, &Node{
			Name:       name,
			Dir:        nodeDir,
			Slot:       s.N,
			MAC:        c.MAC,
			IP:         ip,
			Firmware:   firmware,
			BMC:        BMC{Host: "127.0.0.1", Port: s.Ports.BMC, User: c.BMCUser, Password: password, PasswordFile: pwFile, CipherSuite: 3},
			DeviceFile: filepath.Join(l.Dir, devicesDir, name+".toml"),
			ConsoleLog: filepath.Join(nodeDir, consoleLogFile),
			control:    c.ControlSocket,
		})
	}
	for i, c := range configs {
		if err := l.startRelay(c, l.slots[i], opts.WatchStdin); err != nil {
			return err
		}
	}
	if err := l.waitReady(ctx, 30*time.Second); err != nil {
		return err
	}
	if opts.NFS {
		srv, err := nfs.StartServer(ctx, filepath.Join(l.Dir, nfsDir), !opts.WatchStdin)
		if errors.Is(err, nfs.ErrNotInstalled) {
			return fmt.Errorf("%w: %w", ErrMissingTool, err)
		}
		if err != nil {
			return fmt.Errorf("NFS server: %w", err)
		}
		l.NFS = srv
	}
	if err := writeLabConfig(l, opts.DeviceTypes); err != nil {
		return err
	}
	if l.Network != nil {
		return l.startDHCP(ctx, opts.Labctl, opts.WatchStdin)
	}
	return nil
}

// startRelay starts `simlab relay` for one node. It gets the slot's locked
// file as fd 3 and keeps the slot while it runs.
func (l *Lab) startRelay(c NodeConfig, s *Slot, watchStdin bool) error {
	logf, err := os.OpenFile(filepath.Join(c.Dir, relayLogFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := []string{"relay", "--node", c.Dir, "--slot-fd", "3"}
	if watchStdin {
		args = append(args, "--watch-stdin")
	}
	cmd := exec.Command(c.Simlab, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.ExtraFiles = []*os.File{s.File()}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if watchStdin {
		w, err := cmd.StdinPipe()
		if err != nil {
			return err
		}
		l.stdins = append(l.stdins, w)
		cmd.SysProcAttr.Pdeathsig = syscall.SIGTERM
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start relay of %s: %w", c.Name, err)
	}
	l.relays = append(l.relays, cmd)
	if err := writePidFile(filepath.Join(c.Dir, relayPidFile), cmd.Process.Pid); err != nil {
		return err
	}
	return nil
}

// waitReady waits until every node's relay reports ready.
func (l *Lab) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, n := range l.Nodes {
		for {
			st, err := n.Status(ctx)
			if err == nil && st.Ready {
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("%s did not get ready in %s: %v%s", n.Name, timeout, err, logTail(filepath.Join(n.Dir, relayLogFile), filepath.Join(n.Dir, ipmiSimLogFile)))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// Close stops every process the lab started (QEMU, ipmi_sim, relays) and
// gives its slots back. It is idempotent.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() {
		for _, w := range l.stdins {
			w.Close()
		}
		var errs []error
		for _, cmd := range l.relays {
			_ = cmd.Process.Signal(syscall.SIGTERM)
		}
		for _, cmd := range l.relays {
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
				errs = append(errs, fmt.Errorf("relay pid %d did not stop in 10 s; killed", cmd.Process.Pid))
			}
		}
		for _, n := range l.Nodes {
			if err := stopNodeLeftovers(n.Dir); err != nil {
				errs = append(errs, err)
			}
		}
		if l.NFS != nil {
			l.NFS.Stop()
		}
		if l.dhcp != nil {
			_ = l.dhcp.Process.Signal(syscall.SIGTERM)
			select {
			case <-l.dhcpExited:
			case <-time.After(5 * time.Second):
				_ = l.dhcp.Process.Kill()
				<-l.dhcpExited
			}
		}
		if err := stopNetwork(context.Background(), l.Dir); err != nil {
			errs = append(errs, err)
		}
		releaseAll(l.slots)
		l.closeErr = errors.Join(errs...)
	})
	return l.closeErr
}

// Down stops the lab in dir that `simlab up` started, using the pid files
// in dir/nodes/*: exactly those processes, never others by name.
func Down(dir string) error {
	nodes, err := filepath.Glob(filepath.Join(dir, nodesDir, "*", nodeConfigFile))
	if err != nil {
		return err
	}
	var errs []error
	for _, f := range nodes {
		nodeDir := filepath.Dir(f)
		if err := stopPid(filepath.Join(nodeDir, relayPidFile), 10*time.Second, "relay", nodeDir); err != nil {
			errs = append(errs, err)
		}
		if err := stopNodeLeftovers(nodeDir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := stopPid(nfs.ServerPIDFile(filepath.Join(dir, nfsDir)), 5*time.Second, "ganesha", filepath.Join(dir, nfsDir)); err != nil {
		errs = append(errs, err)
	}
	if err := stopNetwork(context.Background(), dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// stopNodeLeftovers kills a node's QEMU and ipmi_sim if they outlived the
// relay (they should not: they die with it).
func stopNodeLeftovers(nodeDir string) error {
	return errors.Join(
		stopPid(filepath.Join(nodeDir, qemuPidFile), 0, "simlab-", filepath.Join(nodeDir, "disk.img")),
		stopPid(filepath.Join(nodeDir, ipmiSimPidFile), 2*time.Second, "ipmi_sim", filepath.Join(nodeDir, lanConfFile)),
	)
}

// OpenLab returns the lab `simlab up` started in dir, for its nodes' BMC
// details and fault knobs. It starts nothing.
func OpenLab(dir string) (*Lab, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	files, err := filepath.Glob(filepath.Join(dir, nodesDir, "*", nodeConfigFile))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("open lab %s: no nodes (is it a simlab lab directory?)", dir)
	}
	l := &Lab{Dir: dir, ConfigPath: filepath.Join(dir, labConfigFile)}
	for _, f := range files {
		c, err := ReadNodeConfig(filepath.Dir(f))
		if err != nil {
			return nil, err
		}
		pw, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("open lab %s: %s: %w", dir, c.Name, err)
		}
		l.Accel = c.Accel
		ip := NodeIP
		if c.NetNS != "" {
			ip = bridgeNodeIP(nodeIndex(c.Name))
		}
		l.Nodes = append(l.Nodes, &Node{
			Name: c.Name, Dir: c.Dir, Slot: c.Slot, MAC: c.MAC, IP: ip, Firmware: c.Firmware,
			BMC:        BMC{Host: "127.0.0.1", Port: c.Ports.BMC, User: c.BMCUser, Password: strings.TrimSpace(string(pw)), PasswordFile: c.PasswordFile, CipherSuite: 3},
			DeviceFile: filepath.Join(dir, devicesDir, c.Name+".toml"),
			ConsoleLog: filepath.Join(c.Dir, consoleLogFile),
			control:    c.ControlSocket,
		})
	}
	sort.Slice(l.Nodes, func(i, j int) bool { return nodeIndex(l.Nodes[i].Name) < nodeIndex(l.Nodes[j].Name) })
	if b, err := os.ReadFile(filepath.Join(dir, networkFile)); err == nil {
		var n Network
		if err := json.Unmarshal(b, &n); err != nil {
			return nil, fmt.Errorf("open lab %s: %s: %w", dir, networkFile, err)
		}
		l.Network = &n
	}
	return l, nil
}

func nodeIndex(name string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(name, "node"))
	return n
}

// Node returns the node called name, or nil.
func (l *Lab) Node(name string) *Node {
	for _, n := range l.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// makeDisk creates a sparse disk of size bytes, holding image if given.
func makeDisk(path string, size int64, image string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if image != "" {
		src, err := os.Open(image)
		if err != nil {
			f.Close()
			return fmt.Errorf("disk image: %w", err)
		}
		n, err := io.Copy(f, src)
		src.Close()
		if err != nil {
			f.Close()
			return fmt.Errorf("disk image %s: %w", image, err)
		}
		if n > size {
			size = n
		}
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// logTail returns the last lines of the given log files, for errors.
func logTail(paths ...string) string {
	var b strings.Builder
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil || len(data) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > 10 {
			lines = lines[len(lines)-10:]
		}
		fmt.Fprintf(&b, "\n--- %s:\n%s", p, strings.Join(lines, "\n"))
	}
	return b.String()
}
