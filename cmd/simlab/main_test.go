package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl/simlab"
	"github.com/labctl/labctl/simlab/simlabtest"
)

// TestLabUpFaultDown drives the CLI's commands as `make simlab`, `simlab
// fault` and `make simlab-down` do: up prints `lab: PATH` last, fault sets a
// knob and prints the status, down stops every process up started.
func TestLabUpFaultDown(t *testing.T) {
	if _, err := simlab.FindTools(); err != nil {
		simlabtest.SkipOrFail(t, err)
	}
	artifacts := simlabtest.Artifacts(t).Dir
	dir := filepath.Join(t.TempDir(), "lab")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out bytes.Buffer
	opts := simlab.Options{Nodes: 1, Dir: dir, Artifacts: artifacts, Accel: "tcg", Simlab: simlabtest.SimlabBinary(t), SlotWait: 3 * time.Minute}
	t.Cleanup(func() { _ = simlab.Down(dir) })
	if err := runUp(ctx, opts, &out); err != nil {
		t.Fatalf("up: %v\n%s", err, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	last := lines[len(lines)-1]
	if last != "lab: "+filepath.Join(dir, "lab.toml") {
		t.Fatalf("last line of up: %q", last)
	}
	relayPid := readPid(t, filepath.Join(dir, "nodes", "node1", "relay.pid"))

	out.Reset()
	f := faultOptions{lossySet: true, lossy: simlab.LossyConsole{MinGap: simlab.Duration(20 * time.Millisecond)}}
	if err := runFault(ctx, dir, "node1", f, &out); err != nil {
		t.Fatal(err)
	}
	var st simlab.Status
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		t.Fatalf("fault output is not the status JSON: %v\n%s", err, out.String())
	}
	if time.Duration(st.Lossy.MinGap) != 20*time.Millisecond || !st.Ready {
		t.Errorf("status after fault: %+v", st)
	}
	if err := runFault(ctx, dir, "node9", f, &out); err == nil {
		t.Error("fault on an unknown node succeeded")
	}

	out.Reset()
	if err := runDown(dir, &out); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join("/proc", relayPid)); err == nil {
		stat, _ := os.ReadFile(filepath.Join("/proc", relayPid, "stat"))
		if !strings.Contains(string(stat), ") Z") {
			t.Errorf("relay %s still running after down", relayPid)
		}
	}
	for _, f := range []string{"relay.pid", "ipmi_sim.pid", "qemu.pid"} {
		if _, err := os.Stat(filepath.Join(dir, "nodes", "node1", f)); err == nil {
			t.Errorf("%s left after down", f)
		}
	}
}

func readPid(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestLabUpDownBridge: `simlab up --network bridge` makes the lab's
// namespace with its bridge and taps, runs dnsmasq there on labctl's DHCP
// config, and answers IPMI at the node's BMC address inside the namespace
// too; `simlab down` removes all of it.
func TestLabUpDownBridge(t *testing.T) {
	if _, err := simlab.FindTools(); err != nil {
		simlabtest.SkipOrFail(t, err)
	}
	if os.Geteuid() != 0 {
		simlabtest.SkipOrFail(t, errors.New("the bridge network needs root"))
	}
	artifacts := simlabtest.Artifacts(t).Dir
	labctl := os.Getenv("LABCTL_BIN")
	if labctl == "" {
		labctl = filepath.Join(t.TempDir(), "labctl")
		if out, err := exec.Command("go", "build", "-o", labctl, "../labctl").CombinedOutput(); err != nil {
			t.Fatalf("go build labctl: %v\n%s", err, out)
		}
	}
	dir := filepath.Join(t.TempDir(), "lab")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out bytes.Buffer
	opts := simlab.Options{Nodes: 2, Dir: dir, Artifacts: artifacts, Accel: "tcg", Simlab: simlabtest.SimlabBinary(t),
		SlotWait: 3 * time.Minute, Network: simlab.NetBridge, Labctl: labctl}
	t.Cleanup(func() { _ = simlab.Down(dir) })
	if err := runUp(ctx, opts, &out); err != nil {
		t.Fatalf("up: %v\n%s", err, out.String())
	}
	lab, err := simlab.OpenLab(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := lab.Network
	if n == nil {
		t.Fatalf("no network in the lab:\n%s", out.String())
	}
	ip := func(args ...string) (string, error) {
		b, err := exec.Command("ip", args...).CombinedOutput()
		return string(b), err
	}
	if o, err := ip("-n", n.NetNS, "-br", "link"); err != nil || !strings.Contains(o, "tap-node1") || !strings.Contains(o, "tap-node2") || !strings.Contains(o, "br0") {
		t.Errorf("links in %s: %v\n%s", n.NetNS, err, o)
	}
	dnsmasq := readPid(t, n.DHCPPidFile)
	if link, err := os.Readlink("/proc/" + dnsmasq + "/ns/net"); err != nil {
		t.Errorf("dnsmasq (pid %s) not running: %v", dnsmasq, err)
	} else if self, _ := os.Readlink("/proc/self/ns/net"); link == self {
		t.Error("dnsmasq runs in the host's network namespace")
	}
	if conf, err := os.ReadFile(n.DHCPConfig); err != nil || !strings.Contains(string(conf), "dhcp-host=") || !strings.Contains(string(conf), lab.Nodes[1].MAC) {
		t.Errorf("labctl's dnsmasq config %s: %v\n%s", n.DHCPConfig, err, conf)
	}
	if lab.Nodes[1].IP != "10.76.0.12" {
		t.Errorf("node2: ip %q, want 10.76.0.12", lab.Nodes[1].IP)
	}
	// The BMC at the same address inside the namespace.
	node := lab.Nodes[0]
	argv := n.Exec(append([]string{"ipmitool"}, append(node.IPMIToolArgs(), "power", "status")...)...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = node.IPMIToolEnv()
	if o, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(o), "Chassis Power is off") {
		t.Errorf("ipmitool power status inside %s: %v\n%s", n.NetNS, err, o)
	}

	out.Reset()
	if err := runDown(dir, &out); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/run/netns/" + n.NetNS); err == nil {
		t.Errorf("namespace %s left after down", n.NetNS)
	}
	if stat, err := os.ReadFile("/proc/" + dnsmasq + "/stat"); err == nil && !strings.Contains(string(stat), ") Z") {
		t.Errorf("dnsmasq %s still running after down", dnsmasq)
	}
}
