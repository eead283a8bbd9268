// Package farm plays fake nodes, many in one process, for the bench's
// scale cases and for tests of labs larger than QEMU can run: each node
// has a BMC (go-ipmi's BMC server on a UDP port of 127.0.0.1: IPMI 2.0
// lanplus, user User, chassis power, boot flags and native SOL), so
// labctl reaches it the way it reaches a real BMC and starts no process
// per node. Its serial console waits for a power-on, then asks the boot
// server for the node's pxelinux config the way pxelinux would
// (BOOT_URL/pxelinux.cfg/01-<mac>): a master entry starts a real shell
// with the "master# " prompt (so the dispatcher's wget | dd and sha256sum
// really run, against the daemon's HTTP server, into the node's
// disk.img); a local entry boots the disk if an image with a boot
// signature is on it: a login prompt (root/test), then a shell with
// "testos# ". The shells are bash with the applets of WriteBin's
// directory on PATH and a dd that maps Disk to the node's disk.img; a
// shell runs only while a node is booted into it (a power-off silences
// it at once and kills it in the background). A power-off or a new boot
// ends whatever runs.
package farm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	ipmibmc "github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/clock"
	"github.com/bougou/go-ipmi/pkg/hal"
	"github.com/bougou/go-ipmi/pkg/hal/mock"
	"github.com/bougou/go-ipmi/pkg/server"
	"github.com/bougou/go-ipmi/pkg/transport/udp"
	"github.com/bougou/go-ipmi/pkg/types"
	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/labctl/labctl/internal/fakeos"
)

// User is the BMC user of every node (its password is Start's).
const User = "farm"

// Disk is the disk device of the farm's nodes, as their device type
// names it: their dd (WriteBin's wrapper) reads and writes the node's
// disk.img instead. Its directory does not exist, so a dd that missed the
// wrapper fails instead of creating a file in /dev.
const Disk = "/dev/labctl-farm-nonexistent/disk"

// HostAlias is the address by which the nodes reach the host (its
// loopback), as on QEMU's user-mode network, so that fake nodes can share
// a lab with simlab's QEMU nodes: its boot server's http_url is
// http://10.0.2.2:PORT.
const HostAlias = "10.0.2.2"

// NodeConfig is a node to play.
type NodeConfig struct {
	// Name names the node's directory (DIR/NAME, its disk.img).
	Name string
	// MAC is the node's MAC address, by which it asks the boot server for
	// its pxelinux config.
	MAC net.HardwareAddr
	// Port is its BMC's UDP port on 127.0.0.1; 0: a free one (Node.Port
	// says which).
	Port int
	// BootURL is the boot server's HTTP URL (labctl's [boot_server]
	// http_url; HostAlias is the host).
	BootURL string
	// ShellGroup, if set, is a control group directory (its cgroup.procs)
	// that the node's shells join as they start: a group with a small CPU
	// share keeps the farm's BMCs answering while every node's shell is
	// busy, as a BMC has a CPU of its own. Its parent must be the farm's
	// own group: killed shells go back there to exit.
	ShellGroup string
}

// Farm is a set of running fake nodes.
type Farm struct {
	Nodes   []*Node // in the order of Start's configs
	cancel  context.CancelFunc
	poller  *solPoller
	servers []*server.Server
	wg      sync.WaitGroup
}

// Start starts the nodes, each with a BMC whose user User has password;
// dir holds each node's directory and WriteBin's bin directory. The
// nodes are off. Close stops them.
func Start(dir, password string, nodes []NodeConfig) (*Farm, error) {
	if password == "" {
		return nil, errors.New("farm: no BMC password")
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Farm{cancel: cancel, poller: newSOLPoller()}
	f.wg.Go(func() { f.poller.run(ctx, solPollEvery) })
	for _, c := range nodes {
		mac := strings.ToLower(strings.ReplaceAll(c.MAC.String(), ":", "-"))
		boot := strings.TrimSuffix(c.BootURL, "/")
		if rest, ok := strings.CutPrefix(boot, "http://"+HostAlias); ok {
			boot = "http://127.0.0.1" + rest
		}
		n := &Node{Name: c.Name, Dir: filepath.Join(dir, c.Name), bin: filepath.Join(dir, "bin"),
			cfgURL: boot + "/pxelinux.cfg/01-" + mac, poller: f.poller, shellGroup: c.ShellGroup}
		if err := os.MkdirAll(n.Dir, 0o755); err != nil {
			f.Close()
			return nil, fmt.Errorf("farm: %s: %w", c.Name, err)
		}
		srv, port, err := n.serveBMC(password, c.Port)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("farm: %s: BMC on UDP 127.0.0.1:%d: %w", c.Name, c.Port, err)
		}
		n.Port = port
		f.Nodes = append(f.Nodes, n)
		f.servers = append(f.servers, srv)
		f.wg.Go(func() { srv.Serve(ctx) })
	}
	return f, nil
}

// Close powers every node off (their shells end) and stops the BMCs.
func (f *Farm) Close() {
	f.cancel()
	for _, s := range f.servers {
		s.Close()
	}
	// A BMC request still being handled may power a node on after this;
	// a closed node stays off.
	for _, n := range f.Nodes {
		n.mu.Lock()
		n.closed = true
		n.setPowerLocked(false)
		n.mu.Unlock()
	}
	for _, n := range f.Nodes {
		n.ended()
	}
	f.wg.Wait()
}

// serveBMC makes the node's BMC server on 127.0.0.1:port (0: any free
// port) and says which port it has.
func (n *Node) serveBMC(password string, port int) (*server.Server, int, error) {
	m := mock.New()
	m.SetConsole(&mock.Console{OpenHook: n.openConsole})
	b := ipmibmc.New(ipmibmc.DeviceInfo{IPMIVersion: 0x20}, [16]byte{'f', 'a', 'r', 'm'}, nodeHAL{m, n},
		ipmibmc.WithClock(nodeClock{n}))
	// The most patient SOL retries the spec allows (7 retries, 2.55 s
	// apart): one CPU plays every node, and on a loaded machine the
	// defaults (3, 50 ms apart) drop output a dedicated BMC would deliver.
	// A send threshold of one character: output goes out as soon as the
	// node's SOL pump is kicked (see nodeClock), not after an
	// accumulation interval; while a packet waits for its
	// acknowledgement, output accumulates and rides the answer to it. The
	// dispatcher paces its typing by the echo: an echo's delay is the
	// farm's latency, not the daemon's.
	for _, p := range []struct {
		sel  uint8
		data []byte
	}{{4, []byte{7, 255}}, {3, []byte{1, 1}}} {
		if cc := b.SOL.Config().SetParam(p.sel, p.data); cc != types.CodeOK {
			return nil, 0, fmt.Errorf("set SOL configuration parameter %d: completion code %v", p.sel, cc)
		}
	}
	u, err := b.Users.Add(2, User)
	if err != nil {
		return nil, 0, err
	}
	u.SetPassword([]byte(password))
	u.Enabled = true
	u.ChannelAccess[1] = ipmibmc.UserChannelAccess{MaxPrivilege: ipmibmc.PrivilegeLevelAdministrator, Enabled: true}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		return nil, 0, err
	}
	return server.NewServer(b, udp.Wrap(pc, udp.WithReadTimeout(time.Second))), pc.LocalAddr().(*net.UDPAddr).Port, nil
}

// nodeHAL is go-ipmi's mock HAL with the node as its chassis.
type nodeHAL struct {
	*mock.HAL
	node *Node
}

func (h nodeHAL) Chassis() hal.ChassisHAL { return (*chassis)(h.node) }

// chassis is a node as its BMC's chassis: power and boot flags.
type chassis Node

// Node is one fake node: its power, boot flags, serial console and
// disk (Dir/disk.img).
type Node struct {
	Name string
	Dir  string // its directory: disk.img, the shells' working directory
	Port int    // its BMC's UDP port on 127.0.0.1

	bin, cfgURL string
	poller      *solPoller // drives the pump of its SOL session
	shellGroup  string     // NodeConfig.ShellGroup

	mu     sync.Mutex
	on     bool
	stop   context.CancelFunc // ends the current boot
	booted chan struct{}      // closed when the current boot has ended
	closed bool               // Farm.Close: it stays off
	flags  *types.BootOptionParam_BootFlags
	input  func([]byte) // where console input goes now; nil: dropped
	sol    *solConsole  // the attached SOL session; nil: output is lost
	pump   *solTicker   // the ticker of its SOL session's pump; nil: none
}

func (n *chassis) PowerState(context.Context) (bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.on, nil
}

func (n *chassis) SetPower(_ context.Context, on bool) error {
	(*Node)(n).setPower(on)
	return nil
}

// setPower switches the node and returns at once, as a BMC answers a
// chassis control before the node has changed: a power-off ends what runs
// (its shells are killed in the background), and a power-on of a node
// that was off boots it once the last boot has ended. A fake BMC that
// answered only after the shells were gone kept its answer late while
// the farm was busy, and a client's resent request, executed after the
// node was back on, cycled it twice.
func (n *Node) setPower(on bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.setPowerLocked(on)
}

// setPowerLocked is setPower with n.mu held. A powered-off node takes no
// more input and says nothing more (shell).
func (n *Node) setPowerLocked(on bool) {
	if on == n.on || on && n.closed {
		return
	}
	n.on = on
	if !on {
		n.stop()
		n.input = nil
		return
	}
	last := n.booted
	ctx, cancel := context.WithCancel(context.Background())
	booted := make(chan struct{})
	n.stop, n.booted = cancel, booted
	go func() {
		defer close(booted)
		if last != nil {
			<-last
		}
		if ctx.Err() == nil { // not powered off again meanwhile
			n.boot(ctx)
		}
	}()
}

// ended returns once the node's last boot has ended (after a power-off).
func (n *Node) ended() {
	n.mu.Lock()
	booted := n.booted
	n.mu.Unlock()
	if booted != nil {
		<-booted
	}
}

// PowerCycle is off, then on: a new boot.
func (n *chassis) PowerCycle(context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.on {
		return hal.ErrNotSupported
	}
	(*Node)(n).setPowerLocked(false)
	(*Node)(n).setPowerLocked(true)
	return nil
}

func (n *chassis) ColdReset(context.Context) error              { return nil }
func (n *chassis) WarmReset(context.Context) error              { return nil }
func (n *chassis) Identify(context.Context, uint8) error        { return nil }
func (n *chassis) IntrusionState(context.Context) (bool, error) { return false, nil }
func (n *chassis) SetBootInfoAcknowledge(context.Context, *types.BootOptionParam_BootInfoAcknowledge) error {
	return nil
}
func (n *chassis) GetBootInfoAcknowledge(context.Context) (*types.BootOptionParam_BootInfoAcknowledge, error) {
	return &types.BootOptionParam_BootInfoAcknowledge{}, nil
}

func (n *chassis) SetBootFlags(_ context.Context, f *types.BootOptionParam_BootFlags) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	cp := *f
	n.flags = &cp
	return nil
}

func (n *chassis) GetBootFlags(context.Context) (*types.BootOptionParam_BootFlags, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.flags == nil {
		return &types.BootOptionParam_BootFlags{}, nil
	}
	cp := *n.flags
	return &cp, nil
}

// solConsole is an SOL session's end of the node's serial port.
type solConsole struct {
	node *Node
	mu   sync.Mutex
	out  []byte // console output not yet read by the BMC
}

// consoleBacklog bounds the output an SOL session has not read: a serial
// line drops what nobody reads.
const consoleBacklog = 1 << 20

func (n *Node) openConsole(context.Context) (hal.ConsoleConn, error) {
	c := &solConsole{node: n}
	n.mu.Lock()
	n.sol = c
	n.mu.Unlock()
	return c, nil
}

func (c *solConsole) Write(p []byte) (int, error) {
	c.node.mu.Lock()
	in := c.node.input
	c.node.mu.Unlock()
	if in != nil {
		in(bytes.Clone(p))
	}
	return len(p), nil
}

func (c *solConsole) ReadAvailable(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := copy(p, c.out)
	c.out = c.out[k:]
	if len(c.out) == 0 {
		c.out = nil
	}
	return k, nil
}

func (c *solConsole) SendBreak(context.Context) error { return hal.ErrNotSupported }

func (c *solConsole) Close() error {
	c.node.mu.Lock()
	if c.node.sol == c {
		c.node.sol = nil
	}
	c.node.mu.Unlock()
	return nil
}

// say writes to the node's serial console and kicks its SOL pump.
func (n *Node) say(p []byte) {
	n.mu.Lock()
	c, pump := n.sol, n.pump
	n.mu.Unlock()
	if c == nil {
		return
	}
	c.mu.Lock()
	if len(c.out)+len(p) <= consoleBacklog {
		c.out = append(c.out, p...)
	}
	c.mu.Unlock()
	if pump != nil {
		pump.kick()
	}
}

func (n *Node) sayString(s string) { n.say([]byte(s)) }

func (n *Node) setInput(f func([]byte)) {
	n.mu.Lock()
	n.input = f
	n.mu.Unlock()
}

// boot plays the firmware, then the master or the disk, until ctx ends.
func (n *Node) boot(ctx context.Context) {
	n.sayString("\r\nSimBIOS (farm node)\r\nPXE: DHCP ... TFTP pxelinux.0\r\n")
	cfg := n.pxeConfig(ctx)
	switch {
	case ctx.Err() != nil:
	case strings.Contains(cfg, "KERNEL"):
		n.sayString("[    0.000000] Linux version 6.1.0-fake (master)\r\n")
		n.shell(ctx, "master# ")
	case fakeos.Bootable(filepath.Join(n.Dir, "disk.img")):
		n.sayString("Booting from local disk...\r\n[    0.000000] Linux version 6.1.0-fake (testos)\r\n")
		if n.login(ctx) {
			n.shell(ctx, "testos# ")
		}
	default:
		n.sayString("No bootable device.\r\n")
		<-ctx.Done()
	}
}

// pxeConfig fetches the node's pxelinux config from the boot server,
// trying three times as a PXE ROM retries its requests.
func (n *Node) pxeConfig(ctx context.Context) string {
	for try := 1; ; try++ {
		cfg, err := n.fetchConfig(ctx)
		if err == nil || try == 3 || ctx.Err() != nil {
			if err != nil {
				n.sayString("PXE: " + err.Error() + "\r\n")
			}
			return cfg
		}
		n.sayString(fmt.Sprintf("PXE: %v (try %d of 3)\r\n", err, try))
	}
}

func (n *Node) fetchConfig(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.cfgURL, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", nil // no config for this node: pxelinux walks on (local boot)
	}
	return string(b), nil
}

// login plays the test OS's getty and login (root/test) on the console.
func (n *Node) login(ctx context.Context) bool {
	l := fakeos.NewLogin(fakeos.LoginConfig{Hostname: "testos", Username: "root", Password: "test", Say: n.say})
	n.setInput(l.Input)
	defer n.setInput(nil)
	return l.Run(ctx)
}

// shell runs bash on a pty of its own, bridged to the console, until
// the boot ends; then it kills the shell's whole session (a wget | dd in
// flight included), as a power-off would.
func (n *Node) shell(ctx context.Context, prompt string) {
	// bash, not busybox sh: busybox's shell runs its own applets (dd)
	// whatever PATH says, and the node's dd must be the wrapper that
	// writes this node's disk.img.
	cmd := exec.Command("/bin/bash", "--noprofile", "--norc", "--noediting", "-i")
	cmd.Dir = n.Dir
	cmd.Env = []string{"PATH=" + n.bin, "PS1=" + prompt, "HOME=" + n.Dir, "TERM=vt100", "TMPDIR=" + n.Dir,
		"FAKE_DISK=" + filepath.Join(n.Dir, "disk.img")}
	ptmx, err := startPolled(cmd)
	if err != nil {
		n.sayString("fake node: cannot start a shell: " + err.Error() + "\r\n")
		return
	}
	if n.shellGroup != "" {
		// Before it reads its first line: what it starts joins with it.
		if err := os.WriteFile(filepath.Join(n.shellGroup, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
			n.sayString("fake node: shell group: " + err.Error() + "\r\n")
		}
	}
	n.setInput(func(p []byte) { ptmx.Write(p) })
	done := make(chan struct{})
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := ptmx.Read(buf)
			if k > 0 && ctx.Err() == nil {
				n.say(buf[:k])
			}
			if err != nil {
				break
			}
		}
		cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
		n.setInput(nil)
		ptmx.Close()
		return
	case <-ctx.Done():
	}
	n.setInput(nil)
	leave := ""
	if n.shellGroup != "" {
		// The group's parent is the farm's own (NodeConfig.ShellGroup):
		// a killed process needs the CPU to exit, which the shells'
		// small share would make it wait for while the farm is busy,
		// and the node's next boot waits for it.
		leave = filepath.Dir(n.shellGroup)
	}
	killSession(cmd.Process.Pid, leave)
	ptmx.Close()
	<-done
}

// killSession kills every process of the session sid (the shell made it
// with its pty) and returns once they have had SIGKILL; if leave is a
// control group directory, each process is moved into it once killed (a
// killed process cannot fork, and one that has exited is not moved). The
// shells have job control, which puts each pipeline in a process group
// of its own, so the session is found by a pass over /proc (getsid of
// every process). One pass serves every session asked for while the last
// one ran: a burst of power-offs across 2,000 nodes, each pass reading
// some thousands of processes, costs a few passes and not one each (the
// nodes' next boots wait for them, on the farm's one CPU).
func killSession(sid int, leave string) {
	reaper.mu.Lock()
	if reaper.asked == nil {
		reaper.asked, reaper.next = map[int]string{}, make(chan struct{})
	}
	reaper.asked[sid] = leave
	done := reaper.next
	if !reaper.running {
		reaper.running = true
		go reaper.run()
	}
	reaper.mu.Unlock()
	<-done
}

// sessionReaper is what killSession runs on: the sessions asked for since
// the last pass over /proc, and whether a goroutine makes passes.
type sessionReaper struct {
	mu      sync.Mutex
	asked   map[int]string // session IDs for the next pass, each to its killSession leave
	next    chan struct{}  // closed when the next pass has run
	running bool
	passes  int // passes made (tests)
}

var reaper sessionReaper

// run makes passes over /proc while sessions are asked for, each killing
// those asked for before it began, then tells their callers.
func (r *sessionReaper) run() {
	for {
		r.mu.Lock()
		batch, done := r.asked, r.next
		r.asked, r.next = nil, nil
		if len(batch) == 0 {
			r.running = false
			r.mu.Unlock()
			return
		}
		r.passes++
		r.mu.Unlock()
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			s, err := unix.Getsid(pid)
			if err != nil {
				continue
			}
			if leave, ok := batch[s]; ok {
				syscall.Kill(pid, syscall.SIGKILL)
				if leave != "" {
					os.WriteFile(filepath.Join(leave, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
				}
			}
		}
		close(done)
	}
}

// WriteBin writes dir/bin, the commands of the nodes' shells: busybox's
// applets (busybox is its path), and wrappers of dd and sync that work on
// the node's own disk.img where the dispatcher names Disk.
func WriteBin(dir, busybox string) error {
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	// dd is a wrapper: the device path the dispatcher writes to and reads
	// back is each node's own disk.img ($FAKE_DISK, set by the shell's
	// environment), never a real device.
	dd := fmt.Sprintf(`#!%[1]s sh
n=$#
for a in "$@"; do
  case "$a" in
    of=%[2]s) a="of=$FAKE_DISK" ;;
    if=%[2]s) a="if=$FAKE_DISK" ;;
  esac
  set -- "$@" "$a"
done
shift $n
exec %[1]s dd "$@"
`, busybox, Disk)
	// wget reaches the host at HostAlias, as on a QEMU user-mode network.
	wget := fmt.Sprintf(`#!%[1]s sh
n=$#
for a in "$@"; do
  case "$a" in
    http://%[2]s:*|http://%[2]s/*) a="http://127.0.0.1${a#http://%[2]s}" ;;
  esac
  set -- "$@" "$a"
done
shift $n
exec %[1]s wget "$@"
`, busybox, HostAlias)
	// sync flushes the node's own disk, as it does on a node: the host's
	// sync(2), hundreds of nodes at a time, would flush every file of the
	// machine each time.
	sync := fmt.Sprintf("#!%[1]s sh\nexec %[1]s sync -d \"$FAKE_DISK\"\n", busybox)
	for name, text := range map[string]string{"dd": dd, "sync": sync, "wget": wget} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(text), 0o755); err != nil {
			return err
		}
	}
	for _, applet := range []string{"gunzip", "sha256sum", "mkfifo", "tee", "cat", "rm", "echo", "printf",
		"head", "uname", "true", "false", "ls", "sleep", "test", "[", "wc", "mkdir", "cut", "seq", "base64", "stat"} {
		p := filepath.Join(bin, applet)
		os.Remove(p)
		if err := os.Symlink(busybox, p); err != nil {
			return err
		}
	}
	return nil
}

// DeviceType is the device-type file (TOML) of the farm's nodes, named
// name: IPMI power and native SOL, the master on PXE writing Disk, the
// disk's login root/test. kernel and initrd are the master's, files of
// the boot server's root that must exist (the nodes never read them).
func DeviceType(name, kernel, initrd string) string {
	return fmt.Sprintf(`name = %q
description = "fake node, played by simlab/farm"
[power]
method = "ipmi"
cipher_suite = 3
[console]
driver = "ipmi"
pacing = "echo"
# One process plays many nodes: an echo can be late, which the
# dispatcher would take for a lost character.
echo_timeout = "2s"
# A node's console buffers its input (a pty, or login's line buffer), as
# a UART's FIFO does: up to 16 characters may be on their way at once.
echo_window = 16
bootloader_serial_delay_ms = 1
test_shell_serial_delay_ms = 1
[master]
kernel = %q
initrd = %q
prompt = "master# "
disk = %q
[login]
shell_prompt = "testos# "
[timeouts]
power = "30s"
master_boot = "3m"
deploy = "5m"
disk_boot = "3m"
login = "2m"
test_step = "2m"
job = "20m"
`, name, kernel, initrd, Disk)
}

// Image returns a raw disk image of size bytes (at least 512) that a
// node boots from once it is written: an MBR boot signature, the rest a
// pattern.
func Image(size int) []byte {
	img := make([]byte, max(size, 512))
	for i := range img {
		img[i] = byte(i*7 + i>>8)
	}
	fakeos.MarkBootable(img)
	return img
}

// startPolled starts cmd on a new pty and returns the pty's master end,
// non-blocking so that its reads wait in Go's network poller (one epoll
// for every node's pty) rather than each in a thread of its own: creack/pty
// leaves the master in blocking mode (it asks for its descriptor), and
// 2,000 nodes' blocked reads would be 2,000 threads.
func startPolled(cmd *exec.Cmd) (*os.File, error) {
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 200})
	if err != nil {
		return nil, err
	}
	fd, err := unix.Dup(int(ptmx.Fd()))
	ptmx.Close()
	if err == nil {
		unix.CloseOnExec(fd)
		err = unix.SetNonblock(fd, true)
		if err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		killSession(cmd.Process.Pid, "")
		cmd.Wait()
		return nil, fmt.Errorf("pty: %w", err)
	}
	return os.NewFile(uintptr(fd), "/dev/ptmx"), nil
}

// solPollEvery is how often every node's SOL pump runs whether or not its
// node said anything: for its retries (2.55 s apart) and its console
// reconnects, which need no finer clock.
const solPollEvery = time.Second

// solPoller runs the SOL pumps of every node of the farm. go-ipmi's BMC
// runs a pump per SOL session on a 10 ms ticker of its clock; 2,000 such
// tickers are 200,000 wake-ups a second (each allocating a read buffer)
// for consoles that are mostly quiet. The farm's clock gives each pump a
// ticker that ticks when its node writes to the console (say kicks it)
// and, for retries, once every solPollEvery from this one poller.
type solPoller struct {
	mu      sync.Mutex
	tickers map[*solTicker]struct{}
}

func newSOLPoller() *solPoller {
	return &solPoller{tickers: map[*solTicker]struct{}{}}
}

// run kicks every pump once every period, until ctx ends.
func (p *solPoller) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var all []*solTicker
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.mu.Lock()
		all = all[:0]
		for k := range p.tickers {
			all = append(all, k)
		}
		p.mu.Unlock()
		for _, k := range all {
			k.kick()
		}
	}
}

// nodeClock is the clock of a node's BMC: real time, and as its ticker
// (go-ipmi's only one is the SOL pump's) a solTicker.
type nodeClock struct{ n *Node }

func (nodeClock) Now() time.Time                         { return time.Now() }
func (nodeClock) NewTimer(d time.Duration) clock.Timer   { return clock.Real.NewTimer(d) }
func (c nodeClock) NewTicker(time.Duration) clock.Ticker { return c.n.newPumpTicker() }

// solTicker is a SOL pump's ticker: it ticks when kicked (at most one
// tick waits).
type solTicker struct {
	c      chan time.Time
	node   *Node
	poller *solPoller
}

// newPumpTicker makes the ticker of the node's new SOL session's pump.
func (n *Node) newPumpTicker() *solTicker {
	t := &solTicker{c: make(chan time.Time, 1), node: n, poller: n.poller}
	if t.poller != nil {
		t.poller.mu.Lock()
		t.poller.tickers[t] = struct{}{}
		t.poller.mu.Unlock()
	}
	n.mu.Lock()
	n.pump = t
	n.mu.Unlock()
	return t
}

func (t *solTicker) C() <-chan time.Time { return t.c }

func (t *solTicker) Stop() {
	if t.poller != nil {
		t.poller.mu.Lock()
		delete(t.poller.tickers, t)
		t.poller.mu.Unlock()
	}
	t.node.mu.Lock()
	if t.node.pump == t {
		t.node.pump = nil
	}
	t.node.mu.Unlock()
}

// kick makes the pump run soon (once, however often it is kicked before
// it runs).
func (t *solTicker) kick() {
	select {
	case t.c <- time.Now():
	default:
	}
}
