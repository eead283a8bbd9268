package dispatcher_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl/dispatcher"
	"github.com/labctl/labctl/dispatcher/dispatchertest"
	"github.com/labctl/labctl/jobs"
	"github.com/labctl/labctl/results"
	"github.com/labctl/labctl/sol"
)

// image writes a bootable gzip image into dir and returns its path and the
// sha256 of the uncompressed bytes.
func image(t *testing.T, dir string) (string, string) {
	t.Helper()
	return dispatchertest.GzipImage(t, dir, dispatchertest.MBRImage(1<<20))
}

// deployJob is the text of a job on node1 that deploys img, whose
// uncompressed bytes have sha256 sum, followed by rest: its boot and test
// tables.
func deployJob(img, sum, rest string) string {
	return "device = \"node1\"\n[deploy]\nimage = \"" + img + "\"\nsha256 = \"" + sum + "\"\n" + rest
}

// helloTest logs in and runs one step that passes.
const helloTest = `[boot]
password = "test"
[[test]]
name = "hello"
commands = ["true"]
`

func newNode(t *testing.T) *dispatchertest.Node {
	t.Helper()
	n, err := dispatchertest.NewNode("node1", t.TempDir())
	if err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func parseJob(t *testing.T, text string) *jobs.Job {
	t.Helper()
	j, err := jobs.Parse("job.toml", []byte(text), "/")
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func run(t *testing.T, n *dispatchertest.Node, spec *jobs.Job) (*results.Job, string) {
	t.Helper()
	return runIn(t, t.TempDir(), n, spec)
}

func runIn(t *testing.T, dir string, n *dispatchertest.Node, spec *jobs.Job) (*results.Job, string) {
	t.Helper()
	return runJob(t, n, spec, func(j *dispatcher.Job) { j.Dir = dir })
}

// runJob runs spec on n as a job in a new directory with the node's
// settings, after edit (if not nil) changed the job; it returns the
// result and the job log.
func runJob(t *testing.T, n *dispatchertest.Node, spec *jobs.Job, edit func(*dispatcher.Job)) (*results.Job, string) {
	t.Helper()
	j := dispatcher.Job{
		ID: "1", Spec: spec, Device: n.Name, Settings: dispatchertest.Settings(n),
		Power: n, Console: console(t, n), Netboot: n, Dir: t.TempDir(),
	}
	if edit != nil {
		edit(&j)
	}
	res := dispatcher.Run(context.Background(), j)
	log, _ := os.ReadFile(filepath.Join(j.Dir, "job.log"))
	return res, string(log)
}

// checkFinalized fails t unless the job left n as every job must: powered
// off, its PXE entry put back.
func checkFinalized(t *testing.T, n *dispatchertest.Node) {
	t.Helper()
	if n.On() {
		t.Error("node left powered on")
	}
	if calls := n.Calls(); len(calls) == 0 || calls[len(calls)-1] != "pxe local" {
		t.Errorf("PXE entry not put back last: calls %v", calls)
	}
}

// console opens the node's console session for a job.
func console(t *testing.T, n *dispatchertest.Node) *sol.Session {
	t.Helper()
	s := sol.NewSession(n.Dialer(), sol.Options{})
	if err := s.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestRunComplete(t *testing.T) {
	n := newNode(t)
	img, sum := image(t, t.TempDir())
	spec := parseJob(t, `
device = "node1"
artifacts = ["/etc/hostname-missing", "`+n.Disk+`"]
[deploy]
image = "`+img+`"
sha256 = "`+sum+`"
[boot]
password = "test"
[[test]]
name = "hello"
commands = ["echo hello-from-node", "true"]
[[test]]
name = "expected"
commands = ["false"]
expect_failure = true
`)
	dir := t.TempDir()
	res, log := runIn(t, dir, n, spec)
	if res.Outcome != "complete" {
		t.Fatalf("outcome %s (%s), want complete\n%s", res.Outcome, res.Reason, log)
	}
	if got := res.Steps[0]; got.Result != results.Pass || !strings.Contains(got.Output, "hello-from-node") {
		t.Errorf("step hello = %+v", got)
	}
	if got := res.Steps[1]; got.Result != results.ExpectedFail || got.ExitCode != 1 {
		t.Errorf("step expected = %+v", got)
	}
	checkFinalized(t, n)
	if calls := n.Calls(); !slices.Contains(calls, "bootdev pxe") || !slices.Contains(calls, "bootdev disk") {
		t.Errorf("calls = %v", calls)
	}
	if strings.Contains(log, "test\\r") {
		t.Error("the login password appears in the job log")
	}
	if len(res.Artifacts) != 1 {
		t.Errorf("artifacts = %v, want the disk only\n%s", res.Artifacts, log)
	}
	// The disk holds NUL bytes: the upload must carry them all.
	got, _ := os.ReadFile(filepath.Join(dir, "artifacts", "disk.img"))
	want, _ := os.ReadFile(n.Disk)
	if len(want) == 0 || !bytes.Equal(got, want) {
		t.Errorf("fetched disk artifact: %d bytes, want the node's %d bytes", len(got), len(want))
	}
	for _, name := range []string{"results.json", "junit.xml", "job.log"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("job directory lacks %s", name)
		}
	}
}

func TestRunFailedStep(t *testing.T) {
	n := newNode(t)
	img, sum := image(t, t.TempDir())
	spec := parseJob(t, deployJob(img, sum, `
[boot]
password = "test"
[[test]]
name = "broken"
commands = ["ls /nonexistent-dir", "echo not-reached"]
[[test]]
name = "after"
commands = ["true"]
`))
	res, log := run(t, n, spec)
	if res.Outcome != "failed" {
		t.Fatalf("outcome %s (%s), want failed\n%s", res.Outcome, res.Reason, log)
	}
	if got := res.Steps[0]; got.Result != results.Fail || got.ExitCode == 0 || got.FailedCommand != "ls /nonexistent-dir" {
		t.Errorf("step broken = %+v", got)
	}
	if res.Steps[1].Result != results.Pass {
		t.Errorf("step after = %+v, want pass", res.Steps[1])
	}
	checkFinalized(t, n)
}

func TestRunWrongDigest(t *testing.T) {
	n := newNode(t)
	img, _ := image(t, t.TempDir())
	wrong := strings.Repeat("ab", 32)
	spec := parseJob(t, deployJob(img, wrong, `
[[test]]
name = "never"
commands = ["true"]
`))
	res, log := run(t, n, spec)
	if res.Outcome != "incomplete" || !strings.Contains(res.Reason, wrong) || res.Action != "deploy" {
		t.Fatalf("outcome %s (%s), want incomplete naming the digests\n%s", res.Outcome, res.Reason, log)
	}
	if res.Steps[0].Result != results.Skipped {
		t.Errorf("step = %+v, want skipped", res.Steps[0])
	}
	checkFinalized(t, n)
}

func TestRunMasterNeverBoots(t *testing.T) {
	n := newNode(t)
	n.BreakMaster()
	img, sum := image(t, t.TempDir())
	spec := parseJob(t, deployJob(img, sum, `
[[test]]
name = "never"
commands = ["true"]
`))
	res, log := run(t, n, spec)
	if res.Outcome != "incomplete" || !strings.Contains(res.Reason, "master prompt") {
		t.Fatalf("outcome %s (%s), want incomplete at the master prompt\n%s", res.Outcome, res.Reason, log)
	}
	checkFinalized(t, n)
}

// waitTyped waits until the job in dir has typed want on the console, by
// its log's input records joined up: echo pacing sends a line a character
// at a time, and a pause over the transcript's 200 ms flush (a busy
// machine) splits it into several records.
func waitTyped(t *testing.T, dir, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(filepath.Join(dir, "job.log"))
		if bytes.Contains(sol.Joined(b, sol.Written), []byte(want)) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("the job never typed %q", want)
}

// waitLog waits until the job log in dir contains want.
func waitLog(t *testing.T, dir, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(filepath.Join(dir, "job.log"))
		if strings.Contains(string(b), want) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("job log never showed %q", want)
}

func TestRunConsoleDropsMidStep(t *testing.T) {
	n := newNode(t)
	img, sum := image(t, t.TempDir())
	spec := parseJob(t, deployJob(img, sum, `
[boot]
password = "test"
[[test]]
name = "slow"
commands = ["sleep 3; echo slow-done"]
[[test]]
name = "after"
commands = ["echo after-gap"]
`))
	dir := t.TempDir()
	// The console drops while the step sleeps: seconds after its line was
	// typed, however long the line takes to reach the log.
	go func() {
		waitTyped(t, dir, "sleep 3; echo slow-done;_lc")
		n.KillConsole()
	}()
	res, log := runIn(t, dir, n, spec)
	if res.Outcome != "complete" {
		t.Fatalf("outcome %s (%s), want complete\n%s", res.Outcome, res.Reason, log)
	}
	for _, want := range []string{"session lost", "reconnected", "console reconnected while"} {
		if !strings.Contains(log, want) {
			t.Errorf("job log does not mark the gap (%q)\n%s", want, log)
		}
	}
	if !strings.Contains(res.Steps[1].Output, "after-gap") {
		t.Errorf("step after the gap: %+v", res.Steps[1])
	}
}

func TestRunBMCStopsAnswering(t *testing.T) {
	n := newNode(t)
	img, sum := image(t, t.TempDir())
	spec := parseJob(t, deployJob(img, sum, `
[boot]
password = "test"
[[test]]
name = "one"
commands = ["true"]
`))
	n.FailFrom("bootdev disk", errors.New("bmc 127.0.0.1:16230: no answer after 4 tries"))
	res, _ := run(t, n, spec)
	if res.Outcome != "incomplete" || res.Action != "boot" || !strings.Contains(res.Reason, "bmc 127.0.0.1:16230") {
		t.Fatalf("outcome %s in %s (%s), want incomplete in boot naming the BMC", res.Outcome, res.Action, res.Reason)
	}
}

// A job whose context is canceled ends as the cause says: canceled by a
// person, incomplete when the dispatcher stops under it; either way the
// node is finalized and the record on disk says so.
func TestRunCanceled(t *testing.T) {
	for _, tc := range []struct {
		cause           error
		outcome, reason string
	}{
		{dispatcher.CanceledBy{Caller: "ci"}, "canceled", "canceled: by ci"},
		{dispatcher.ErrShutdown, "incomplete", "daemon stopped while the job ran"},
	} {
		t.Run(tc.outcome, func(t *testing.T) {
			n := newNode(t)
			img, sum := image(t, t.TempDir())
			spec := parseJob(t, deployJob(img, sum, `
[[test]]
name = "one"
commands = ["true"]
`))
			dir := t.TempDir()
			ctx, cancel := context.WithCancelCause(context.Background())
			go func() {
				waitLog(t, dir, "master prompt")
				cancel(tc.cause)
			}()
			res := dispatcher.Run(ctx, dispatcher.Job{
				ID: "1", Spec: spec, Device: n.Name, Settings: dispatchertest.Settings(n),
				Power: n, Console: console(t, n), Netboot: n, Dir: dir,
			})
			if res.Outcome != tc.outcome || res.Reason != tc.reason {
				t.Fatalf("outcome %s (%s), want %s (%s)", res.Outcome, res.Reason, tc.outcome, tc.reason)
			}
			f, err := os.Open(filepath.Join(dir, results.JSONFile))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if disk, err := results.ReadJSON(f); err != nil || disk.Outcome != tc.outcome || disk.Reason != tc.reason {
				t.Errorf("results.json = %+v, %v", disk, err)
			}
			checkFinalized(t, n)
		})
	}
}

// A job that runs out of its own time ends canceled (exit 3), not
// incomplete: the lab did nothing wrong.
func TestRunJobTimeout(t *testing.T) {
	n := newNode(t)
	img, sum := image(t, t.TempDir())
	spec := parseJob(t, `
device = "node1"
timeout = "3s"
[deploy]
image = "`+img+`"
sha256 = "`+sum+`"
[boot]
password = "test"
[[test]]
name = "forever"
commands = ["sleep 30"]
`)
	res, log := run(t, n, spec)
	if res.Outcome != "canceled" || !strings.Contains(res.Reason, "job timeout of 3s exceeded") {
		t.Fatalf("outcome %s (%s), want canceled by the job timeout\n%s", res.Outcome, res.Reason, log)
	}
	checkFinalized(t, n)
}

// The Enter after the user name echoes late (a busy node), later even
// than typing waits for a late echo: the node took the line, so typing it
// again would type the user name into the password prompt ("Login
// incorrect" in the scale bench). The job logs in.
func TestRunLateEnterEchoAtLogin(t *testing.T) {
	n := newNode(t)
	set := dispatchertest.Settings(n)
	set.Console.EchoTimeout = 300 * time.Millisecond
	// Well past the echo timeout and the late-echo wait after it (sol's
	// default, twice the timeout).
	n.LateLoginEnter = 10 * set.Console.EchoTimeout
	img, sum := image(t, t.TempDir())
	res, log := runWith(t, n, deployJob(img, sum, `
[boot]
password = "test"
[[test]]
name = "hello"
commands = ["echo logged-in"]
`), set)
	if res.Outcome != "complete" {
		t.Fatalf("outcome %s (%s), want complete\n%s", res.Outcome, res.Reason, log)
	}
	if !strings.Contains(log, `the Enter after "root" did not echo in time`) {
		t.Errorf("the job log does not say that the Enter echoed late:\n%s", log)
	}
}
