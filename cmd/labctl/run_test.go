package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// labctl run refuses a node that something else drives: a labctl serve
// owning the lab, or a labctl console --direct (or another run) on the
// node; with neither it runs the job.
func TestRunLocksNode(t *testing.T) {
	labFile, _ := commandLab(t)
	stateDir := filepath.Join(filepath.Dir(labFile), "state")
	dir := t.TempDir()
	raw := bytes.Repeat([]byte{1}, 4096)
	sum := sha256.Sum256(raw)
	if err := os.WriteFile(filepath.Join(dir, "disk.img"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	job := filepath.Join(dir, "never-boots.toml")
	text := fmt.Sprintf("device = \"n1\"\n[deploy]\nimage = \"disk.img\"\nsha256 = %q\n[[test]]\nname = \"t\"\ncommands = [\"true\"]\n", hex.EncodeToString(sum[:]))
	if err := os.WriteFile(job, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	pid := strconv.Itoa(os.Getpid())

	unlock, err := lockStateDir(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runLabctl(t, nil, "run", "--lab", labFile, job)
	if want := "run: a labctl serve (pid " + pid + ") owns the lab in " + stateDir + ": submit the job to it"; code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("run while a daemon owns the lab: exit %d, %q; want %q", code, stderr, want)
	}
	unlock()

	unlock, err = lockNode(stateDir, "n1", "console --direct", "")
	if err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runLabctl(t, nil, "run", "--lab", labFile, job)
	if want := "run: another labctl run or console --direct has n1 (pid " + pid + ")"; code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("run while console --direct has the node: exit %d, %q; want %q", code, stderr, want)
	}
	unlock()

	// Nothing holds the node: the job runs (and ends incomplete, as the
	// lab's master never boots).
	code, _, stderr = runLabctl(t, nil, "run", "--lab", labFile, job)
	if code != 2 || !strings.Contains(stderr, "master prompt") {
		t.Errorf("run with the node free: exit %d, %s; want 2 at the master prompt", code, stderr)
	}
}

// labctl run hands its process to labctl-run when labctl-run is beside it
// and from the same build (the job then fails its checks there, exactly as
// it would here), and runs the job itself beside a labctl-run of another
// build.
func TestRunHandsOffToLabctlRun(t *testing.T) {
	dir := t.TempDir()
	goBuild := func(out string, args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", append(append([]string{"build"}, args...), "-o", out, ".")...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %v: %v\n%s", args, err, b)
		}
	}
	labctlBin, runBin := filepath.Join(dir, "labctl"), filepath.Join(dir, "labctl-run")
	stamp := "-ldflags=-X main.buildStamp=one"
	goBuild(labctlBin, stamp)
	goBuild(runBin, "-tags", "labctl_run", stamp)
	job := filepath.Join(dir, "job.toml")
	if err := os.WriteFile(job, []byte("name = \"x\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func() (string, int) {
		t.Helper()
		cmd := exec.Command(labctlBin, "run", "--lab", filepath.Join(dir, "none.toml"), job)
		cmd.Env = append(os.Environ(), "LABCTL_DEBUG=1")
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			t.Fatalf("labctl run of a job that fails its checks: %v\n%s", err, out)
		}
		return string(out), exit.ExitCode()
	}
	out, code := run()
	if !strings.Contains(out, "handing the job to labctl-run") || !strings.Contains(out, "deploy.image: required") || code != 1 {
		t.Errorf("labctl run beside labctl-run: exit %d\n%s\nwant the hand-off, then the job's errors and exit 1", code, out)
	}
	// labctl-run has only the run command.
	if b, err := exec.Command(runBin, "--help").CombinedOutput(); err != nil || !strings.Contains(string(b), "run ") || strings.Contains(string(b), "serve") {
		t.Errorf("labctl-run --help: %v\n%s\nwant the run command only", err, b)
	}

	// A labctl-run from another build (another make build's stamp).
	goBuild(runBin, "-tags", "labctl_run", "-ldflags=-X main.buildStamp=two")
	out, code = run()
	if strings.Contains(out, "handing the job") || !strings.Contains(out, "is not from this labctl's build") ||
		!strings.Contains(out, "running the job in this process") || !strings.Contains(out, "deploy.image: required") || code != 1 {
		t.Errorf("labctl run beside a labctl-run of another build: exit %d\n%s\nwant no hand-off, a warning, the job's errors", code, out)
	}
}
