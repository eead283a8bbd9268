package simlab_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/labctl/labctl/internal/rawpty"
	"github.com/labctl/labctl/simlab"
	"github.com/labctl/labctl/simlab/simlabtest"
)

// console is `ipmitool sol activate` running in a pty, with expect/send:
// the way a person (or labctl's command console driver) uses SOL.
type console struct {
	t    testing.TB
	cmd  *exec.Cmd
	pty  *os.File
	done chan struct{} // closed when the reader saw the end of ipmitool

	mu     sync.Mutex
	buf    []byte
	pos    int
	notify chan struct{}
}

// ansi matches CSI sequences (ESC [ ... final) and two-byte escapes (ESC c).
var ansi = regexp.MustCompile(`\x1b(\[[0-9;?]*[ -/]*[@-~]|[@-~])`)

// openConsole deactivates any stale SOL payload, runs sol activate and waits
// until ipmitool says the session is operational.
func openConsole(t testing.TB, n *simlab.Node) *console {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, _ = n.IPMITool(ctx, "sol", "deactivate") // "already de-activated" is fine
	cmd := exec.Command("ipmitool", append(n.IPMIToolArgs(), "sol", "activate")...)
	cmd.Env = n.IPMIToolEnv()
	// Raw before ipmitool starts: it goes raw itself only after printing
	// "SOL Session operational", and a ^C sent in between would be a
	// SIGINT.
	f, err := rawpty.Start(cmd)
	if err != nil {
		t.Fatalf("sol activate on %s: %v", n.Name, err)
	}
	c := &console{t: t, cmd: cmd, pty: f, done: make(chan struct{}), notify: make(chan struct{}, 1)}
	go c.read()
	t.Cleanup(c.close)
	c.expect(`SOL Session operational`, 15*time.Second)
	return c
}

func (c *console) read() {
	defer close(c.done)
	b := make([]byte, 4096)
	for {
		n, err := c.pty.Read(b)
		if n > 0 {
			c.mu.Lock()
			c.buf = append(c.buf, b[:n]...)
			c.mu.Unlock()
			select {
			case c.notify <- struct{}{}:
			default:
			}
		}
		if err != nil { // EIO once ipmitool exits
			return
		}
	}
}

// expect waits until pattern matches the unread console output (ANSI escape
// sequences removed) and consumes it up to the match. It fails the test on
// timeout.
func (c *console) expect(pattern string, timeout time.Duration) []string {
	c.t.Helper()
	m, err := c.tryExpect(pattern, timeout)
	if err != nil {
		c.t.Fatal(err)
	}
	return m
}

func (c *console) tryExpect(pattern string, timeout time.Duration) ([]string, error) {
	re := regexp.MustCompile(pattern)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		raw := c.buf[c.pos:]
		// Match on text without escape sequences, then consume the raw
		// bytes up to the same text position.
		text, offsets := stripANSI(raw)
		if loc := re.FindStringSubmatchIndex(text); loc != nil {
			c.pos += offsets[loc[1]]
			var groups []string
			for i := 0; i+1 < len(loc); i += 2 {
				if loc[i] >= 0 {
					groups = append(groups, text[loc[i]:loc[i+1]])
				} else {
					groups = append(groups, "")
				}
			}
			c.mu.Unlock()
			return groups, nil
		}
		c.mu.Unlock()
		select {
		case <-c.notify:
		case <-c.done:
			// Drain what arrived last, then give up.
			c.mu.Lock()
			text, _ := stripANSI(c.buf[c.pos:])
			c.mu.Unlock()
			if loc := re.FindStringIndex(text); loc != nil {
				continue
			}
			return nil, fmt.Errorf("console: ipmitool ended while waiting for %q; last output: %q", pattern, tail(text, 400))
		case <-deadline.C:
			c.mu.Lock()
			text, _ := stripANSI(c.buf[c.pos:])
			c.mu.Unlock()
			return nil, fmt.Errorf("console: no %q within %s; last output: %q", pattern, timeout, tail(text, 400))
		}
	}
}

// stripANSI removes escape sequences and CRs; offsets maps each index of the
// result (and its end) to the index in raw just after that byte.
func stripANSI(raw []byte) (string, []int) {
	var b strings.Builder
	offsets := []int{0}
	for i := 0; i < len(raw); {
		if loc := ansi.FindIndex(raw[i:]); loc != nil && loc[0] == 0 {
			i += loc[1]
			offsets[len(offsets)-1] = i
			continue
		}
		if raw[i] == '\r' {
			i++
			offsets[len(offsets)-1] = i
			continue
		}
		b.WriteByte(raw[i])
		i++
		offsets = append(offsets, i)
	}
	return b.String(), offsets
}

func TestStripANSI(t *testing.T) {
	raw := []byte("\x1bc\x1b[?7l\x1b[2Jtestos# \x1b[6nab\r\ncd")
	text, offsets := stripANSI(raw)
	if text != "testos# ab\ncd" {
		t.Fatalf("text %q", text)
	}
	if len(offsets) != len(text)+1 {
		t.Fatalf("%d offsets for %d bytes", len(offsets), len(text))
	}
	// The end of "testos# " maps past the ESC[6n that follows it.
	if got := string(raw[offsets[len("testos# ")]:]); got != "ab\r\ncd" {
		t.Errorf("after the prompt: %q", got)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// send types s at once.
func (c *console) send(s string) {
	c.t.Helper()
	if _, err := c.pty.Write([]byte(s)); err != nil {
		c.t.Fatalf("console: type %q: %v", s, err)
	}
}

// sendPaced types s one byte every d.
func (c *console) sendPaced(s string, d time.Duration) {
	c.t.Helper()
	for i := 0; i < len(s); i++ {
		c.send(s[i : i+1])
		time.Sleep(d)
	}
}

// sendEchoed types s one byte at a time, each after the previous one came
// back (echo pacing).
func (c *console) sendEchoed(s string, timeout time.Duration) {
	c.t.Helper()
	for i := 0; i < len(s); i++ {
		c.send(s[i : i+1])
		if s[i] >= ' ' {
			c.expect(regexp.QuoteMeta(s[i:i+1]), timeout)
		}
	}
}

// prompt waits for a shell prompt and lets busybox settle: ash sends a
// cursor position query (ESC[6n) after each prompt and may swallow a key
// typed while it waits for the answer.
func (c *console) prompt(p string, timeout time.Duration) {
	c.t.Helper()
	c.expect(regexp.QuoteMeta(p), timeout)
	time.Sleep(300 * time.Millisecond)
}

// loginTestOS logs in to the test OS as root once its login prompt was
// seen, and waits for its shell prompt.
func (c *console) loginTestOS() {
	c.t.Helper()
	time.Sleep(200 * time.Millisecond)
	c.send("root\r")
	c.expect(`Password: `, 30*time.Second)
	c.send("test\r")
	c.prompt("testos# ", time.Minute)
}

// run types a command and waits for its output up to the next prompt.
func (c *console) run(cmd, prompt string, timeout time.Duration) string {
	c.t.Helper()
	c.send(cmd + "\r")
	m := c.expect(`(?s)\n(.*?)`+regexp.QuoteMeta(prompt), timeout)
	time.Sleep(300 * time.Millisecond)
	return m[1]
}

// waitExit waits until ipmitool exits and returns everything it printed.
func (c *console) waitExit(timeout time.Duration) (string, error) {
	select {
	case <-c.done:
	case <-time.After(timeout):
		return "", fmt.Errorf("ipmitool still running after %s", timeout)
	}
	err := c.cmd.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	text, _ := stripANSI(c.buf)
	return text, err
}

func (c *console) close() {
	if c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Kill()
		<-c.done
		_ = c.cmd.Wait()
	}
	c.pty.Close()
}

// bootServer is a TFTP (tftpd-hpa) and HTTP (busybox httpd) server for a
// lab, serving a copy of the boot root with a pxelinux config that boots the
// master, and the test images. No labctl code is involved.
type bootServer struct {
	root, www string
	procs     []*exec.Cmd
}

func startBootServer(t testing.TB, lab *simlab.Lab, append string) *bootServer {
	t.Helper()
	for _, tool := range []string{"in.tftpd", "busybox"} {
		if _, err := lookTool(tool); err != nil {
			simlabtest.SkipOrFail(t, fmt.Errorf("%w: %s", simlab.ErrMissingTool, tool))
		}
	}
	dir := t.TempDir()
	b := &bootServer{root: filepath.Join(dir, "tftp"), www: filepath.Join(dir, "www")}
	// in.tftpd -s chroots at start: the root must be complete before it runs.
	if err := linkTree(lab.Artifacts.BootRoot, b.root); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(b.root, "pxelinux.cfg"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("DEFAULT master\nPROMPT 0\nTIMEOUT 0\nLABEL master\n  KERNEL %s\n  INITRD %s\n  APPEND %s\n",
		lab.Artifacts.Kernel, lab.Artifacts.Initrd, append)
	if err := os.WriteFile(filepath.Join(b.root, "pxelinux.cfg", "default"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := linkTree(filepath.Dir(lab.Artifacts.Images.Raw.Path), b.www); err != nil {
		t.Fatal(err)
	}
	tftpd, _ := lookTool("in.tftpd")
	b.start(t, tftpd, "-L", "-a", lab.BootServer.TFTPAddr, "-s", b.root)
	b.start(t, "busybox", "httpd", "-f", "-p", lab.BootServer.HTTPAddr, "-h", b.www)
	return b
}

func (b *bootServer) start(t testing.TB, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := os.Create(filepath.Join(filepath.Dir(b.root), filepath.Base(name)+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		out.Close()
	})
	b.procs = append(b.procs, cmd)
}

func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	p := "/usr/sbin/" + name
	if _, err := os.Stat(p); err != nil {
		return "", err
	}
	return p, nil
}

// linkTree recreates the files of src in dst as hard links (copies across
// file systems).
func linkTree(src, dst string) error {
	return filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if err := os.Link(p, target); err == nil {
			return nil
		}
		return simlab.CopyFile(p, target)
	})
}

// ipmi runs ipmitool against n and fails the test on error.
func ipmi(t testing.TB, n *simlab.Node, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := n.IPMITool(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// waitStatus polls the node's status until ok says yes.
func waitStatus(t testing.TB, n *simlab.Node, what string, timeout time.Duration, ok func(simlab.Status) bool) simlab.Status {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := n.Status(ctx)
		cancel()
		if err == nil && ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not %s within %s (status %+v, err %v)", n.Name, what, timeout, st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
