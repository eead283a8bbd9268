package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
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
