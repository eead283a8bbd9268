package sol_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl/netboot"
	"github.com/labctl/labctl/simlab"
	"github.com/labctl/labctl/simlab/simlabtest"
	"github.com/labctl/labctl/sol"
)

// TestLabSOL drives a simulated lab node's console through
// `ipmitool ... -E sol activate` in a pty: it watches the node boot its
// master over PXE, types through the lossy-console knob with echo pacing
// and checks that nothing was lost, and survives a SOL session killed at
// the BMC. One node, booted once, for all steps (TCG boots are slow).
func TestLabSOL(t *testing.T) {
	lab := simlabtest.StartLab(t, 1, simlab.Options{})
	node := lab.Nodes[0]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	startBootServer(t, ctx, lab, node)

	ipmi := append([]string{"ipmitool"}, node.IPMIToolArgs()...)
	dialer := &sol.CommandDialer{
		Argv:  append(append([]string{}, ipmi...), "sol", "activate"),
		Reset: append(append([]string{}, ipmi...), "sol", "deactivate"),
		Env:   []string{"IPMI_PASSWORD=" + node.BMC.Password},
		Ready: regexp.MustCompile(`SOL Session operational`),
		Name:  "bmc " + node.BMC.Addr() + " (ipmitool sol)",
		Log:   slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	}
	var tr transcriptBuffer
	s := openSession(t, dialer, sol.Options{Transcript: &tr, MinBackoff: 200 * time.Millisecond, MaxBackoff: 2 * time.Second, GiveUpAfter: time.Minute})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("transcript:\n%s", tail(tr.String(), 6000))
		}
	})
	w := claim(t, s, "TestLabSOL")

	// Power on into PXE; the console shows firmware, the boot loader and
	// the master's shell.
	start := time.Now()
	for _, args := range [][]string{{"chassis", "bootdev", "pxe"}, {"power", "on"}} {
		if _, err := node.IPMITool(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		_, _ = node.IPMITool(cctx, "power", "off")
	})
	expect(t, s, 5*time.Minute, `simlab master ready`)
	expect(t, s, time.Minute, `master# `)
	t.Logf("power on -> master prompt: %.1f s", time.Since(start).Seconds())
	// The output joined up: a word the firmware printed slowly spans two
	// records (the transcript writes a partial line after 200 ms).
	if boot := tr.joined(t, sol.Read); !strings.Contains(boot, "iPXE") && !strings.Contains(boot, "PXELINUX") && !strings.Contains(boot, "SeaBIOS") {
		t.Errorf("the transcript shows no firmware or boot loader output")
	}

	// Echo pacing through the lossy console loses nothing.
	t.Run("echo pacing on a lossy console", func(t *testing.T) {
		// More than 2 bytes un-echoed, or a byte less than 1 ms after the
		// previous one, is dropped; more than 16 bytes within 10 ms close the
		// session. Echo pacing types one character per echo round trip,
		// which on an idle machine can be under 1 ms: the minimum gap is a
		// rate limit that waiting for echoes cannot know about, so the
		// pacing is told it (Pacing.MinGap, which the dispatcher raises
		// after a loss), with room for jitter on the way.
		lossy := simlab.LossyConsole{MaxUnechoed: 2, MinGap: simlab.Duration(time.Millisecond),
			BurstBytes: 16, BurstWindow: simlab.Duration(10 * time.Millisecond)}
		if err := node.SetLossyConsole(ctx, lossy); err != nil {
			t.Fatal(err)
		}
		defer node.SetLossyConsole(context.Background(), simlab.LossyConsole{})
		before, err := node.Counters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		payload := "lossless-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKLMNOPQRSTUVWXYZ-0123456789"
		sum := sha256.Sum256([]byte(payload + "\n"))
		// A generous echo wait: this checks that nothing is lost, and a
		// busy test machine may take longer than a BMC to echo.
		rep, err := w.Type(ctx, "echo "+payload+" | sha256sum\r", sol.Pacing{Mode: sol.Echo, Delay: 100 * time.Millisecond, EchoTimeout: 10 * time.Second, MinGap: 2 * time.Millisecond})
		if err != nil {
			c, _ := node.Counters(ctx)
			t.Fatalf("type: %v (%v; counters %+v)", err, rep, c)
		}
		m := expect(t, s, time.Minute, `(?m)^([0-9a-f]{64})  -\n`)
		after, err := node.Counters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if m.Groups[1] != hex.EncodeToString(sum[:]) {
			t.Errorf("sha256 on the node %s, want %x: the line arrived damaged", m.Groups[1], sum)
		}
		if d := after.DroppedInput() - before.DroppedInput(); d != 0 || after.SOLKills != before.SOLKills {
			t.Errorf("lossy console dropped %d bytes, %d SOL kills", d, after.SOLKills-before.SOLKills)
		}
		if rep.EchoFallbacks != 0 {
			t.Errorf("%d characters did not echo", rep.EchoFallbacks)
		}
		t.Logf("lossy console %s: %v; node got %d input bytes", lossy, rep, after.InputBytes-before.InputBytes)
		expect(t, s, time.Minute, `master# `)

		if err := node.SetLossyConsole(ctx, simlab.LossyConsole{}); err != nil {
			t.Fatal(err)
		}
	})

	// The BMC ends the SOL session: the session marks the gap, reconnects,
	// and an Expect that was waiting gets its match.
	t.Run("SOL killed at the BMC", func(t *testing.T) {
		// Connected (no reconnect pending) before the kill.
		waitFor(t, "the session to be up", time.Minute, func() bool {
			return countEvents(t, &tr, "reconnected after") == countEvents(t, &tr, "session lost")
		})
		reconnects := countEvents(t, &tr, "reconnected after")
		done := make(chan error, 1)
		go func() {
			ectx, ecancel := context.WithTimeout(ctx, 2*time.Minute)
			defer ecancel()
			_, err := s.Expect(ectx, regexp.MustCompile(`after-kill-42\n`))
			done <- err
		}()
		if err := node.KillSOL(ctx); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the reconnect", time.Minute, func() bool {
			return countEvents(t, &tr, "reconnected after") > reconnects
		})
		typeText(t, w, "echo after-kill-$((6*7))\r", sol.Pacing{Mode: sol.Echo})
		if err := <-done; err != nil {
			t.Fatalf("expect across the kill: %v", err)
		}
		ev := strings.Join(tr.events(t), "\n")
		if !strings.Contains(ev, "session lost: SOL session closed by BMC") {
			t.Errorf("events:\n%s", ev)
		}
		for _, e := range tr.events(t) {
			if strings.HasPrefix(e, "session lost") || strings.HasPrefix(e, "reconnected") {
				t.Logf("event: %s", e)
			}
		}
	})

	// The same knob bites unpaced input: bytes are dropped and the burst
	// ends the session, which comes back. (Last: after a burst-triggered
	// kill simlab may lose the first byte typed after the reconnect.)
	t.Run("unpaced input on a lossy console", func(t *testing.T) {
		lossy := simlab.LossyConsole{MaxUnechoed: 2, MinGap: simlab.Duration(time.Millisecond),
			BurstBytes: 16, BurstWindow: simlab.Duration(10 * time.Millisecond)}
		if err := node.SetLossyConsole(ctx, lossy); err != nil {
			t.Fatal(err)
		}
		defer node.SetLossyConsole(context.Background(), simlab.LossyConsole{})
		after, err := node.Counters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		line := "echo unpaced-lossless-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKLMNOPQRSTUVWXYZ\r"
		reconnects := countEvents(t, &tr, "reconnected after")
		if _, err := w.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the burst to end the session and the reconnect", time.Minute, func() bool {
			return countEvents(t, &tr, "reconnected after") > reconnects
		})
		c, _ := node.Counters(ctx)
		t.Logf("unpaced: %d of %d bytes dropped, %d SOL kills", c.DroppedInput()-after.DroppedInput(),
			len(line), c.SOLKills-after.SOLKills)
		if c.DroppedInput() == after.DroppedInput() || c.SOLKills == after.SOLKills {
			t.Errorf("unpaced input: counters %+v, before %+v: want drops and a SOL kill", c, after)
		}
	})

	// The password is in no process's command line and not in the
	// transcript.
	t.Run("secret", func(t *testing.T) {
		pw := []byte(node.BMC.Password)
		if len(pw) < 6 {
			t.Skipf("password %d bytes: too short to search for", len(pw))
		}
		if bytes.Contains([]byte(tr.String()), pw) {
			t.Error("BMC password in the transcript")
		}
		cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range cmdlines {
			b, err := os.ReadFile(p)
			if err == nil && bytes.Contains(b, pw) {
				t.Errorf("BMC password in %s: %q", p, bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
			}
		}
	})
}

// countEvents counts the transcript's events that start with prefix.
func countEvents(t *testing.T, tr *transcriptBuffer, prefix string) int {
	n := 0
	for _, e := range tr.events(t) {
		if strings.HasPrefix(e, prefix) {
			n++
		}
	}
	return n
}

// startBootServer serves the lab's boot root with the node's pxelinux config
// pointing at the master, until the test ends.
func startBootServer(t *testing.T, ctx context.Context, lab *simlab.Lab, node *simlab.Node) {
	t.Helper()
	bs := lab.BootServer
	srv, err := netboot.New(netboot.Config{Root: bs.Root, TFTPAddr: bs.TFTPAddr, HTTPAddr: bs.HTTPAddr, HTTPURL: bs.HTTPURL},
		slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	mac, err := net.ParseMAC(node.MAC)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.SetNode(mac, net.ParseIP(node.IP), netboot.MasterEntry("simlab/vmlinuz", "simlab/master.gz", "console=ttyS0,115200 panic=10")); err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("boot server: %v", err)
		}
	})
}

// testWriter sends log output to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
