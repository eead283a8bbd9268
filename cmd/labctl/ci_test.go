package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/labctl/labctl/daemon/daemontest"
)

// examples/ci/nightly.sh against an in-process daemon with simulated
// nodes: every job runs, each gets its JUnit report and summary, and the
// script exits with the worst outcome (here 1: a test failed).
func TestCINightlyScript(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	script, err := filepath.Abs("../../examples/ci/nightly.sh")
	if err != nil {
		t.Fatal(err)
	}
	bin := labctlBinary(t)
	l := daemontest.Start(t, daemontest.Options{Nodes: 2, API: true})
	l.WaitIdle()
	jobs := t.TempDir()
	img, sum := daemontest.Image(t)
	for name, step := range map[string]string{"passes": "true", "fails": "false", "also-passes": "uname"} {
		text := "device_type = \"sim\"\n[deploy]\nimage = \"" + img + "\"\nsha256 = \"" + sum + "\"\n[boot]\npassword = \"test\"\n[[test]]\nname = \"step\"\ncommands = [\"" + step + "\"]\n"
		if err := os.WriteFile(filepath.Join(jobs, name+".toml"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(t.TempDir(), "out")
	cmd := exec.Command(script, jobs, out)
	cmd.Env = append(cleanEnv(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"), "HOME="+t.TempDir(),
		"LABCTL_SERVER="+l.URL, "LABCTL_TOKEN="+daemontest.Token)
	printed, err := cmd.CombinedOutput()
	t.Logf("nightly.sh:\n%s", printed)
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("nightly.sh exit %d (%v), want 1", code, err)
	}
	for _, want := range []string{"passes: complete", "also-passes: complete", "fails: failed"} {
		if !strings.Contains(string(printed), want) {
			t.Errorf("nightly.sh output lacks %q", want)
		}
	}
	for _, name := range []string{"passes", "fails", "also-passes"} {
		if b, err := os.ReadFile(filepath.Join(out, name+".junit.xml")); err != nil || !strings.Contains(string(b), "<testsuites") {
			t.Errorf("%s: JUnit report %v", name, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(out, "fails.txt")); !strings.Contains(string(b), "FAILED") {
		t.Errorf("fails.txt:\n%s", b)
	}
}
