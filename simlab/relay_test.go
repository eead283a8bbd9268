package simlab_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/labctl/labctl/simlab"
	"github.com/labctl/labctl/simlab/simlabtest"
)

// TestLabRelayEchoMachine runs a node's relay in-process (so -race sees it)
// with the real ipmi_sim and a fake machine instead of QEMU: a shell that
// echoes its console back. It checks the console path end to end through
// ipmitool: power on starts the machine, typed bytes come back, the lossy
// console drops and counts, power off stops the machine.
func TestLabRelayEchoMachine(t *testing.T) {
	tools, err := simlab.FindTools()
	if err != nil {
		simlabtest.SkipOrFail(t, err)
	}
	pool, err := simlab.DefaultPool()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	slots, err := pool.Acquire(ctx, 1, func(s string) { t.Log(s) })
	if err != nil {
		t.Fatal(err)
	}
	defer simlab.ReleaseAll(slots)
	dir := t.TempDir()
	fakeQEMU := filepath.Join(dir, "fake-qemu")
	// The console is fd 3: echo everything typed, like a terminal would.
	if err := os.WriteFile(fakeQEMU, []byte("#!/bin/sh\nexec cat <&3 >&3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(dir, "bmc.password")
	if err := os.WriteFile(pw, []byte("relaytest\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := simlabtest.SimlabBinary(t) // the chassis hook
	s := slots[0]
	cfg := simlab.NodeConfig{
		Name: "echo1", Slot: s.N, Ports: s.Ports, Dir: dir, ControlSocket: pool.ControlSocket(s.N),
		MAC: simlab.MACForSlot(s.N), BMCUser: "admin", PasswordFile: pw, Accel: "tcg", Disk: filepath.Join(dir, "disk.img"),
		BootFile: "tftp://10.0.2.2:1/none", Simlab: bin, QEMU: fakeQEMU, IPMISim: tools.IPMISim, IPMITool: tools.IPMITool,
	}
	if err := simlab.WriteBMCConfig(cfg, "relaytest"); err != nil {
		t.Fatal(err)
	}
	r, err := simlab.NewRelay(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- r.Serve(rctx) }()
	defer func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("relay: %v", err)
		}
	}()
	n := simlab.WithControl(simlab.Node{Name: cfg.Name, Dir: dir,
		BMC: simlab.BMC{Host: "127.0.0.1", Port: s.Ports.BMC, User: "admin", Password: "relaytest", CipherSuite: 3}}, cfg.ControlSocket)
	waitStatus(t, n, "ready", 15*time.Second, func(s simlab.Status) bool { return s.Ready })

	c := openConsole(t, n)
	ipmi(t, n, "power", "on")
	waitStatus(t, n, "on", 5*time.Second, func(s simlab.Status) bool { return s.Power })
	c.send("hello-echo\r")
	c.expect(`hello-echo`, 10*time.Second)

	if err := n.SetLossyConsole(ctx, simlab.LossyConsole{MinGap: simlab.Duration(50 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	c.send("0123456789")
	k := waitCounters(t, n, "gap drops", func(k simlab.FaultCounters) bool { return k.DroppedGap > 0 })
	if k.DroppedGap > 9 {
		t.Errorf("dropped %d of 10 bytes typed at once; the first is always accepted", k.DroppedGap)
	}
	if err := n.SetLossyConsole(ctx, simlab.LossyConsole{}); err != nil {
		t.Fatal(err)
	}
	c.send("after\r")
	c.expect(`after`, 10*time.Second)
	if st := status(t, n); st.Counters.InputBytes == 0 || st.Counters.OutputBytes < st.Counters.InputBytes {
		t.Errorf("counters %+v: echoed output should match input", st.Counters)
	}

	// The machine stops by itself (a crash): the BMC says off, and power on
	// starts it again.
	st := status(t, n)
	if err := syscall.Kill(st.QEMUPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st = waitStatus(t, n, "off after the crash", 5*time.Second, func(s simlab.Status) bool { return !s.Power })
	if last := st.Chassis[len(st.Chassis)-1].Action; !strings.HasPrefix(last, "machine stopped by itself") {
		t.Errorf("after the crash, last chassis event %q", last)
	}
	if out := ipmi(t, n, "power", "status"); !strings.Contains(out, "off") {
		t.Errorf("after the crash: %q", out)
	}
	ipmi(t, n, "power", "on")
	waitStatus(t, n, "on again", 5*time.Second, func(s simlab.Status) bool { return s.Power && s.Boots == 2 })

	ipmi(t, n, "power", "off")
	st = waitStatus(t, n, "off", 5*time.Second, func(s simlab.Status) bool { return !s.Power })
	if !strings.HasPrefix(st.Chassis[len(st.Chassis)-1].Action, "power off") {
		t.Errorf("last chassis action %+v", st.Chassis)
	}
	c.send("while-off\r")
	waitCounters(t, n, "input while off", func(k simlab.FaultCounters) bool { return k.InputWhileOff > 0 })
}
