package bench

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadLAVALog(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "lava-run.log")
	res := filepath.Join(dir, "result.yaml")
	lines := []string{
		`{"dt": "2026-12-06T06:20:00.1", "lvl": "info", "msg": "start: 1 command"}`,
		`{"dt": "2026-12-06T06:20:10.0", "lvl": "input", "msg": "/bin/wget -O - URL | /bin/dd of=/dev/vda\n"}`,
		`{"dt": "2026-12-06T06:20:10.1", "lvl": "target", "msg": "master# \e[6n/bin/"}`,
		`{"dt": "2026-12-06T06:20:11.1", "lvl": "results", "msg": {"case": "uname", "definition": "0_smoke", "endtc": ! "330", "result": "pass", "starttc": ! "326"}}`,
		`{"dt": "2026-12-06T06:20:11.2", "lvl": "results", "msg": {"definition": "0_smoke", "case": "disk", "result": "fail"}}`,
		`{"dt": "2026-12-06T06:21:10.1", "lvl": "error", "msg": "dd-image timed out after 60 seconds"}`,
		`{"dt": "2026-12-06T06:21:12.1", "lvl": "results", "msg": {"definition": "lava", "case": "job", "result": "fail"}}`,
		`not a record`,
	}
	if err := os.WriteFile(log, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(res, []byte("case: job\ndefinition: lava\nerror_msg: dd-image timed out after 60 seconds\nerror_type: Infrastructure\nresult: fail\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := readLAVALog(log, res)
	if r.result != "fail" || r.tests != "1/2 pass" {
		t.Fatalf("result %q tests %q", r.result, r.tests)
	}
	if !strings.HasPrefix(r.reason, "dd-image timed out after 60 seconds") || !strings.Contains(r.reason, `master# \x1b[6n/bin/`) ||
		!strings.Contains(r.reason, `typed: "/bin/wget -O - URL | /bin/dd of=/dev/vda" (41 bytes)`) {
		t.Fatalf("reason %q", r.reason)
	}
	if r := readLAVALog(filepath.Join(dir, "none"), filepath.Join(dir, "none")); r.result != "no result" {
		t.Fatalf("missing files: %+v", r)
	}
}

func TestLAVAFixVariant(t *testing.T) {
	dir := t.TempDir()
	dist := filepath.Join(dir, "dist")
	shell := "import pexpect\n\nclass ShellCommand(pexpect.spawn):\n    def __init__(self, command, lava_timeout):\n        self.lava_timeout = lava_timeout\n\n    def sendline(self, s):\n        pass\n"
	if err := os.MkdirAll(filepath.Join(dist, "lava_dispatcher"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dist, "lava_dispatcher", "shell.py"), []byte(shell), 0o644); err != nil {
		t.Fatal(err)
	}
	fix := filepath.Join(dir, "fix", "dist-packages")
	for range 2 { // the second call finds the fix in place
		got, err := lavaFixVariant(dist, fix)
		if err != nil || got != fix {
			t.Fatalf("lavaFixVariant = %q, %v", got, err)
		}
	}
	b, _ := os.ReadFile(filepath.Join(fix, "lava_dispatcher", "shell.py"))
	if want := "        self.lava_timeout = lava_timeout\n" + lavaFixLine + "\n    def sendline"; !strings.Contains(string(b), want) {
		t.Fatalf("patched shell.py:\n%s", b)
	}
	if orig, _ := os.ReadFile(filepath.Join(dist, "lava_dispatcher", "shell.py")); string(orig) != shell {
		t.Fatal("the original was changed")
	}
	os.WriteFile(filepath.Join(dist, "lava_dispatcher", "shell.py"), []byte("class Other:\n    pass\n"), 0o644)
	if _, err := lavaFixVariant(dist, filepath.Join(dir, "fix2")); !errors.Is(err, ErrSkipped) {
		t.Fatalf("no ShellCommand: %v", err)
	}
}

// statusKB reads a process's private memory as measure samples it, and
// 0 for a process that is gone.
func TestStatusKB(t *testing.T) {
	if kb := statusKB(os.Getpid(), "RssAnon:"); kb <= 0 {
		t.Errorf("RssAnon of this test process: %d kB", kb)
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if kb := statusKB(cmd.Process.Pid, "RssAnon:"); kb != 0 {
		t.Errorf("RssAnon of an exited process: %d kB, want 0", kb)
	}
	if kb := statusKB(os.Getpid(), "NoSuchKey:"); kb != 0 {
		t.Errorf("a key /proc/PID/status lacks: %d kB, want 0", kb)
	}
}
