// Package dispatchertest provides a lab node simulated in-process, for tests
// of the dispatcher, the daemon and the console broker that must run in
// seconds without QEMU.
//
// The node is a real shell on a real pty: when it "boots the master" it
// starts busybox sh with the master prompt, so the dispatcher's commands
// (wget | gunzip | dd, sha256sum, markers) really run, against a disk that
// is a plain file. Booting "from disk" works only once an image with an MBR
// boot signature has been written to that file; then the node plays a login
// prompt and a test shell. Power, the boot device and the PXE entry behave
// like the real thing's, and every call is recorded for assertions.
package dispatchertest

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/internal/fakeos"
	"github.com/labctl/labctl/sol"
)

// Node is a simulated lab node. Create it with NewNode; it implements
// labctl.Power and labctl.Netboot, and Dialer gives its console.
type Node struct {
	Name string
	// Disk is the node's disk: a file the master's dd writes to.
	Disk string
	// Username and Password are what the test OS login accepts.
	Username, Password string
	// BootDelay is how long the firmware takes before the master or disk
	// boot starts printing.
	BootDelay time.Duration
	// MasterPrompt and ShellPrompt are the prompts of the master shell and
	// of the test OS shell.
	MasterPrompt, ShellPrompt string
	// LateLoginEnter, if set, is how late the first Enter typed at the
	// login prompt echoes; the node takes the line only then, as a busy
	// node does.
	LateLoginEnter time.Duration
	// Countdown, if set, is how long the firmware waits at CountdownPrompt
	// on every boot, as iPXE waits for Ctrl-B: any other key ends the wait
	// at once (Countdowns counts how each wait ended).
	Countdown time.Duration
	// CountdownMisses is how many keys each countdown misses before it
	// takes one, as a firmware that polls its console too late does.
	CountdownMisses int

	dir   string
	tools string
	files *fileServer

	mu      sync.Mutex
	on      bool
	bootdev labctl.BootDevice
	master  bool
	gen     int
	// bootCtx ends when the boot of generation gen does (stopBoot).
	bootCtx  context.Context
	stopBoot context.CancelFunc
	shell    *exec.Cmd
	ptmx     *os.File
	input    func([]byte)
	stream   *stream
	calls    []string
	boots    int
	powerErr error
	failFrom string
	failErr  error
	noMaster bool
	// kernel is the job entry set by BootKernel; nil when the entry is
	// the master's or local.
	kernel *kernelEntry
	// booted are the kernel entries the node booted, in order.
	booted    []KernelBoot
	exports   []*Export
	exportErr error
	// saves, cutSave and saveTokens serve and record AcceptSave uploads.
	saves      *saveServer
	cutSave    int64
	saveTokens []string
	// skipped and ranOut count the countdowns ended by a key and by time.
	skipped, ranOut int
}

// CountdownPrompt is what the firmware prints when Node.Countdown is set.
const CountdownPrompt = "Press Ctrl-B for the firmware shell..."

// kernelEntry is a BootKernel entry.
type kernelEntry struct{ kernel, initrd, cmdline string }

// KernelBoot is one boot of a BootKernel entry: what the node fetched
// and the command line it booted with.
type KernelBoot struct {
	KernelBytes, InitrdBytes int
	Cmdline                  string
}

// NewNode makes a node whose files live in a new directory under dir.
// Close stops it.
func NewNode(name, dir string) (*Node, error) {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		return nil, fmt.Errorf("dispatchertest: the simulated node needs busybox (Debian package busybox-static): %w", err)
	}
	d := filepath.Join(dir, name)
	tools := filepath.Join(d, "bin")
	if err := os.MkdirAll(tools, 0o755); err != nil {
		return nil, err
	}
	for _, applet := range []string{"sh", "wget", "dd", "gunzip", "xzcat", "sha256sum", "mkfifo", "tee", "cat", "rm", "sync", "echo", "printf", "head", "uname", "true", "false", "ls", "sleep", "test", "[", "wc", "dmesg", "mkdir", "cut", "seq", "base64", "stty", "nc", "tail", "blockdev", "stat"} {
		if err := os.Symlink(busybox, filepath.Join(tools, applet)); err != nil {
			return nil, err
		}
	}
	for _, tool := range []string{"zstdcat", "zstd"} {
		if p, err := exec.LookPath(tool); err == nil {
			if err := os.Symlink(p, filepath.Join(tools, tool)); err != nil {
				return nil, err
			}
		}
	}
	disk := filepath.Join(d, "disk.img")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		return nil, err
	}
	n := &Node{
		Name: name, Disk: disk, Username: "root", Password: "test",
		BootDelay: 50 * time.Millisecond, MasterPrompt: "master# ", ShellPrompt: "testos# ",
		dir: d, tools: tools, bootdev: labctl.BootDisk,
	}
	n.files, err = newFileServer()
	if err != nil {
		return nil, err
	}
	return n, nil
}

// Close powers the node off and stops its file server.
func (n *Node) Close() error {
	n.mu.Lock()
	n.powerOffLocked()
	if n.stream != nil {
		n.stream.close()
		n.stream = nil
	}
	saves := n.saves
	n.mu.Unlock()
	n.files.close()
	if saves != nil {
		saves.close()
	}
	return nil
}

// Calls returns the power, boot device and PXE calls made so far, such as
// "power on", "bootdev pxe", "pxe master".
func (n *Node) Calls() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.calls...)
}

// On reports whether the node is powered on.
func (n *Node) On() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.on
}

// Boots counts the power-ons so far.
func (n *Node) Boots() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.boots
}

// Countdowns says how the firmware countdowns so far ended: skipped by a
// key, or run out.
func (n *Node) Countdowns() (skipped, ranOut int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.skipped, n.ranOut
}

// countdown plays the firmware's countdown (Node.Countdown); false if the
// node was powered off meanwhile.
func (n *Node) countdown(gen int) bool {
	n.mu.Lock()
	wait, misses := n.Countdown, n.CountdownMisses
	key := make(chan struct{}, 1)
	if wait > 0 && gen == n.gen {
		n.input = func(p []byte) {
			if len(p) > 0 && p[0] != 0x02 {
				if misses > 0 {
					misses--
					return
				}
				select {
				case key <- struct{}{}:
				default:
				}
			}
		}
	}
	n.mu.Unlock()
	if wait <= 0 {
		return true
	}
	if !n.emit(gen, []byte("\r\n"+CountdownPrompt)) {
		return false
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	skipped := false
	select {
	case <-key:
		skipped = true
	case <-t.C:
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if gen != n.gen {
		return false
	}
	n.input = nil
	if skipped {
		n.skipped++
	} else {
		n.ranOut++
	}
	return true
}

// FailPower makes every later power call fail with err (nil heals it): a
// BMC that stopped answering.
func (n *Node) FailPower(err error) {
	n.mu.Lock()
	n.powerErr = err
	n.mu.Unlock()
}

// FailFrom makes power calls fail with err from the first call named call
// (as Calls lists them, e.g. "bootdev disk") on: a BMC that stops answering
// at a chosen point of a job.
func (n *Node) FailFrom(call string, err error) {
	n.mu.Lock()
	n.failFrom, n.failErr = call, err
	n.mu.Unlock()
}

// record notes a call and arms a FailFrom that it matches.
func (n *Node) record(call string) {
	n.calls = append(n.calls, call)
	if n.failFrom != "" && call == n.failFrom {
		n.powerErr, n.failFrom = n.failErr, ""
	}
}

// CorruptImages makes the boot server flip the byte at offset off of every
// image it serves from now on (a negative off heals it): a transfer that
// damages the image on its way to the node.
func (n *Node) CorruptImages(off int64) {
	n.files.mu.Lock()
	n.files.corrupt = off
	n.files.mu.Unlock()
}

// BreakMaster makes the master never reach its prompt: a PXE setup that
// does not work.
func (n *Node) BreakMaster() {
	n.mu.Lock()
	n.noMaster = true
	n.mu.Unlock()
}

// Power implements labctl.Power.
func (n *Node) Power(ctx context.Context, op labctl.PowerOp) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.record("power " + string(op))
	if n.powerErr != nil {
		return fmt.Errorf("power %s %s: %w", op, n.Name, n.powerErr)
	}
	switch op {
	case labctl.PowerOn:
		if !n.on {
			n.powerOnLocked()
		}
	case labctl.PowerOff:
		n.powerOffLocked()
	case labctl.PowerCycle, labctl.PowerReset:
		n.powerOffLocked()
		n.powerOnLocked()
	default:
		return fmt.Errorf("power %s: unknown operation", op)
	}
	return nil
}

// PowerState implements labctl.Power.
func (n *Node) PowerState(ctx context.Context) (bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.powerErr != nil {
		return false, fmt.Errorf("power status %s: %w", n.Name, n.powerErr)
	}
	return n.on, nil
}

// SetBootDevice implements labctl.Power.
func (n *Node) SetBootDevice(ctx context.Context, dev labctl.BootDevice) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.record("bootdev " + string(dev))
	if n.powerErr != nil {
		return fmt.Errorf("bootdev %s %s: %w", dev, n.Name, n.powerErr)
	}
	n.bootdev = dev
	return nil
}

// BootMaster implements labctl.Netboot.
func (n *Node) BootMaster() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.calls = append(n.calls, "pxe master")
	n.master, n.kernel = true, nil
	return nil
}

// BootKernel implements labctl.Netboot: the next PXE boot fetches the
// kernel and initrd over HTTP (a failed fetch prints pxelinux's "Loading
// ... failed") and plays the test OS's login, with no disk needed.
func (n *Node) BootKernel(kernelURL, initrdURL, cmdline string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.calls = append(n.calls, "pxe kernel")
	n.master, n.kernel = false, &kernelEntry{kernelURL, initrdURL, cmdline}
	return nil
}

// ExportRoot implements labctl.Netboot: the export is recorded (see
// Exports); the simulated node mounts nothing.
func (n *Node) ExportRoot(ctx context.Context, dir string) (labctl.RootExport, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.calls = append(n.calls, "nfs export")
	if n.exportErr != nil {
		return nil, n.exportErr
	}
	e := &Export{Dir: dir, node: n, source: fmt.Sprintf("10.0.2.2:/labctl/%s-%d", n.Name, len(n.exports))}
	n.exports = append(n.exports, e)
	return e, nil
}

// FailExports makes later ExportRoot calls fail with err (nil heals it):
// an NFS server that is not running.
func (n *Node) FailExports(err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.exportErr = err
}

// Exports returns the root exports made so far.
func (n *Node) Exports() []*Export {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*Export(nil), n.exports...)
}

// Export is a recorded root export.
type Export struct {
	Dir    string
	node   *Node
	source string
	gone   bool
}

func (e *Export) Source() string  { return e.source }
func (e *Export) Options() string { return "vers=4.1,port=2049" }

// Withdraw records the end of the export.
func (e *Export) Withdraw() error {
	e.node.mu.Lock()
	defer e.node.mu.Unlock()
	e.node.calls = append(e.node.calls, "nfs withdraw")
	e.gone = true
	return nil
}

// Withdrawn reports whether the export was withdrawn.
func (e *Export) Withdrawn() bool {
	e.node.mu.Lock()
	defer e.node.mu.Unlock()
	return e.gone
}

// KernelBoots returns the kernel entries the node booted so far.
func (n *Node) KernelBoots() []KernelBoot {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]KernelBoot(nil), n.booted...)
}

// BootLocal implements labctl.Netboot.
func (n *Node) BootLocal() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.calls = append(n.calls, "pxe local")
	n.master, n.kernel = false, nil
	return nil
}

// PublishImage implements labctl.Netboot.
func (n *Node) PublishImage(f *os.File) (labctl.PublishedImage, error) {
	return n.files.publish(f)
}

// AcceptUploads implements labctl.Netboot.
func (n *Node) AcceptUploads(dir string) (string, func(), error) {
	return n.files.acceptUploads(dir)
}

// Dialer returns the node's console, as a sol.Dialer. One stream is
// attached at a time; a new Dial detaches the previous one, as a BMC
// allows one SOL session.
func (n *Node) Dialer() *Console { return &Console{node: n} }

// Console is the node's serial console.
type Console struct{ node *Node }

// Target implements sol.Dialer.
func (c *Console) Target() string { return "simulated node " + c.node.Name }

// Dial implements sol.Dialer.
func (c *Console) Dial(ctx context.Context) (io.ReadWriteCloser, error) {
	n := c.node
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stream != nil {
		n.stream.close()
	}
	s := &stream{node: n, data: make(chan []byte, 1024), done: make(chan struct{})}
	n.stream = s
	return s, nil
}

// KillConsole ends the attached console stream as a BMC ending the SOL
// session would.
func (n *Node) KillConsole() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stream != nil {
		n.stream.close()
		n.stream = nil
	}
}

func (n *Node) powerOnLocked() {
	n.on = true
	n.boots++
	n.gen++
	gen := n.gen
	n.bootCtx, n.stopBoot = context.WithCancel(context.Background())
	pxe := n.bootdev == labctl.BootPXE
	master := pxe && n.master && !n.noMaster
	if pxe && n.kernel != nil && !n.noMaster {
		go n.bootKernel(gen, *n.kernel)
		return
	}
	go n.boot(gen, master, pxe && n.noMaster)
}

func (n *Node) powerOffLocked() {
	n.on = false
	n.gen++
	n.input = nil
	if n.stopBoot != nil {
		n.stopBoot()
		n.stopBoot = nil
	}
	if n.shell != nil {
		syscall.Kill(-n.shell.Process.Pid, syscall.SIGKILL)
		n.shell = nil
	}
	if n.ptmx != nil {
		n.ptmx.Close()
		n.ptmx = nil
	}
}

// emit sends console output to the attached stream, if any; output with no
// one attached is lost, as on a BMC without a SOL session.
func (n *Node) emit(gen int, p []byte) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if gen != n.gen {
		return false
	}
	if n.stream != nil {
		n.stream.deliver(p)
	}
	return true
}

func (n *Node) boot(gen int, master, pxeBroken bool) {
	if !n.emit(gen, []byte("\r\nSimBIOS (simulated node)\r\n")) || !n.countdown(gen) {
		return
	}
	time.Sleep(n.BootDelay)
	switch {
	case master:
		n.emit(gen, []byte("PXE: loading master\r\n[    0.000000] Linux version 6.1.0-sim (master)\r\n"))
		n.startShell(gen, n.MasterPrompt)
	case pxeBroken:
		n.emit(gen, []byte("PXE: TFTP open timeout\r\nNo bootable device.\r\n"))
	case fakeos.Bootable(n.Disk):
		n.emit(gen, []byte("Booting from Hard Disk...\r\n[    0.000000] Linux version 6.1.0-sim (testos)\r\n"))
		n.login(gen)
	default:
		n.emit(gen, []byte("No bootable device.\r\n"))
	}
}

// bootKernel fetches a kernel entry's files as lpxelinux does and plays
// the test OS's login.
func (n *Node) bootKernel(gen int, e kernelEntry) {
	if !n.emit(gen, []byte("\r\nSimBIOS (simulated node)\r\n")) || !n.countdown(gen) {
		return
	}
	time.Sleep(n.BootDelay)
	boot := KernelBoot{Cmdline: e.cmdline}
	for _, f := range []struct {
		url  string
		size *int
	}{{e.kernel, &boot.KernelBytes}, {e.initrd, &boot.InitrdBytes}} {
		if f.url == "" {
			continue
		}
		size, err := fetch(f.url)
		if err != nil {
			n.emit(gen, []byte(fmt.Sprintf("Loading %s failed: %v\r\n", f.url, err)))
			return
		}
		*f.size = size
	}
	n.mu.Lock()
	n.booted = append(n.booted, boot)
	n.mu.Unlock()
	n.emit(gen, []byte("[    0.000000] Linux version 6.1.0-sim (network boot)\r\n[    0.000000] Command line: "+e.cmdline+"\r\n"))
	n.login(gen)
}

// fetch reads a URL whole and returns its size.
func fetch(url string) (int, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("HTTP %s", resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	return len(b), err
}

// login plays the test OS's getty and login on the console, then starts
// the test shell.
func (n *Node) login(gen int) {
	n.mu.Lock()
	if gen != n.gen {
		n.mu.Unlock()
		return
	}
	ctx := n.bootCtx
	l := fakeos.NewLogin(fakeos.LoginConfig{
		Hostname: "simnode", Username: n.Username, Password: n.Password,
		Say: func(p []byte) { n.emit(gen, p) }, LateEnter: n.LateLoginEnter,
	})
	n.input = l.Input
	n.mu.Unlock()
	if l.Run(ctx) {
		n.startShell(gen, n.ShellPrompt)
	}
}

// startShell runs busybox sh on a pty as the node's console program.
func (n *Node) startShell(gen int, prompt string) {
	cmd := exec.Command(filepath.Join(n.tools, "sh"), "-i")
	cmd.Dir = n.dir
	cmd.Env = []string{"PATH=" + n.tools, "PS1=" + prompt, "HOME=" + n.dir, "TERM=vt100", "TMPDIR=" + n.dir}
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 200})
	if err != nil {
		n.emit(gen, []byte("simulated node: cannot start shell: "+err.Error()+"\r\n"))
		return
	}
	n.mu.Lock()
	if gen != n.gen {
		n.mu.Unlock()
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		ptmx.Close()
		cmd.Wait()
		return
	}
	n.shell, n.ptmx = cmd, ptmx
	n.input = func(p []byte) { ptmx.Write(p) }
	n.mu.Unlock()
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := ptmx.Read(buf)
			if k > 0 {
				n.emit(gen, bytes.Clone(buf[:k]))
			}
			if err != nil {
				break
			}
		}
		cmd.Wait()
	}()
}

// stream is one attached console session.
type stream struct {
	node *Node
	data chan []byte
	done chan struct{}
	once sync.Once
	rest []byte
}

// deliver queues output; a full queue drops it, as a BMC's buffer would.
// Called with node.mu held.
func (s *stream) deliver(p []byte) {
	select {
	case s.data <- p:
	default:
	}
}

func (s *stream) close() { s.once.Do(func() { close(s.done) }) }

var errClosedByBMC = fmt.Errorf("%w (simulated)", sol.ErrClosedByBMC)

func (s *stream) Read(p []byte) (int, error) {
	if len(s.rest) == 0 {
		select {
		case b := <-s.data:
			s.rest = b
		case <-s.done:
			return 0, errClosedByBMC
		}
	}
	k := copy(p, s.rest)
	s.rest = s.rest[k:]
	return k, nil
}

func (s *stream) Write(p []byte) (int, error) {
	select {
	case <-s.done:
		return 0, errClosedByBMC
	default:
	}
	n := s.node
	n.mu.Lock()
	in := n.input
	n.mu.Unlock()
	if in != nil {
		in(bytes.Clone(p))
	}
	return len(p), nil
}

func (s *stream) Close() error {
	s.close()
	n := s.node
	n.mu.Lock()
	if n.stream == s {
		n.stream = nil
	}
	n.mu.Unlock()
	return nil
}

// Settings are device settings that fit node n, with timeouts short
// enough for tests.
func Settings(n *Node) devices.Settings {
	s := devices.DefaultSettings()
	s.Console.Pacing = devices.PacingEcho
	// The simulated node never loses a character: a late echo is the
	// machine being busy (make test runs QEMU nodes beside the daemon
	// tests), and 200 ms taken for a loss retyped lines until the deploy
	// timed out.
	s.Console.EchoTimeout = 2 * time.Second
	s.Master.Prompt = n.MasterPrompt
	s.Master.Disk = n.Disk
	s.Login.ShellPrompt = n.ShellPrompt
	s.Timeouts.Power = 5 * time.Second
	s.Timeouts.MasterBoot = 10 * time.Second
	s.Timeouts.Deploy = 30 * time.Second
	s.Timeouts.DiskBoot = 10 * time.Second
	s.Timeouts.Login = 10 * time.Second
	s.Timeouts.TestStep = 10 * time.Second
	s.Timeouts.Job = time.Minute
	return s
}

// GzipImage writes raw, gzipped, as dir/disk.img.gz and returns its path
// and the sha256 of raw (what a job names as the image's digest).
func GzipImage(t testing.TB, dir string, raw []byte) (string, string) {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(raw)
	zw.Close()
	path := filepath.Join(dir, "disk.img.gz")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	return path, hex.EncodeToString(sum[:])
}

// MBRImage returns a disk image of size bytes that the simulated node boots:
// random-looking content with an MBR boot signature.
func MBRImage(size int) []byte {
	img := make([]byte, size)
	for i := range img {
		img[i] = byte(i*7 + i/512)
	}
	fakeos.MarkBootable(img)
	copy(img[3:], strings.Repeat("SIMDISK", 8))
	return img
}
