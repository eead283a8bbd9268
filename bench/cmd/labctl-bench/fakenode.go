package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"github.com/labctl/labctl/bench"
	"golang.org/x/sys/unix"
)

// runFakeNode is the console program of a fake lab node for the scale
// case (case 4); its power is a shell script (bench.fakePowerScript).
//
//	labctl-bench fakenode console DIR MAC BOOT_URL
//
// DIR holds the node's state: power ("on N" or "off N", N a boot counter
// that power-on increments), disk.img (what the master's dd writes); DIR/../bin
// holds busybox applets and the dd wrapper. The console program waits for a power-on, then asks
// the boot server for the node's pxelinux config the way pxelinux would
// (BOOT_URL/pxelinux.cfg/01-<mac>): a master entry starts a real shell
// with the "master# " prompt (so the dispatcher's wget | dd and
// sha256sum really run, against the real HTTP server, into disk.img); a
// local entry boots the disk if an image with a boot signature is on it:
// a login prompt, then a shell with "testos# ". The shells are bash with
// busybox applets on PATH and a dd that maps the device path to disk.img. A power-off or a
// new boot ends whatever runs.
func runFakeNode(args []string) error {
	if len(args) < 1 {
		return errors.New("usage: fakenode console DIR MAC BOOT_URL")
	}
	switch args[0] {
	case "console":
		if len(args) != 4 {
			return errors.New("usage: fakenode console DIR MAC BOOT_URL")
		}
		return fakeConsole(args[1], args[2], args[3])
	}
	return fmt.Errorf("fakenode: unknown command %q", args[0])
}

// power reads a node's power state and boot count (fakePowerScript's
// "on N" / "off N"), both from one read.
func power(dir string) (on bool, boots string) {
	b, _ := os.ReadFile(filepath.Join(dir, "power"))
	state, boots, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
	return state == "on", boots
}

// fakeConsole is the console program; it runs until its stdin closes
// (the dispatcher closed the console).
func fakeConsole(dir, mac, bootURL string) error {
	c := &console{dir: dir, cfgURL: bootURL + "/pxelinux.cfg/01-" + strings.ReplaceAll(strings.ToLower(mac), ":", "-")}
	yieldCPU(os.Getpid())
	if err := pinToCPUs(os.Getenv(bench.FarmCPUsEnv)); err != nil {
		return err
	}
	// One thread runs Go code: 400 of these on 2 CPUs, each with as many
	// scheduler threads as CPUs, spend their time waking each other.
	runtime.GOMAXPROCS(1)
	go c.readInput()
	on, last := power(dir)
	if on {
		last = "" // powered on before the console attached: boot now
	}
	for {
		boot, ok := c.waitBoot(last)
		if !ok {
			return nil
		}
		last = boot
		c.boot(boot)
	}
}

type console struct {
	dir    string
	cfgURL string
	mu     sync.Mutex
	input  func([]byte) // where console input goes now; nil: dropped
	closed bool
}

// readInput delivers stdin to the current input sink.
func (c *console) readInput() {
	buf := make([]byte, 4096)
	for {
		n, err := os.Stdin.Read(buf)
		if n > 0 {
			c.mu.Lock()
			in := c.input
			c.mu.Unlock()
			if in != nil {
				in(bytes.Clone(buf[:n]))
			}
		}
		if err != nil {
			c.mu.Lock()
			c.closed = true
			c.mu.Unlock()
			return
		}
	}
}

func (c *console) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

func (c *console) setInput(f func([]byte)) {
	c.mu.Lock()
	c.input = f
	c.mu.Unlock()
}

// waitBoot waits for a power-on with a boot counter other than last.
func (c *console) waitBoot(last string) (string, bool) {
	for !c.isClosed() {
		if on, b := power(c.dir); on && b != last {
			return b, true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return "", false
}

// running reports whether boot is still the current boot.
func (c *console) running(boot string) bool {
	on, b := power(c.dir)
	return !c.isClosed() && on && b == boot
}

func say(s string) { os.Stdout.WriteString(s) }

func (c *console) boot(boot string) {
	say("\r\nSimBIOS (labctl-bench fake node)\r\nPXE: DHCP ... TFTP pxelinux.0\r\n")
	cfg := c.pxeConfig()
	switch {
	case strings.Contains(cfg, "KERNEL"):
		say("[    0.000000] Linux version 6.1.0-fake (master)\r\n")
		c.shell(boot, "master# ")
	case c.diskBootable():
		say("Booting from local disk...\r\n[    0.000000] Linux version 6.1.0-fake (testos)\r\n")
		if c.login(boot) {
			c.shell(boot, "testos# ")
		}
	default:
		say("No bootable device.\r\n")
		for c.running(boot) {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// pxeConfig fetches the node's pxelinux config from the boot server,
// trying three times as a PXE ROM retries its requests.
func (c *console) pxeConfig() string {
	for try := 1; ; try++ {
		cfg, err := c.fetchConfig()
		if err == nil || try == 3 {
			if err != nil {
				say("PXE: " + err.Error() + "\r\n")
			}
			return cfg
		}
		say(fmt.Sprintf("PXE: %v (try %d of 3)\r\n", err, try))
	}
}

func (c *console) fetchConfig() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.cfgURL, nil)
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

func (c *console) diskBootable() bool {
	f, err := os.Open(filepath.Join(c.dir, "disk.img"))
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
func (c *console) login(boot string) bool {
	lines := make(chan string, 4)
	var mu sync.Mutex
	echo := true
	var line []byte
	c.setInput(func(p []byte) {
		mu.Lock()
		defer mu.Unlock()
		for _, b := range p {
			switch b {
			case 0x15: // ^U kills the line, as a tty in canonical mode does
				line = line[:0]
				if echo {
					say("^U\r\n")
				}
			case 0x7f, 0x08: // erase
				if len(line) > 0 {
					line = line[:len(line)-1]
					if echo {
						say("\b \b")
					}
				}
			case '\r', '\n':
				if echo {
					say("\r\n")
				}
				select {
				case lines <- string(line):
				default:
				}
				line = line[:0]
			default:
				line = append(line, b)
				if echo {
					os.Stdout.Write([]byte{b})
				}
			}
		}
	})
	defer c.setInput(nil)
	next := func() (string, bool) {
		for {
			select {
			case l := <-lines:
				return l, true
			case <-time.After(100 * time.Millisecond):
				if !c.running(boot) {
					return "", false
				}
			}
		}
	}
	for c.running(boot) {
		say("\r\ntestos login: ")
		user, ok := next()
		if !ok {
			return false
		}
		mu.Lock()
		echo = false
		mu.Unlock()
		say("Password: ")
		pass, ok := next()
		mu.Lock()
		echo = true
		mu.Unlock()
		if !ok {
			return false
		}
		say("\r\n")
		if user == "root" && pass == "test" {
			return true
		}
		time.Sleep(100 * time.Millisecond)
		say("Login incorrect\r\n")
	}
	return false
}

// shell runs bash on a pty of its own, bridged to the console, until
// the boot ends; then it kills the shell's whole session (a wget | dd in
// flight included), as a power-off would.
func (c *console) shell(boot, prompt string) {
	// bash, not busybox sh: busybox's shell runs its own applets (dd)
	// whatever PATH says, and the node's dd must be the wrapper that
	// writes this node's disk.img.
	bin := filepath.Join(c.dir, "..", "bin")
	cmd := exec.Command("/bin/bash", "--noprofile", "--norc", "--noediting", "-i")
	cmd.Dir = c.dir
	cmd.Env = []string{"PATH=" + bin, "PS1=" + prompt, "HOME=" + c.dir, "TERM=vt100", "TMPDIR=" + c.dir,
		"FAKE_DISK=" + filepath.Join(c.dir, "disk.img")}
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 200})
	if err != nil {
		say("fake node: cannot start a shell: " + err.Error() + "\r\n")
		return
	}
	yieldCPU(cmd.Process.Pid) // a session of its own: a new autogroup
	c.setInput(func(p []byte) { ptmx.Write(p) })
	done := make(chan struct{})
	go func() {
		io.Copy(os.Stdout, ptmx)
		cmd.Wait()
		close(done)
	}()
	for c.running(boot) {
		select {
		case <-done:
			c.setInput(nil)
			ptmx.Close()
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	c.setInput(nil)
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

// yieldCPU gives process pid the lowest CPU priority, and with it (where
// the kernel groups each session for scheduling, sched_autogroup) its
// whole session: a fake node stands in for a machine of its own, and 400
// of them must not take the 2 CPUs from the daemon being measured. Each
// console program and each shell runs in a session of its own (a pty),
// and an autogroup weighs as one process whatever its processes' nice
// values, so the autogroup's own nice value is what counts. A cheap write
// per session, unlike moving processes between control groups (which
// stalls every fork on the machine while it happens).
func yieldCPU(pid int) {
	os.WriteFile(fmt.Sprintf("/proc/%d/autogroup", pid), []byte("19"), 0)
	syscall.Setpriority(syscall.PRIO_PROCESS, pid, 19)
}

// pinToCPUs moves every thread of this process to the CPUs of list (a
// taskset -c list: "1", "1-3", "0,2"), so that the node's shells, which
// inherit it, run there too; "" leaves the affinity alone.
func pinToCPUs(list string) error {
	if list == "" {
		return nil
	}
	var set unix.CPUSet
	for _, part := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err1 := strconv.Atoi(lo)
		b, err2 := a, error(nil)
		if isRange {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || a < 0 || b < a || b >= 1024 {
			return fmt.Errorf("fakenode: CPU list %q: %q is not a CPU or range", list, part)
		}
		for cpu := a; cpu <= b; cpu++ {
			set.Set(cpu)
		}
	}
	// Threads started later are cloned from these and keep the mask.
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("fakenode: pin to CPUs %s: %w", list, err)
		}
	}
	return nil
}
