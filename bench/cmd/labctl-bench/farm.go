package main

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
	"github.com/labctl/labctl/bench"
	"golang.org/x/sys/unix"
)

// runFarm plays every fake node of the scale case (case 4) in one
// process, so that the fake nodes cost the daemon no CPU of its own:
//
//	labctl-bench farm DIR NODES BASE_PORT BOOT_URL[,BOOT_URL...]
//
// Node i (1-based, named node%03d, MAC 52:54:01:00:hi:lo of i) has a BMC
// on UDP 127.0.0.1:BASE_PORT+i-1: go-ipmi's BMC server (IPMI 2.0 lanplus,
// user "bench", the password from $LABCTL_BENCH_BMC_PASSWORD) with
// chassis power, boot flags and native SOL, so the daemon reaches it the
// way it reaches a real BMC and starts no process per node. Its serial
// console waits for a power-on, then asks the boot server for the node's
// pxelinux config the way pxelinux would (BOOT_URL/pxelinux.cfg/01-<mac>;
// with several BOOT_URLs, one per host of the lab, the nodes are split
// over them as bench.NodeHost splits them over the hosts' lab files):
// a master entry starts a real shell with the "master# " prompt (so the
// dispatcher's wget | dd and sha256sum really run, against the daemon's
// HTTP server, into DIR/nodeNNN/disk.img); a local entry boots the disk if
// an image with a boot signature is on it: a login prompt, then a shell
// with "testos# ". The shells are bash with DIR/bin's busybox applets on
// PATH and a dd that maps the device path to the node's disk.img; a shell
// runs only while a node is booted into it. A power-off or a new boot ends
// whatever runs. The farm prints "ready" once every BMC listens and runs
// until its stdin closes.
func runFarm(args []string) error {
	const usage = "usage: farm DIR NODES BASE_PORT BOOT_URL[,BOOT_URL...]"
	if len(args) != 4 {
		return errors.New(usage)
	}
	dir, bootURLs := args[0], strings.Split(args[3], ",")
	nodes, err1 := strconv.Atoi(args[1])
	base, err2 := strconv.Atoi(args[2])
	if err1 != nil || err2 != nil || nodes < 1 || nodes > 60000 || base < 1024 || base+nodes > 65536 {
		return fmt.Errorf("farm: NODES %q must be 1 to 60000 and BASE_PORT %q a port from 1024 leaving room for every node; %s", args[1], args[2], usage)
	}
	password := os.Getenv("LABCTL_BENCH_BMC_PASSWORD")
	if password == "" {
		return errors.New("farm: LABCTL_BENCH_BMC_PASSWORD is empty: the BMCs need a password")
	}
	if err := bench.PinToCPUs(os.Getpid(), os.Getenv(bench.FarmCPUsEnv)); err != nil {
		return fmt.Errorf("farm: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var servers []*server.Server
	var farm []*farmNode
	defer func() {
		cancel()
		for _, s := range servers {
			s.Close()
		}
		for _, n := range farm {
			n.setPower(false)
		}
		wg.Wait()
	}()
	for i := 1; i <= nodes; i++ {
		name := fmt.Sprintf("node%03d", i)
		mac := fmt.Sprintf("52-54-01-00-%02x-%02x", i>>8, i&0xff)
		n := &farmNode{dir: filepath.Join(dir, name), bin: filepath.Join(dir, "bin"),
			cfgURL: bootURLs[bench.NodeHost(i-1, nodes, len(bootURLs))] + "/pxelinux.cfg/01-" + mac}
		if err := os.MkdirAll(n.dir, 0o755); err != nil {
			return err
		}
		farm = append(farm, n)
		srv, _, err := n.serveBMC(password, base+i-1)
		if err != nil {
			return fmt.Errorf("farm: %s: %w", name, err)
		}
		servers = append(servers, srv)
		wg.Go(func() { srv.Serve(ctx) })
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	return nil
}

// serveBMC makes the node's BMC server on 127.0.0.1:port (0: any free
// port) and says which port it has.
func (n *farmNode) serveBMC(password string, port int) (*server.Server, int, error) {
	m := mock.New()
	m.SetConsole(&mock.Console{OpenHook: n.openConsole})
	b := ipmibmc.New(ipmibmc.DeviceInfo{IPMIVersion: 0x20}, [16]byte{'f', 'a', 'r', 'm'}, farmHAL{m, n},
		ipmibmc.WithClock(clock.Real))
	// The most patient SOL retries the spec allows (7 retries, 2.55 s
	// apart): one CPU plays every node, and on a loaded machine the
	// defaults (3, 50 ms apart) drop output a dedicated BMC would deliver.
	// Output is sent after 5 ms of accumulation rather than the default
	// 50 ms: the dispatcher paces its typing by the echo, and 50 ms per
	// character is the farm's latency, not the daemon's.
	for _, p := range []struct {
		sel  uint8
		data []byte
	}{{4, []byte{7, 255}}, {3, []byte{1, ipmibmc.SOLMaxPayloadChars}}} {
		if cc := b.SOL.Config().SetParam(p.sel, p.data); cc != types.CodeOK {
			return nil, 0, fmt.Errorf("set SOL configuration parameter %d: completion code %v", p.sel, cc)
		}
	}
	u, err := b.Users.Add(2, "bench")
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

// farmHAL is go-ipmi's mock HAL with the node as its chassis.
type farmHAL struct {
	*mock.HAL
	node *farmNode
}

func (h farmHAL) Chassis() hal.ChassisHAL { return h.node }

// farmNode is one fake node: its power, boot flags, serial console and
// disk (a file in dir).
type farmNode struct {
	dir, bin, cfgURL string

	mu     sync.Mutex
	on     bool
	stop   context.CancelFunc // ends the current boot
	booted chan struct{}      // closed when the current boot has ended
	flags  *types.BootOptionParam_BootFlags
	input  func([]byte) // where console input goes now; nil: dropped
	sol    *farmConsole // the attached SOL session; nil: output is lost
}

func (n *farmNode) PowerState(context.Context) (bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.on, nil
}

func (n *farmNode) SetPower(_ context.Context, on bool) error {
	n.setPower(on)
	return nil
}

// setPower switches the node; a power-on of a node that was off boots it,
// a power-off ends what runs and waits for it to end.
func (n *farmNode) setPower(on bool) {
	n.mu.Lock()
	if on == n.on {
		n.mu.Unlock()
		return
	}
	n.on = on
	if !on {
		stop, booted := n.stop, n.booted
		n.mu.Unlock()
		stop()
		<-booted
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	booted := make(chan struct{})
	n.stop, n.booted = cancel, booted
	n.mu.Unlock()
	go func() {
		defer close(booted)
		n.boot(ctx)
	}()
}

// PowerCycle is off, then on: a new boot.
func (n *farmNode) PowerCycle(context.Context) error {
	n.mu.Lock()
	on := n.on
	n.mu.Unlock()
	if !on {
		return hal.ErrNotSupported
	}
	n.setPower(false)
	n.setPower(true)
	return nil
}

func (n *farmNode) ColdReset(context.Context) error              { return nil }
func (n *farmNode) WarmReset(context.Context) error              { return nil }
func (n *farmNode) Identify(context.Context, uint8) error        { return nil }
func (n *farmNode) IntrusionState(context.Context) (bool, error) { return false, nil }
func (n *farmNode) SetBootInfoAcknowledge(context.Context, *types.BootOptionParam_BootInfoAcknowledge) error {
	return nil
}
func (n *farmNode) GetBootInfoAcknowledge(context.Context) (*types.BootOptionParam_BootInfoAcknowledge, error) {
	return &types.BootOptionParam_BootInfoAcknowledge{}, nil
}

func (n *farmNode) SetBootFlags(_ context.Context, f *types.BootOptionParam_BootFlags) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	cp := *f
	n.flags = &cp
	return nil
}

func (n *farmNode) GetBootFlags(context.Context) (*types.BootOptionParam_BootFlags, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.flags == nil {
		return &types.BootOptionParam_BootFlags{}, nil
	}
	cp := *n.flags
	return &cp, nil
}

// farmConsole is an SOL session's end of the node's serial port.
type farmConsole struct {
	node *farmNode
	mu   sync.Mutex
	out  []byte // console output not yet read by the BMC
}

// consoleBacklog bounds the output an SOL session has not read: a serial
// line drops what nobody reads.
const consoleBacklog = 1 << 20

func (n *farmNode) openConsole(context.Context) (hal.ConsoleConn, error) {
	c := &farmConsole{node: n}
	n.mu.Lock()
	n.sol = c
	n.mu.Unlock()
	return c, nil
}

func (c *farmConsole) Write(p []byte) (int, error) {
	c.node.mu.Lock()
	in := c.node.input
	c.node.mu.Unlock()
	if in != nil {
		in(bytes.Clone(p))
	}
	return len(p), nil
}

func (c *farmConsole) ReadAvailable(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := copy(p, c.out)
	c.out = c.out[k:]
	if len(c.out) == 0 {
		c.out = nil
	}
	return k, nil
}

func (c *farmConsole) SendBreak(context.Context) error { return hal.ErrNotSupported }

func (c *farmConsole) Close() error {
	c.node.mu.Lock()
	if c.node.sol == c {
		c.node.sol = nil
	}
	c.node.mu.Unlock()
	return nil
}

// say writes to the node's serial console.
func (n *farmNode) say(p []byte) {
	n.mu.Lock()
	c := n.sol
	n.mu.Unlock()
	if c == nil {
		return
	}
	c.mu.Lock()
	if len(c.out)+len(p) <= consoleBacklog {
		c.out = append(c.out, p...)
	}
	c.mu.Unlock()
}

func (n *farmNode) sayString(s string) { n.say([]byte(s)) }

func (n *farmNode) setInput(f func([]byte)) {
	n.mu.Lock()
	n.input = f
	n.mu.Unlock()
}

// boot plays the firmware, then the master or the disk, until ctx ends.
func (n *farmNode) boot(ctx context.Context) {
	n.sayString("\r\nSimBIOS (labctl-bench farm node)\r\nPXE: DHCP ... TFTP pxelinux.0\r\n")
	cfg := n.pxeConfig(ctx)
	switch {
	case ctx.Err() != nil:
	case strings.Contains(cfg, "KERNEL"):
		n.sayString("[    0.000000] Linux version 6.1.0-fake (master)\r\n")
		n.shell(ctx, "master# ")
	case n.diskBootable():
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
func (n *farmNode) pxeConfig(ctx context.Context) string {
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

func (n *farmNode) fetchConfig(ctx context.Context) (string, error) {
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

func (n *farmNode) diskBootable() bool {
	f, err := os.Open(filepath.Join(n.dir, "disk.img"))
	if err != nil {
		return false
	}
	defer f.Close()
	mbr := make([]byte, 512)
	if _, err := io.ReadFull(f, mbr); err != nil {
		return false
	}
	return mbr[510] == 0x55 && mbr[511] == 0xaa
}

// login plays getty and login (root/test), with the line editing of a tty
// in canonical mode (^U, erase): sol's echo pacing retypes a line with ^U
// when an echo comes back late.
func (n *farmNode) login(ctx context.Context) bool {
	lines := make(chan string, 4)
	var mu sync.Mutex
	echo := true
	var line []byte
	n.setInput(func(p []byte) {
		mu.Lock()
		defer mu.Unlock()
		for _, b := range p {
			switch b {
			case 0x15: // ^U kills the line, as a tty in canonical mode does
				line = line[:0]
				if echo {
					n.sayString("^U\r\n")
				}
			case 0x7f, 0x08: // erase
				if len(line) > 0 {
					line = line[:len(line)-1]
					if echo {
						n.sayString("\b \b")
					}
				}
			case '\r', '\n':
				if echo {
					n.sayString("\r\n")
				}
				select {
				case lines <- string(line):
				default:
				}
				line = line[:0]
			default:
				line = append(line, b)
				if echo {
					n.say([]byte{b})
				}
			}
		}
	})
	defer n.setInput(nil)
	next := func() (string, bool) {
		select {
		case l := <-lines:
			return l, true
		case <-ctx.Done():
			return "", false
		}
	}
	setEcho := func(on bool) {
		mu.Lock()
		echo = on
		mu.Unlock()
	}
	for ctx.Err() == nil {
		n.sayString("\r\ntestos login: ")
		user, ok := next()
		if !ok {
			return false
		}
		setEcho(false)
		n.sayString("Password: ")
		pass, ok := next()
		setEcho(true)
		if !ok {
			return false
		}
		n.sayString("\r\n")
		if user == "root" && pass == "test" {
			return true
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return false
		}
		n.sayString("Login incorrect\r\n")
	}
	return false
}

// shell runs bash on a pty of its own, bridged to the console, until
// the boot ends; then it kills the shell's whole session (a wget | dd in
// flight included), as a power-off would.
func (n *farmNode) shell(ctx context.Context, prompt string) {
	// bash, not busybox sh: busybox's shell runs its own applets (dd)
	// whatever PATH says, and the node's dd must be the wrapper that
	// writes this node's disk.img.
	cmd := exec.Command("/bin/bash", "--noprofile", "--norc", "--noediting", "-i")
	cmd.Dir = n.dir
	cmd.Env = []string{"PATH=" + n.bin, "PS1=" + prompt, "HOME=" + n.dir, "TERM=vt100", "TMPDIR=" + n.dir,
		"FAKE_DISK=" + filepath.Join(n.dir, "disk.img")}
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 200})
	if err != nil {
		n.sayString("fake node: cannot start a shell: " + err.Error() + "\r\n")
		return
	}
	n.setInput(func(p []byte) { ptmx.Write(p) })
	done := make(chan struct{})
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := ptmx.Read(buf)
			if k > 0 {
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
	killSession(cmd.Process.Pid)
	ptmx.Close()
	<-done
}

// killSession kills every process of the session sid (the shell made it
// with its pty).
func killSession(sid int) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if s, err := unix.Getsid(pid); err == nil && s == sid {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
