package simlab_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl/simlab"
	"github.com/labctl/labctl/simlab/simlabtest"
)

// The TestLab* tests drive real nodes (ipmi_sim + relay + QEMU) with
// ipmitool, tftpd-hpa and busybox httpd only: no labctl code. Run them alone
// with `go test ./simlab -run Lab -v`. A TCG boot costs 10-20 s, so one test
// checks several things per boot.

// TestLabPowerAndBootDevice: power status/on/off/cycle/reset and the boot
// device, read back with `chassis bootparam get 5`.
func TestLabPowerAndBootDevice(t *testing.T) {
	lab := simlabtest.StartLab(t, 1, simlab.Options{})
	n := lab.Nodes[0]

	if out := ipmi(t, n, "power", "status"); !strings.Contains(out, "Chassis Power is off") {
		t.Fatalf("fresh node: power status = %q, want off", out)
	}
	// ipmi_sim reports every boot flag as "invalid" but its boot device
	// selector is what the hook recorded: that is what reads back reliably.
	for _, c := range []struct{ dev, selector, hook string }{
		{"pxe", "Force PXE", "pxe"},
		{"disk", "Force Boot from default Hard-Drive", "default"},
		{"pxe", "Force PXE", "pxe"},
	} {
		ipmi(t, n, "chassis", "bootdev", c.dev)
		out := ipmi(t, n, "chassis", "bootparam", "get", "5")
		if !regexp.MustCompile(`Boot Device Selector : ` + regexp.QuoteMeta(c.selector) + `\n`).MatchString(out) {
			t.Errorf("bootdev %s: bootparam get 5 says:\n%s\nwant selector %q", c.dev, out, c.selector)
		}
		if st := status(t, n); st.BootDevice != c.hook {
			t.Errorf("bootdev %s: node boot device %q, want %q", c.dev, st.BootDevice, c.hook)
		}
	}

	// Power on: the hook answers at once (a slow hook makes ipmitool
	// retransmit and ipmi_sim act twice), QEMU runs, exactly one power-on.
	start := time.Now()
	ipmi(t, n, "power", "on")
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("ipmitool power on took %s", d)
	}
	st := waitStatus(t, n, "powered on", 5*time.Second, func(s simlab.Status) bool { return s.Power && s.QEMUPid > 0 })
	if !simlab.ProcessAlive(st.QEMUPid) {
		t.Fatalf("QEMU pid %d not running after power on", st.QEMUPid)
	}
	if out := ipmi(t, n, "power", "status"); !strings.Contains(out, "Chassis Power is on") {
		t.Errorf("after power on: %q", out)
	}
	ipmi(t, n, "power", "on") // already on: no second QEMU
	if st2 := status(t, n); st2.Boots != 1 || st2.QEMUPid != st.QEMUPid {
		t.Errorf("power on while on: boots %d pid %d, want 1 and %d", st2.Boots, st2.QEMUPid, st.QEMUPid)
	}
	// The console is connected from power-on: the first byte arrives fast.
	st = waitStatus(t, n, "printing", 10*time.Second, func(s simlab.Status) bool { return s.FirstOutput > 0 })
	t.Logf("power on -> first console byte at the relay: %s", st.FirstOutput)

	// Power cycle: off, then (ipmi_sim polls every second) on again.
	ipmi(t, n, "power", "cycle")
	st = waitStatus(t, n, "cycled", 10*time.Second, func(s simlab.Status) bool { return s.Boots == 2 && s.Power })
	if st.QEMUPid == 0 || !simlab.ProcessAlive(st.QEMUPid) {
		t.Errorf("after power cycle: QEMU pid %d not running", st.QEMUPid)
	}
	oldPid := st.QEMUPid
	ipmi(t, n, "power", "reset")
	st = waitStatus(t, n, "reset", 10*time.Second, func(s simlab.Status) bool { return s.Boots == 3 && s.Power })
	if simlab.ProcessAlive(oldPid) {
		t.Errorf("power reset left the old QEMU (pid %d) running", oldPid)
	}
	if powerOns := simlabtest.PowerOns(st); powerOns != 3 {
		t.Errorf("chassis log has %d power-ons for on+cycle+reset, want 3 (an action ran twice?): %+v", powerOns, st.Chassis)
	}

	ipmi(t, n, "power", "off")
	waitStatus(t, n, "off", 5*time.Second, func(s simlab.Status) bool { return !s.Power })
	if simlab.ProcessAlive(st.QEMUPid) {
		t.Errorf("power off left QEMU pid %d running", st.QEMUPid)
	}
	if out := ipmi(t, n, "power", "status"); !strings.Contains(out, "Chassis Power is off") {
		t.Errorf("after power off: %q", out)
	}
}

// TestLabDeployAndBoot is the dispatcher's flow by hand: SOL console, PXE
// boot to the master, wget | gunzip | dd of the test image with its sha256
// checked on the node, then bootdev disk + power cycle to the test OS login
// and a shell. It logs the time of each phase.
func TestLabDeployAndBoot(t *testing.T) {
	lab := simlabtest.StartLab(t, 1, simlab.Options{})
	n := lab.Nodes[0]
	startBootServer(t, lab, "console=ttyS0,115200 panic=10 quiet")
	im := lab.Artifacts.Images
	url := lab.BootServer.HTTPURL

	c := openConsole(t, n)
	ipmi(t, n, "chassis", "bootdev", "pxe")
	powerOn := time.Now()
	ipmi(t, n, "power", "on")
	c.expect(`SeaBIOS`, 30*time.Second)
	firstByte := time.Since(powerOn)
	c.expect(`PXELINUX`, 2*time.Minute)
	c.prompt("master# ", 3*time.Minute)
	toMaster := time.Since(powerOn)

	// The console accepts input.
	if out := c.run("echo typed-$((6*7))", "master# ", 30*time.Second); !strings.Contains(out, "typed-42") {
		t.Fatalf("master shell did not run typed input: %q", out)
	}
	// Every decompressor the dispatcher may use is there and works. Hashing
	// all 64 MiB costs ~10 s under TCG: compare the first MiB only.
	head := headSHA256(t, im.Raw.Path, 1<<20)
	for _, x := range []struct{ tool, file string }{{"xzcat", "disk.img.xz"}, {"zstdcat", "disk.img.zst"}} {
		out := c.run(fmt.Sprintf("wget -q -O - %s/%s | %s | head -c %d | sha256sum", url, x.file, x.tool, 1<<20), "master# ", 2*time.Minute)
		if !strings.Contains(out, head) {
			t.Errorf("%s of %s on the master: %q, want sha256 %s", x.tool, x.file, out, head)
		}
	}

	// Write the image: wget | gunzip | dd, exit status through a marker.
	writeStart := time.Now()
	out := c.run(fmt.Sprintf("set -o pipefail; wget -q -O - %s/disk.img.gz | gunzip | dd of=/dev/vda bs=4M 2>/dev/null; echo WRITE-RC=$?", url), "master# ", 3*time.Minute)
	writeTime := time.Since(writeStart)
	if !strings.Contains(out, "WRITE-RC=0") {
		t.Fatalf("wget | gunzip | dd failed: %q", out)
	}
	out = c.run(fmt.Sprintf("sync; head -c %d /dev/vda | sha256sum", im.RawSize), "master# ", 2*time.Minute)
	if !strings.Contains(out, im.RawSHA256) {
		t.Fatalf("sha256 of the written disk on the node: %q, want %s", out, im.RawSHA256)
	}

	// Boot the written disk.
	ipmi(t, n, "chassis", "bootdev", "disk")
	cycle := time.Now()
	ipmi(t, n, "power", "cycle")
	c.expect(`SYSLINUX`, 2*time.Minute)
	c.expect(`booted from disk`, 2*time.Minute)
	c.expect(`login: `, 2*time.Minute)
	toLogin := time.Since(cycle)
	c.loginTestOS()
	toShell := time.Since(cycle)
	if out := c.run("echo disk-$((40+2)) $(cat /proc/cmdline)", "testos# ", 30*time.Second); !strings.Contains(out, "disk-42") {
		t.Errorf("test OS shell did not run typed input: %q", out)
	}
	st := status(t, n)
	if d := st.Counters.DroppedInput(); d != 0 {
		t.Errorf("%d input bytes dropped with no fault knob set", d)
	}
	t.Logf("TIMING power on -> first console byte (SOL client): %.2fs (relay: %s)", firstByte.Seconds(), st.FirstOutput)
	t.Logf("TIMING power on (PXE) -> master prompt: %.2fs", toMaster.Seconds())
	t.Logf("TIMING wget | gunzip | dd of %d MiB: %.2fs", im.RawSize>>20, writeTime.Seconds())
	t.Logf("TIMING power cycle (disk) -> login prompt: %.2fs, -> shell: %.2fs", toLogin.Seconds(), toShell.Seconds())
}

// TestLabConsoleFaults exercises the lossy console knobs on a node booted
// from a preloaded disk: the drop counters say exactly which check dropped
// what, and paced typing that respects a knob loses nothing.
func TestLabConsoleFaults(t *testing.T) {
	lab := simlabtest.StartLab(t, 1, simlab.Options{DiskImage: simlabtest.Artifacts(t).Images.Raw.Path})
	n := lab.Nodes[0]
	ctx := context.Background()
	c := openConsole(t, n)
	ipmi(t, n, "power", "on")
	c.expect(`login: `, 3*time.Minute)
	c.loginTestOS()

	// Baseline: a fast typist loses nothing with the knobs off.
	if out := c.run("echo base-0123456789abcdefghij", "testos# ", 30*time.Second); !strings.Contains(out, "base-0123456789abcdefghij") {
		t.Fatalf("baseline: %q", out)
	}
	base := counters(t, n)
	if base.DroppedInput() != 0 {
		t.Fatalf("baseline dropped %d bytes", base.DroppedInput())
	}
	setLossy := func(l simlab.LossyConsole) {
		t.Helper()
		if err := n.SetLossyConsole(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	// clearLine turns the knobs off and cancels whatever survived of the
	// current line (Ctrl-C gives a fresh prompt).
	clearLine := func() {
		t.Helper()
		setLossy(simlab.LossyConsole{})
		c.send("\x03")
		c.expect(`\^C`, 30*time.Second)
		c.prompt("testos# ", 30*time.Second)
	}

	// Min gap: a burst loses bytes; typing slower than the gap loses none.
	// The margin is wide (400 ms typing, 20 ms gap): ipmi_sim passes SOL
	// input on when it gets to it, so on a loaded machine bytes typed well
	// apart can arrive together, and the second would be dropped.
	setLossy(simlab.LossyConsole{MinGap: simlab.Duration(20 * time.Millisecond)})
	before := counters(t, n)
	c.send("echo too-fast-for-the-console")
	waitCounters(t, n, "gap drops", func(k simlab.FaultCounters) bool { return k.DroppedGap > before.DroppedGap })
	clearLine()
	setLossy(simlab.LossyConsole{MinGap: simlab.Duration(20 * time.Millisecond)})
	before = counters(t, n)
	c.sendPaced("echo paced-ok\r", 400*time.Millisecond)
	c.expect(`\npaced-ok\n`, 30*time.Second)
	c.prompt("testos# ", 30*time.Second)
	if after := counters(t, n); after.DroppedGap != before.DroppedGap {
		t.Errorf("min gap: paced typing (400 ms > 20 ms) lost %d bytes", after.DroppedGap-before.DroppedGap)
	}
	clearLine()

	// Max unechoed: typing ahead of the echo loses bytes; echo pacing none.
	setLossy(simlab.LossyConsole{MaxUnechoed: 2})
	before = counters(t, n)
	c.send("echo nobody-waits-for-the-echo-here")
	waitCounters(t, n, "unechoed drops", func(k simlab.FaultCounters) bool { return k.DroppedUnechoed > before.DroppedUnechoed })
	clearLine()
	setLossy(simlab.LossyConsole{MaxUnechoed: 2})
	before = counters(t, n)
	c.sendEchoed("echo echo-paced-ok", 10*time.Second)
	c.send("\r")
	c.expect(`\necho-paced-ok\n`, 30*time.Second)
	c.prompt("testos# ", 30*time.Second)
	if after := counters(t, n); after.DroppedUnechoed != before.DroppedUnechoed {
		t.Errorf("max unechoed: echo-paced typing lost %d bytes", after.DroppedUnechoed-before.DroppedUnechoed)
	}
	clearLine()

	// Burst: the BMC closes the SOL session, as weak BMCs do.
	setLossy(simlab.LossyConsole{BurstBytes: 16, BurstWindow: simlab.Duration(200 * time.Millisecond)})
	before = counters(t, n)
	c.send("echo a-burst-longer-than-sixteen-bytes")
	out, _ := c.waitExit(20 * time.Second)
	if !strings.Contains(out, "SOL session closed by BMC") {
		t.Errorf("burst: want ipmitool to say \"SOL session closed by BMC\", output ends %q", tail(out, 300))
	}
	// The relay counts the kill once every client was told (ipmitool may
	// have exited before): wait for it.
	after := waitCounters(t, n, "the burst's SOL kill counted", func(k simlab.FaultCounters) bool {
		return k.SOLKills > before.SOLKills && k.DroppedBurst > before.DroppedBurst
	})
	if after.SOLKills != before.SOLKills+1 {
		t.Errorf("burst: kills %d->%d, burst drops %d->%d", before.SOLKills, after.SOLKills, before.DroppedBurst, after.DroppedBurst)
	}
	// The BMC deactivated the payload: a new session opens at once, and
	// the machine's shell is still there.
	setLossy(simlab.LossyConsole{})
	c = openConsole(t, n)
	c.send("\x03")
	c.prompt("testos# ", 30*time.Second)
	if out := c.run("echo after-burst", "testos# ", 30*time.Second); !strings.Contains(out, "after-burst") {
		t.Errorf("after reconnect: %q", out)
	}
}

// TestLabKillSOL ends a SOL session from the BMC side: ipmitool must say the
// BMC closed it, and a new session must open without `sol deactivate`.
func TestLabKillSOL(t *testing.T) {
	lab := simlabtest.StartLab(t, 1, simlab.Options{})
	n := lab.Nodes[0]
	c := openConsole(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.KillSOL(ctx); err != nil {
		t.Fatal(err)
	}
	out, _ := c.waitExit(10 * time.Second)
	if !strings.Contains(out, "SOL session closed by BMC") {
		t.Fatalf("ipmitool after KillSOL: want \"SOL session closed by BMC\", got %q", tail(out, 300))
	}
	if k := counters(t, n); k.SOLKills != 1 {
		t.Errorf("SOLKills = %d, want 1", k.SOLKills)
	}
	c2 := openConsole(t, n) // fails the test if the payload were still active
	c2.close()
}

// TestLabSilentBMC: a silenced BMC answers nothing until the silence ends.
func TestLabSilentBMC(t *testing.T) {
	lab := simlabtest.StartLab(t, 1, simlab.Options{})
	n := lab.Nodes[0]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ipmi(t, n, "power", "status")

	if err := n.SilenceBMC(ctx, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if out, err := n.IPMITool(ctx, "-N", "1", "-R", "1", "power", "status"); err == nil {
		t.Fatalf("silent BMC answered: %q", out)
	}
	if st := status(t, n); st.SilentUntil.IsZero() || st.Counters.SilencedPackets == 0 {
		t.Errorf("silence not in the status: until %v, dropped %d", st.SilentUntil, st.Counters.SilencedPackets)
	}
	time.Sleep(time.Until(start.Add(3200 * time.Millisecond)))
	ipmi(t, n, "power", "status")

	// Ending a silence early.
	if err := n.SilenceBMC(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := n.SilenceBMC(ctx, 0); err != nil {
		t.Fatal(err)
	}
	ipmi(t, n, "power", "status")
}

// headSHA256 is the sha256 of the first n bytes of a file.
func headSHA256(t testing.TB, path string, n int64) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, f, n); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func status(t testing.TB, n *simlab.Node) simlab.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := n.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func counters(t testing.TB, n *simlab.Node) simlab.FaultCounters {
	t.Helper()
	return status(t, n).Counters
}

func waitCounters(t testing.TB, n *simlab.Node, what string, ok func(simlab.FaultCounters) bool) simlab.FaultCounters {
	t.Helper()
	return waitStatus(t, n, what, 10*time.Second, func(s simlab.Status) bool { return ok(s.Counters) }).Counters
}
