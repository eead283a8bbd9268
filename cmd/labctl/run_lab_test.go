package main

// Tests of labctl run against the simulated lab (real ipmi_sim, QEMU,
// ipmitool): `go test -run Lab ./cmd/labctl`. Each test boots its own node
// and lets one job show several things, because a boot costs ~20 s.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labctl/labctl/results"
	"github.com/labctl/labctl/simlab"
	"github.com/labctl/labctl/simlab/simlabtest"
	"github.com/labctl/labctl/sol"
)

// labJob is a job file for a simlab node, with the image of the given
// suffix ("" raw, ".gz", ".xz", ".zst"); top holds top-level keys, extra
// the tables after [deploy] and [boot].
func labJob(t *testing.T, lab *simlab.Lab, suffix, top, extra string) string {
	t.Helper()
	img := lab.Artifacts.Images.Raw
	text := fmt.Sprintf(`device = %q
`+top+`
[deploy]
image = %q
sha256 = %q
[boot]
password = "test"
`, lab.Nodes[0].Name, img.Path+suffix, img.SHA256) + extra
	path := filepath.Join(t.TempDir(), "job.toml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// overrideDevice appends an [override] table to the node's device file.
func overrideDevice(t *testing.T, n *simlab.Node, override string) {
	t.Helper()
	f, err := os.OpenFile(n.DeviceFile, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "\n[override]\n%s\n", override); err != nil {
		t.Fatal(err)
	}
}

// runLabJob runs the job with labctl run and returns its results and log.
func runLabJob(t *testing.T, lab *simlab.Lab, job, dir string) (*results.Job, string, error) {
	t.Helper()
	// Locked buffers: the console's logger and the live view both write
	// stderr (an *os.File, safe for that, outside tests).
	env, stdout, stderr := envWith(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	err := runRun(ctx, runOptions{job: job, lab: lab.ConfigPath, dir: dir}, env)
	t.Logf("labctl run: %v\n%s%s", err, stdout, stderr)
	f, ferr := os.Open(filepath.Join(dir, "results.json"))
	if ferr != nil {
		t.Fatalf("no results: %v", ferr)
	}
	defer f.Close()
	res, rerr := results.ReadJSON(f)
	if rerr != nil {
		t.Fatal(rerr)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "job.log"))
	t.Cleanup(func() {
		if t.Failed() {
			lines := strings.Split(string(log), "\n")
			t.Logf("job log (last 150 lines):\n%s", strings.Join(lines[max(0, len(lines)-150):], "\n"))
		}
	})
	return res, string(log), err
}

// wantOff checks that the node was left powered off.
func wantOff(t *testing.T, n *simlab.Node) {
	t.Helper()
	st, err := n.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Power {
		t.Errorf("%s left powered on", n.Name)
	}
}

// wantExit checks the exit status labctl run would give.
func wantExit(t *testing.T, err error, code int) {
	t.Helper()
	var coded exitCoder
	switch {
	case code == 0 && err != nil:
		t.Errorf("labctl run: %v, want success", err)
	case code != 0 && (!errors.As(err, &coded) || coded.ExitCode() != code):
		t.Errorf("labctl run: %v, want exit status %d", err, code)
	}
}

// watchSecret scans every process's command line until stop, for a secret.
func watchSecret(secret string) (stop func() []string) {
	done := make(chan struct{})
	var mu sync.Mutex
	var seen []string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
			for _, c := range cmdlines {
				b, _ := os.ReadFile(c)
				if strings.Contains(string(b), secret) {
					mu.Lock()
					seen = append(seen, strings.ReplaceAll(string(b), "\x00", " "))
					mu.Unlock()
				}
			}
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return func() []string {
		close(done)
		wg.Wait()
		return seen
	}
}

// typedSoFar is what a job has typed on the console so far, by its job
// log: its input records joined (one typed line may take several
// records, as echo pacing sends it in pieces).
func typedSoFar(path string) string {
	b, _ := os.ReadFile(path)
	return string(sol.Joined(b, sol.Written))
}

// The smoke job through ipmitool in a pty, with a gzip image: it completes
// although the BMC kills the SOL session in the middle of the test steps,
// and the BMC password shows up in no job log and no command line. The
// device type's settings hold: the gzip image served repacked into zstd,
// stream verification, and the disk boot powers the node off and on
// rather than sending a cycle.
func TestLabRunSmoke(t *testing.T) {
	t.Parallel()
	lab := simlabtest.StartLab(t, 1, simlab.Options{})
	node := lab.Nodes[0]
	job := labJob(t, lab, ".gz", `artifacts = ["/tmp/uname.txt"]`, `
[[test]]
name = "kernel"
commands = ["uname -a > /tmp/uname.txt", "grep -q Linux /tmp/uname.txt"]
[[test]]
name = "slow"
commands = ["sleep 3; echo after-the-gap"]
[[test]]
name = "disk"
commands = ["grep -q vda /proc/partitions"]
`)
	pw := node.BMC.Password
	stopWatch := watchSecret(pw)

	// Kill the SOL session at the BMC while the slow step runs.
	dir := t.TempDir()
	killed := make(chan error, 1)
	go func() {
		deadline := time.Now().Add(10 * time.Minute)
		for time.Now().Before(deadline) {
			if strings.Contains(typedSoFar(filepath.Join(dir, "job.log")), "sleep 3; echo after-the-gap;_lc") {
				killed <- node.KillSOL(context.Background())
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		killed <- errors.New("the slow step never started")
	}()

	res, log, err := runLabJob(t, lab, job, dir)
	if seen := stopWatch(); len(seen) > 0 {
		t.Errorf("the BMC password was on a command line: %q", seen)
	}
	wantExit(t, err, 0)
	if res.Outcome != "complete" {
		t.Fatalf("outcome %s: %s", res.Outcome, res.Reason)
	}
	if strings.Contains(log, pw) {
		t.Error("the BMC password is in the job log")
	}
	select {
	case kerr := <-killed:
		if kerr != nil {
			t.Errorf("kill SOL: %v", kerr)
		}
	default:
		t.Error("the SOL session was never killed")
	}
	for _, want := range []string{"session lost", "reconnected"} {
		if !strings.Contains(log, want) {
			t.Errorf("job log does not mark the console gap (%q)", want)
		}
	}
	if got := res.Steps[1]; got.Result != results.Pass {
		t.Errorf("step across the gap: %+v", got)
	}
	if len(res.Artifacts) != 1 {
		t.Errorf("artifacts = %v, want uname.txt", res.Artifacts)
	}
	if !strings.Contains(log, "deploy: verify stream:") || !strings.Contains(log, "of the zstd file verified on the node") || strings.Contains(log, "readback sha256") {
		t.Error("job log does not show stream verification alone")
	}
	// simlab-qemu repacks the gzip image; the master unpacks the copy.
	if !strings.Contains(log, "the node is served the image repacked into zstd") || !strings.Contains(log, "| zstdcat |") {
		t.Error("job log does not show the image served as its zstd copy")
	}
	if !offOnAfter(log, "bootdev disk") {
		t.Error("job log does not show power off, then power on, after bootdev disk")
	}
	wantOff(t, node)
}

// offOnAfter reports whether the job log's events after the line ending in
// event are "power off" and then "power on", with no power cycle anywhere.
func offOnAfter(log, event string) bool {
	var after []string
	seen := false
	for _, line := range strings.Split(log, "\n") {
		switch {
		case strings.HasSuffix(line, " power cycle"):
			return false
		case strings.HasSuffix(line, " "+event):
			seen = true
		case seen && strings.HasSuffix(line, " power off"), seen && strings.HasSuffix(line, " power on"):
			after = append(after, line[strings.LastIndex(line, "power "):])
		}
	}
	return len(after) >= 2 && after[0] == "power off" && after[1] == "power on"
}

// An xz image through a console that drops input arriving while more than
// 8 bytes are unechoed (a BMC with a small input buffer): echo pacing
// loses no character, and the job log says what typing cost against the
// device's fixed delay.
func TestLabRunLossyConsole(t *testing.T) {
	t.Parallel()
	lab := simlabtest.StartLab(t, 1, simlab.Options{})
	node := lab.Nodes[0]
	overrideDevice(t, node, `console.pacing = "echo"
console.bootloader_serial_delay_ms = 10
console.test_shell_serial_delay_ms = 10`)
	if err := node.SetLossyConsole(context.Background(), simlab.LossyConsole{MaxUnechoed: 8}); err != nil {
		t.Fatal(err)
	}
	job := labJob(t, lab, ".xz", "", `
[[test]]
name = "long-line"
commands = ["echo 0123456789abcdefghijklmnopqrstuvwxyz-0123456789abcdefghijklmnopqrstuvwxyz | grep -c 'z-0123456789a'"]
[[test]]
name = "kernel"
commands = ["uname -r"]
`)
	res, log, err := runLabJob(t, lab, job, t.TempDir())
	wantExit(t, err, 0)
	if res.Outcome != "complete" {
		t.Fatalf("outcome %s: %s", res.Outcome, res.Reason)
	}
	c, err := node.Counters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if c.DroppedInput() != 0 {
		t.Errorf("the lossy console dropped %d input bytes: %+v", c.DroppedInput(), c)
	}
	if c.InputBytes == 0 {
		t.Error("no input went through the lossy console")
	}
	if !strings.Contains(log, "(echo), fixed 10 ms would take") {
		t.Error("the job log does not compare typing time with the fixed delay")
	}
	if strings.Contains(log, "console lost a character") {
		t.Error("echo pacing had to type a line again")
	}
	wantOff(t, node)
}

// Native SOL (go-ipmi, no ipmitool), a zstd image and a step that fails
// unexpectedly: the job ends failed, JUnit says which step, the node is off.
func TestLabRunNativeSOLFailedStep(t *testing.T) {
	t.Parallel()
	lab := simlabtest.StartLab(t, 1, simlab.Options{})
	overrideDevice(t, lab.Nodes[0], `console.driver = "ipmi"`)
	job := labJob(t, lab, ".zst", "", `
[[test]]
name = "ok"
commands = ["true"]
[[test]]
name = "broken"
commands = ["ls /no/such/dir"]
[[test]]
name = "expected"
commands = ["false"]
expect_failure = true
`)
	dir := t.TempDir()
	res, log, err := runLabJob(t, lab, job, dir)
	wantExit(t, err, 1)
	if !strings.Contains(log, "native SOL") {
		t.Error("the job did not use the native SOL console")
	}
	if res.Outcome != "failed" {
		t.Fatalf("outcome %s: %s", res.Outcome, res.Reason)
	}
	if got := res.Steps[1]; got.Result != results.Fail || got.ExitCode == 0 {
		t.Errorf("step broken: %+v", got)
	}
	if res.Steps[0].Result != results.Pass || res.Steps[2].Result != results.ExpectedFail {
		t.Errorf("steps: %+v", res.Steps)
	}
	junit, _ := os.ReadFile(filepath.Join(dir, "junit.xml"))
	if !strings.Contains(string(junit), `<testcase name="broken" classname="labctl.job"`) || strings.Count(string(junit), "<failure") != 1 {
		t.Errorf("JUnit does not fail exactly the broken step:\n%s", junit)
	}
	wantOff(t, lab.Nodes[0])
}

// A wrong sha256 ends the job incomplete, naming both digests. The image
// is uncompressed and verified both ways: the node's hash of the bytes it
// received, which comes first, does not match (a compressed image would be
// refused on the host before the node boots).
func TestLabRunWrongDigest(t *testing.T) {
	t.Parallel()
	lab := simlabtest.StartLab(t, 1, simlab.Options{})
	wrong := strings.Repeat("0f", 32)
	job := labJob(t, lab, "", "", "[[test]]\nname = \"never\"\ncommands = [\"true\"]\n")
	b, _ := os.ReadFile(job)
	text := strings.Replace(string(b), lab.Artifacts.Images.Raw.SHA256, wrong, 1)
	os.WriteFile(job, []byte(strings.Replace(text, "[boot]", "verify = \"both\"\n[boot]", 1)), 0o644)
	res, log, err := runLabJob(t, lab, job, t.TempDir())
	wantExit(t, err, 2)
	if res.Outcome != "incomplete" || res.Action != "deploy" || !strings.Contains(res.Reason, "stream sha256 mismatch") ||
		!strings.Contains(res.Reason, wrong) || !strings.Contains(res.Reason, lab.Artifacts.Images.Raw.SHA256) {
		t.Errorf("outcome %s in %s: %s; want incomplete in deploy, the stream sha256 naming %s and %s", res.Outcome, res.Action, res.Reason, wrong, lab.Artifacts.Images.Raw.SHA256)
	}
	if !strings.Contains(log, "deploy: wrote the image") {
		t.Error("the job ended before the node wrote the image")
	}
	wantOff(t, lab.Nodes[0])
}

// A master that never reaches its prompt (its kernel is missing) ends the
// job incomplete after the deploy timeout, with the node off.
func TestLabRunMasterNeverBoots(t *testing.T) {
	t.Parallel()
	lab := simlabtest.StartLab(t, 1, simlab.Options{})
	overrideDevice(t, lab.Nodes[0], `master.kernel = "simlab/no-such-kernel"`)
	job := labJob(t, lab, ".gz", "", "[[test]]\nname = \"never\"\ncommands = [\"true\"]\n")
	b, _ := os.ReadFile(job)
	os.WriteFile(job, []byte(strings.Replace(string(b), "[deploy]\n", "[deploy]\ntimeout = \"75s\"\n", 1)), 0o644)
	res, _, err := runLabJob(t, lab, job, t.TempDir())
	wantExit(t, err, 2)
	if res.Outcome != "incomplete" || res.Action != "deploy" || !strings.Contains(res.Reason, "master prompt") {
		t.Errorf("outcome %s in %s: %s; want incomplete waiting for the master prompt", res.Outcome, res.Action, res.Reason)
	}
	wantOff(t, lab.Nodes[0])
}

// A BMC that stops answering for longer than the retries allow ends the
// job incomplete with a message naming the BMC.
func TestLabRunSilentBMC(t *testing.T) {
	t.Parallel()
	lab := simlabtest.StartLab(t, 1, simlab.Options{})
	node := lab.Nodes[0]
	if err := node.SilenceBMC(context.Background(), 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	job := labJob(t, lab, ".gz", "", "[[test]]\nname = \"never\"\ncommands = [\"true\"]\n")
	res, _, err := runLabJob(t, lab, job, t.TempDir())
	wantExit(t, err, 2)
	if res.Outcome != "incomplete" || !strings.Contains(res.Reason, node.BMC.Addr()) {
		t.Errorf("outcome %s: %s; want incomplete naming bmc %s", res.Outcome, res.Reason, node.BMC.Addr())
	}
}
