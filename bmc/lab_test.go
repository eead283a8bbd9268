package bmc_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labctl/labctl/bmc"
	"github.com/labctl/labctl/internal/testutil"
	"github.com/labctl/labctl/simlab"
	"github.com/labctl/labctl/simlab/simlabtest"
	"github.com/labctl/labctl/sol"
)

// The TestLab* tests drive a simulated lab node (ipmi_sim + console relay +
// QEMU) with this package only. Run them alone with
// `go test ./bmc -run Lab -v`. A TCG boot costs 10-20 s, so one test checks
// several things per boot. The node boots the test OS from a preloaded disk.

// TestLabBMC: power on/off/cycle/reset/status read back against ipmi_sim,
// bootdev pxe/disk as the node records it, a SOL stream that sees the node
// boot and takes input, a stream taken over by a second client (stale
// payload), a SOL session killed at the BMC, and a silent BMC.
func TestLabBMC(t *testing.T) {
	lab := simlabtest.StartLab(t, 1, simlab.Options{DiskImage: simlabtest.Artifacts(t).Images.Raw.Path})
	node := lab.Nodes[0]
	logs := &testutil.SyncBuffer{}
	c := bmc.New(nodeConfig(node), slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if strings.Contains(logs.String(), node.BMC.Password) {
			t.Errorf("the BMC password is in the log")
		}
		if t.Failed() {
			t.Logf("bmc log:\n%s", logs)
		}
	})
	timed := func(what string, f func(context.Context) error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		start := time.Now()
		if err := f(ctx); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		t.Logf("TIMING %s: %s", what, time.Since(start).Round(time.Millisecond))
	}

	// Status and boot device, node off.
	var on bool
	timed("power status (first command: connect)", func(ctx context.Context) error {
		var err error
		on, err = c.PowerState(ctx)
		return err
	})
	if on {
		t.Fatal("fresh node reads as on")
	}
	for _, bd := range []struct {
		dev  bmc.BootDevice
		hook string
	}{{bmc.BootPXE, "pxe"}, {bmc.BootDisk, "default"}} {
		timed("bootdev "+bd.dev.String(), func(ctx context.Context) error {
			return c.SetBootDevice(ctx, bd.dev, bmc.BootOptions{})
		})
		if st := status(t, node); st.BootDevice != bd.hook {
			t.Errorf("bootdev %s: node records %q, want %q", bd.dev, st.BootDevice, bd.hook)
		}
	}
	if !strings.Contains(logs.String(), "reads the boot flags back as invalid") {
		t.Error("no debug line about ipmi_sim's invalid boot flags")
	}
	if dev, _, err := c.BootDevice(ctxFor(t, 10*time.Second)); err != nil || dev != bmc.BootNone {
		t.Errorf("BootDevice = %s, %v; ipmi_sim reports the flags invalid, want none", dev, err)
	}

	// A console before power-on sees the whole boot and takes input.
	con := openConsole(t, c)
	timed("power on", func(ctx context.Context) error { return c.Power(ctx, bmc.PowerOn) })
	if st := status(t, node); !st.Power || st.Boots != 1 {
		t.Fatalf("after power on: power %v, boots %d", st.Power, st.Boots)
	}
	con.expect(`SeaBIOS`, time.Minute)
	con.expect(`login: `, 3*time.Minute)
	con.login()
	if out := con.run("echo native-$((6*7))", "testos# "); !strings.Contains(out, "native-42") {
		t.Errorf("typed command: %q", out)
	}

	// ipmi_sim vouches for the stream: it answered its SOL packets lately,
	// and, asked, it names the stream's session as the payload's.
	timed("sol check (answered lately)", func(context.Context) error { return con.check() })
	bmc.SetSOLVouch(c, 0)
	timed("sol check (asking)", func(context.Context) error { return con.check() })

	// Cycle and reset restart the machine (the relay counts QEMU starts);
	// the console stays up across them.
	timed("power cycle", func(ctx context.Context) error { return c.Power(ctx, bmc.PowerCycle) })
	if st := status(t, node); !st.Power || st.Boots != 2 {
		t.Errorf("after power cycle: power %v, boots %d, want on and 2", st.Power, st.Boots)
	}
	con.expect(`SeaBIOS`, time.Minute)
	timed("power reset", func(ctx context.Context) error { return c.Power(ctx, bmc.PowerReset) })
	st := waitStatus(t, node, "reset", 10*time.Second, func(s simlab.Status) bool { return s.Boots >= 3 && s.Power })
	con.expect(`login: `, 3*time.Minute)
	// A reset whose answer came too late is sent again (a lost request
	// must not leave the node unreset), and ipmi_sim then resets twice:
	// allowed only when the log shows that retry.
	resent := strings.Contains(logs.String(), `op="power reset" step="chassis control hard reset"`)
	if powerOns := simlabtest.PowerOns(st); powerOns != 3 && !(resent && powerOns == 4) {
		t.Errorf("chassis log has %d power-ons for on+cycle+reset, want 3 (an action ran twice?): %+v", powerOns, st.Chassis)
	}

	// A second client takes the console over: its payload activation finds
	// the first one's active ("stale" to it), deactivates it and retries.
	c2 := bmc.New(nodeConfig(node), slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	defer c2.Close()
	bmc.SetSOLVouch(c2, 0)
	start := time.Now()
	con2 := openConsole(t, c2)
	t.Logf("TIMING sol open over an active payload: %s", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(logs.String(), "already active on another session") {
		t.Error("no log line about the payload already active")
	}
	err := con.waitEnd(15 * time.Second)
	t.Logf("first stream after the take-over: %v", err)
	if !errors.Is(err, sol.ErrClosedByBMC) {
		t.Errorf("first stream: %v, want sol.ErrClosedByBMC", err)
	}
	con2.send("\r")
	con2.expect(`login: `, 30*time.Second)
	if err := con.check(); err == nil {
		t.Error("the stream whose payload another client took passes its check")
	}
	if err := con2.check(); err != nil {
		t.Errorf("the stream that took the payload fails its check: %v", err)
	}

	// A SOL session killed at the BMC ends the stream with sol.ErrClosedByBMC; a
	// new stream opens at once.
	if err := node.KillSOL(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	err = con2.waitEnd(15 * time.Second)
	t.Logf("TIMING BMC-side SOL kill -> stream end: %s (%v)", time.Since(start).Round(time.Millisecond), err)
	if !errors.Is(err, sol.ErrClosedByBMC) || !strings.Contains(err.Error(), node.BMC.Addr()) {
		t.Errorf("after KillSOL: %v, want sol.ErrClosedByBMC naming the BMC", err)
	}
	con3 := openConsole(t, c2)
	con3.send("\r")
	con3.expect(`login: `, 30*time.Second)
	if err := con3.check(); err != nil {
		t.Errorf("a new stream after the kill fails its check: %v", err)
	}

	timed("power off", func(ctx context.Context) error { return c.Power(ctx, bmc.PowerOff) })
	if st := status(t, node); st.Power {
		t.Error("node still on after power off")
	}

	// A silent BMC: the error names it, the operation and the tries, and
	// comes within the retries (4 x 1s + backoff).
	if err := node.SilenceBMC(ctxFor(t, 10*time.Second), time.Minute); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	_, err = c.PowerState(ctxFor(t, 30*time.Second))
	took := time.Since(start)
	t.Logf("silent BMC after %s: %v", took.Round(time.Millisecond), err)
	want := "bmc " + node.BMC.Addr() + ": power status: no answer after 4 tries in "
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("silent BMC: %v, want prefix %q", err, want)
	}
	if took > 8*time.Second {
		t.Errorf("silent BMC: gave up after %s", took)
	}
	start = time.Now()
	_, err = c.PowerState(ctxFor(t, 2*time.Second))
	// Cut short by the deadline, not by the tries running out (at least
	// their timeouts: a bound the timers guarantee).
	if took := time.Since(start); !errors.Is(err, context.DeadlineExceeded) || took >= time.Duration(bmc.DefaultRetries+1)*bmc.DefaultTimeout {
		t.Errorf("silent BMC, 2s deadline: %v after %s", err, took)
	}
	// A silent BMC vouches for nothing: the open stream fails its check.
	start = time.Now()
	err = con3.check()
	t.Logf("TIMING sol check, silent BMC: %s (%v)", time.Since(start).Round(time.Millisecond), err)
	if err == nil {
		t.Error("a stream whose BMC is silent passes its check")
	}
	if err := node.SilenceBMC(ctxFor(t, 10*time.Second), 0); err != nil {
		t.Fatal(err)
	}
	timed("power status after the silence (reconnect)", func(ctx context.Context) error {
		on, err := c.PowerState(ctx)
		if err == nil && on {
			err = errors.New("reads on")
		}
		return err
	})
}

// TestLabCipherNegotiation measures what cipher suite negotiation (suite 0)
// costs against ipmi_sim, which does not answer Get Channel Cipher Suites in
// RMCP+ framing and has no SHA-256 suites.
func TestLabCipherNegotiation(t *testing.T) {
	lab := simlabtest.StartLab(t, 1, simlab.Options{})
	node := lab.Nodes[0]
	for _, suite := range []int{3, 0} {
		cfg := nodeConfig(node)
		cfg.CipherSuite = suite
		c := bmc.New(cfg, nil)
		start := time.Now()
		_, err := c.PowerState(ctxFor(t, 30*time.Second))
		first := time.Since(start)
		start = time.Now()
		_, err2 := c.PowerState(ctxFor(t, 30*time.Second))
		next := time.Since(start)
		c.Close()
		if err != nil || err2 != nil {
			t.Fatalf("cipher suite %d: %v, %v", suite, err, err2)
		}
		t.Logf("TIMING cipher suite %d: first command (connect) %s, next %s",
			suite, first.Round(time.Millisecond), next.Round(time.Millisecond))
		if suite == 3 && first > time.Second {
			t.Errorf("suite 3: connect took %s", first)
		}
	}
}

func nodeConfig(n *simlab.Node) bmc.Config {
	return bmc.Config{
		Host:        n.BMC.Host,
		Port:        n.BMC.Port,
		User:        n.BMC.User,
		Password:    n.BMC.Password,
		CipherSuite: n.BMC.CipherSuite,
	}
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func status(t *testing.T, n *simlab.Node) simlab.Status {
	t.Helper()
	st, err := n.Status(ctxFor(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func waitStatus(t *testing.T, n *simlab.Node, what string, d time.Duration, ok func(simlab.Status) bool) simlab.Status {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		st := status(t, n)
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("node not %s after %s: %+v", what, d, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// console is a native SOL stream with expect and send.
type console struct {
	t  *testing.T
	rw io.ReadWriteCloser

	mu     sync.Mutex
	buf    []byte
	pos    int
	err    error // why reading stopped
	notify chan struct{}
	done   chan struct{}
}

var ansi = regexp.MustCompile(`\x1b(\[[0-9;?]*[ -/]*[@-~]|[@-Z\\-_])`)

func openConsole(t *testing.T, c *bmc.Client) *console {
	t.Helper()
	rw, err := c.OpenSOL(ctxFor(t, 15*time.Second))
	if err != nil {
		t.Fatalf("OpenSOL: %v", err)
	}
	con := &console{t: t, rw: rw, notify: make(chan struct{}, 1), done: make(chan struct{})}
	go con.read()
	t.Cleanup(func() {
		_ = rw.Close()
		<-con.done
		if t.Failed() {
			con.mu.Lock()
			t.Logf("console (tail): %q", tail(string(con.buf), 1500))
			con.mu.Unlock()
		}
	})
	return con
}

// check asks the BMC whether the stream still has the SOL payload
// (what the console broker asks before keeping a session for a job).
func (c *console) check() error {
	c.t.Helper()
	checker, ok := c.rw.(interface{ Check(context.Context) error })
	if !ok {
		c.t.Fatalf("the SOL stream (%T) has no Check", c.rw)
	}
	return checker.Check(ctxFor(c.t, 10*time.Second))
}

func (c *console) read() {
	defer close(c.done)
	b := make([]byte, 4096)
	for {
		n, err := c.rw.Read(b)
		c.mu.Lock()
		c.buf = append(c.buf, b[:n]...)
		if err != nil {
			c.err = err
		}
		c.mu.Unlock()
		select {
		case c.notify <- struct{}{}:
		default:
		}
		if err != nil {
			return
		}
	}
}

// expect waits until pattern matches the unread output (ANSI sequences and
// CRs removed) and consumes it up to the match.
func (c *console) expect(pattern string, d time.Duration) string {
	c.t.Helper()
	re := regexp.MustCompile(pattern)
	deadline := time.After(d)
	for {
		c.mu.Lock()
		unread := string(c.buf[c.pos:])
		err := c.err
		clean := strings.ReplaceAll(ansi.ReplaceAllString(unread, ""), "\r", "")
		if loc := re.FindStringIndex(clean); loc != nil {
			// Consume the raw output up to the match's end: find the cleaned
			// prefix's length in raw bytes by re-cleaning growing prefixes.
			c.pos += rawOffset(unread, loc[1])
			c.mu.Unlock()
			return clean[:loc[1]]
		}
		c.mu.Unlock()
		if err != nil {
			c.t.Fatalf("console ended before %q: %v; unread %q", pattern, err, tail(clean, 500))
		}
		select {
		case <-c.notify:
		case <-deadline:
			c.t.Fatalf("no %q on the console within %s; unread %q", pattern, d, tail(clean, 500))
		}
	}
}

// rawOffset is the length of the shortest prefix of raw whose cleaned form
// has n bytes.
func rawOffset(raw string, n int) int {
	for i := 0; i <= len(raw); i++ {
		if len(strings.ReplaceAll(ansi.ReplaceAllString(raw[:i], ""), "\r", "")) >= n {
			return i
		}
	}
	return len(raw)
}

func (c *console) send(s string) {
	c.t.Helper()
	if _, err := c.rw.Write([]byte(s)); err != nil {
		c.t.Fatalf("typing %q: %v", s, err)
	}
}

// run types a command and returns the output up to the next prompt.
func (c *console) run(cmd, prompt string) string {
	c.t.Helper()
	time.Sleep(300 * time.Millisecond) // busybox asks for the cursor position after a prompt
	c.send(cmd + "\r")
	return c.expect(regexp.QuoteMeta(prompt), time.Minute)
}

func (c *console) login() {
	c.t.Helper()
	time.Sleep(300 * time.Millisecond)
	c.send("root\r")
	c.expect(`Password: `, 30*time.Second)
	c.send("test\r")
	c.expect(`testos# `, time.Minute)
}

// waitEnd waits for the stream to end and returns why.
func (c *console) waitEnd(d time.Duration) error {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(d):
		c.t.Fatalf("console still open after %s", d)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
