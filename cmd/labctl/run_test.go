package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
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
