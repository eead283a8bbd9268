// Package simlabtest starts simulated labs (package simlab) for tests: a
// lab that is stopped when the test ends, the simlab binary its relays run,
// and a skip with a loud reason when the simulated lab's parts (ipmi_sim,
// QEMU, ipmitool, the artifacts) are missing.
//
// It lives apart from simlab so that bin/simlab does not link package
// testing.
package simlabtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl/internal/testutil"
	"github.com/labctl/labctl/simlab"
)

// StartLab starts a lab of n nodes for a test, in t.TempDir(). It waits for
// free machine-wide slots if other tests hold them, and registers a cleanup
// that stops every process it started, also when the test fails (then it
// also logs the tail of each node's logs). If a component is missing
// (ipmi_sim, QEMU, ipmitool, the artifacts), the test is skipped with a loud
// reason, or fails when LABCTL_REQUIRE_SIMLAB=1.
//
// The simlab binary comes from $LABCTL_SIMLAB_BIN (`make test` sets it to
// bin/simlab) or is built from cmd/simlab.
func StartLab(t testing.TB, n int, opts simlab.Options) *simlab.Lab {
	t.Helper()
	if _, err := simlab.FindTools(); err != nil {
		SkipOrFail(t, err)
	}
	if opts.Artifacts == "" {
		opts.Artifacts = Artifacts(t).Dir
	} else if _, err := simlab.LoadArtifacts(opts.Artifacts); err != nil {
		SkipOrFail(t, err)
	}
	if opts.Simlab == "" {
		opts.Simlab = SimlabBinary(t)
	}
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	opts.Nodes = n
	opts.WatchStdin = true
	if opts.Progress == nil {
		opts.Progress = func(s string) { t.Logf("simlab: %s", s) }
	}
	if opts.SlotWait == 0 {
		opts.SlotWait = 30 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.SlotWait+2*time.Minute)
	defer cancel()
	start := time.Now()
	lab, err := simlab.Up(ctx, opts)
	if err != nil {
		if errors.Is(err, simlab.ErrMissingTool) || errors.Is(err, simlab.ErrNoArtifacts) {
			SkipOrFail(t, err)
		}
		t.Fatalf("start simlab: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range lab.Nodes {
				t.Logf("%s logs (tail):%s", n.Name, n.LogTail())
			}
		}
		if err := lab.Close(); err != nil {
			t.Errorf("stop simlab: %v", err)
		}
	})
	var slots []string
	for _, n := range lab.Nodes {
		slots = append(slots, fmt.Sprintf("%s=slot %d (bmc %s)", n.Name, n.Slot, n.BMC.Addr()))
	}
	t.Logf("simlab: %d node(s) up in %.1fs, accel %s: %s; lab %s", n, time.Since(start).Seconds(), lab.Accel, strings.Join(slots, ", "), lab.ConfigPath)
	return lab
}

// PowerOns counts the power-ons in a node's chassis log: a test that
// powers a node on, cycles and resets it wants exactly one each, not an
// action ipmi_sim ran twice.
func PowerOns(st simlab.Status) int {
	n := 0
	for _, e := range st.Chassis {
		if strings.HasPrefix(e.Action, "power on") {
			n++
		}
	}
	return n
}

// DiskSHA256 returns the sha256 of a node's disk file (or any file) and the
// bytes of its 4 KiB blocks that are not all zero: what a sparse disk
// really holds.
func DiskSHA256(t testing.TB, path string) (sum string, used int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	block := make([]byte, 4096)
	zero := make([]byte, 4096)
	for {
		n, err := io.ReadFull(f, block)
		h.Write(block[:n])
		if !bytes.Equal(block[:n], zero[:n]) {
			used += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), used
}

// Artifacts loads the artifacts StartLab uses by default
// ($LABCTL_SIMLAB_ARTIFACTS or the repository's build/simlab/artifacts),
// skipping the test (or failing it, with LABCTL_REQUIRE_SIMLAB=1) when they
// are missing.
func Artifacts(t testing.TB) simlab.Artifacts {
	t.Helper()
	dir, err := simlab.DefaultArtifactsDir()
	if err != nil {
		SkipOrFail(t, err)
	}
	a, err := simlab.LoadArtifacts(dir)
	if err != nil {
		SkipOrFail(t, err)
	}
	return a
}

// SkipOrFail skips the test with a loud reason, or fails it when
// LABCTL_REQUIRE_SIMLAB=1 (CI: the simulated lab must not skip silently).
func SkipOrFail(t testing.TB, err error) {
	t.Helper()
	testutil.SkipOrFail(t, fmt.Errorf("simulated lab unavailable: %w", err))
}

// SimlabBinary returns the simlab binary for a test: $LABCTL_SIMLAB_BIN, or
// cmd/simlab built into a temporary directory of the test.
func SimlabBinary(t testing.TB) string {
	t.Helper()
	bin, err := simlabBinary(t)
	if err != nil {
		t.Fatalf("simlab binary: %v", err)
	}
	return bin
}

func simlabBinary(t testing.TB) (string, error) {
	if bin := os.Getenv("LABCTL_SIMLAB_BIN"); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("LABCTL_SIMLAB_BIN: %w", err)
		}
		return filepath.Abs(bin)
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	root, err := simlab.RepoRoot(wd)
	if err != nil {
		return "", err
	}
	bin := filepath.Join(t.TempDir(), "simlab")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/simlab")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/simlab: %v: %s", err, out)
	}
	return bin, nil
}
