package main

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/daemon/daemontest"
	"github.com/labctl/labctl/dispatcher"
	"github.com/labctl/labctl/results"
)

// clientLab is an in-process daemon with simulated nodes and its API, and
// the environment that points labctl at it.
func clientLab(t *testing.T, nodes int) (*daemontest.Lab, map[string]string) {
	t.Helper()
	l := daemontest.Start(t, daemontest.Options{Nodes: nodes, API: true})
	l.WaitIdle()
	return l, map[string]string{"LABCTL_SERVER": l.URL, "LABCTL_TOKEN": daemontest.Token}
}

// jobFile writes a job file for node1 whose image is in the job file's
// directory (a relative path, made absolute by submit) and whose test
// steps are steps.
func jobFile(t *testing.T, name, top, steps string) string {
	t.Helper()
	img, sum := daemontest.Image(t)
	dir := filepath.Dir(img)
	text := fmt.Sprintf("%s\n[deploy]\nimage = %q\nsha256 = %q\n[boot]\npassword = \"test\"\n%s", top, filepath.Base(img), sum, steps)
	path := filepath.Join(dir, name+".toml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const helloStep = "[[test]]\nname = \"hello\"\ncommands = [\"echo hello-$((6*7))\"]\n"

// submit --wait exits with the job's outcome: 0 complete (and --junit
// writes the report), 1 a failed step, 3 timed out (the job is canceled);
// --follow prints the log as it runs; without --wait submit prints the
// job's ID; a job file with problems is refused before it is sent.
func TestSubmit(t *testing.T) {
	t.Parallel()
	l, vars := clientLab(t, 1)

	junit := filepath.Join(t.TempDir(), "reports", "junit.xml")
	code, out, _ := runLabctl(t, vars, "submit", "--wait", "--junit", junit, jobFile(t, "ok", `device = "node1"`, helloStep))
	if code != 0 || !strings.Contains(out, "hello") || !strings.Contains(out, "pass") {
		t.Errorf("submit --wait of a passing job: exit %d\n%s", code, out)
	}
	b, err := os.ReadFile(junit)
	var report struct {
		Tests    int `xml:"tests,attr"`
		Failures int `xml:"failures,attr"`
	}
	if err != nil || xml.Unmarshal(b, &report) != nil || report.Tests != 1 || report.Failures != 0 {
		t.Errorf("--junit wrote %q, %v", b, err)
	}

	failing := "[[test]]\nname = \"broken\"\ncommands = [\"false\"]\n"
	if code, out, _ := runLabctl(t, vars, "submit", "--wait", jobFile(t, "failing", `device_type = "sim"`, failing)); code != 1 || !strings.Contains(out, "broken") {
		t.Errorf("submit --wait of a failing job: exit %d\n%s", code, out)
	}

	code, out, stderr := runLabctl(t, vars, "submit", "--follow", jobFile(t, "followed", `device = "node1"`, helloStep))
	if code != 0 || !strings.Contains(out, "# deploy: start") || !strings.Contains(out, "< hello-42") || strings.Contains(out, `\r`) {
		t.Errorf("submit --follow: exit %d\n%s%s", code, out, stderr)
	}

	slow := "[[test]]\nname = \"slow\"\ncommands = [\"sleep 30\"]\ntimeout = \"1m\"\n"
	code, out, stderr = runLabctl(t, vars, "submit", "--wait", "--timeout", "3s", jobFile(t, "slow", `device = "node1"`, slow))
	if code != 3 || !strings.Contains(stderr, "has not ended after 3s") || !strings.Contains(out, "timed out") {
		t.Errorf("submit --wait --timeout 3s of a slow job: exit %d\n%s%s", code, out, stderr)
	}
	if l.Sims["node1"].On() {
		t.Error("the timed-out job left its node on")
	}

	code, out, _ = runLabctl(t, vars, "submit", jobFile(t, "queued", `device = "node1"`, helloStep))
	id, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if code != 0 || err != nil {
		t.Errorf("submit without --wait: exit %d, printed %q, want the job ID", code, out)
	}
	if j := l.Wait(id); j.Outcome != "complete" || j.Submitter != "ci" {
		t.Errorf("job %d: %+v", id, j)
	}

	bad := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(bad, []byte("device = \"node1\"\nfrobs = 1\n"), 0o644)
	if code, _, stderr := runLabctl(t, vars, "submit", bad); code != 1 || !strings.Contains(stderr, "bad.toml:2: frobs") {
		t.Errorf("submit of an invalid file: exit %d %q", code, stderr)
	}
	if code, _, stderr := runLabctl(t, vars, "submit", jobFile(t, "nowhere", `device = "node9"`, helloStep)); code != 1 || !strings.Contains(stderr, `no device "node9"`) {
		t.Errorf("submit for a device the lab lacks: exit %d %q", code, stderr)
	}
	if code, _, _ := runLabctl(t, vars, "submit"); code != 64 {
		t.Errorf("submit without a file: exit %d, want 64", code)
	}
	if code, _, _ := runLabctl(t, vars, "submit", "--wait", "--timeout", "-1s", bad); code != 64 {
		t.Errorf("submit --timeout -1s: exit %d, want 64", code)
	}
}

// jobs, job, logs and cancel; power and bootdev refused during a job
// unless --force; devices and device; -o json on the listings.
func TestClientCommands(t *testing.T) {
	t.Parallel()
	l, vars := clientLab(t, 1)
	done := l.Submit(daemontest.JobText(t, "name = \"first\"\ndevice = \"node1\"\n"))
	l.Wait(done.ID)
	slow := "[[test]]\nname = \"slow\"\ncommands = [\"sleep 30\"]\n"
	running := l.Submit(strings.Replace(daemontest.JobText(t, "name = \"second\"\ndevice = \"node1\"\n"), "[[test]]\nname = \"hello\"\ncommands = [\"echo hello\"]\n", slow, 1))
	queued := l.Submit(daemontest.JobText(t, "name = \"third\"\ndevice = \"node1\"\npriority = \"low\"\n"))
	waitFor(t, "job 2 to run its test step", func() bool {
		j, _ := l.Daemon.Job(daemontest.Context(t), running.ID)
		return j.Phase == "test"
	})

	code, out, _ := runLabctl(t, vars, "jobs")
	if code != 0 || !strings.Contains(out, "ID") || !strings.Contains(out, "complete") || !strings.Contains(out, "test") || !strings.Contains(out, "queued") {
		t.Errorf("jobs: exit %d\n%s", code, out)
	}
	code, out, _ = runLabctl(t, vars, "jobs", "--state", "queued", "-o", "json")
	var list []labctl.Job
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0].ID != queued.ID {
		t.Errorf("jobs --state queued -o json: exit %d\n%s", code, out)
	}
	if code, _, _ := runLabctl(t, vars, "jobs", "--state", "lost"); code != 64 {
		t.Errorf("jobs --state lost: exit %d, want 64", code)
	}
	if code, out, _ := runLabctl(t, vars, "job", strconv.FormatInt(done.ID, 10)); code != 0 || !strings.Contains(out, "state:     complete") || !strings.Contains(out, "hello") {
		t.Errorf("job %d: exit %d\n%s", done.ID, code, out)
	}
	code, out, _ = runLabctl(t, vars, "job", strconv.FormatInt(done.ID, 10), "-o", "json")
	var j labctl.Job
	if code != 0 || json.Unmarshal([]byte(out), &j) != nil || j.Result == nil || j.Result.Steps[0].Name != "hello" {
		t.Errorf("job -o json (flag after the argument): exit %d\n%s", code, out)
	}
	if code, _, stderr := runLabctl(t, vars, "job", "999"); code != 1 || !strings.Contains(stderr, "999") {
		t.Errorf("job 999: exit %d %q", code, stderr)
	}
	if code, out, _ := runLabctl(t, vars, "logs", strconv.FormatInt(done.ID, 10)); code != 0 || !strings.Contains(out, "> echo hello") || strings.Contains(out, "\x1b") {
		t.Errorf("logs: exit %d\n%s", code, out)
	}
	if code, out, _ := runLabctl(t, vars, "logs", "--raw", strconv.FormatInt(done.ID, 10)); code != 0 || !strings.Contains(out, `\r\n`) {
		t.Errorf("logs --raw: exit %d\n%s", code, out)
	}

	if code, _, stderr := runLabctl(t, vars, "power", "node1", "off"); code != 1 || !strings.Contains(stderr, fmt.Sprintf("runs job %d", running.ID)) {
		t.Errorf("power off during a job: exit %d %q", code, stderr)
	}
	if code, _, _ := runLabctl(t, vars, "bootdev", "node1", "disk"); code != 1 {
		t.Errorf("bootdev during a job: exit %d", code)
	}
	if code, out, _ := runLabctl(t, vars, "power", "node1", "status"); code != 0 || out != "node1: on\n" {
		t.Errorf("power status during a job: exit %d %q", code, out)
	}
	if code, out, _ := runLabctl(t, vars, "devices"); code != 0 || !strings.Contains(out, "running") || !strings.Contains(out, fmt.Sprint(running.ID)) {
		t.Errorf("devices: exit %d\n%s", code, out)
	}
	if code, out, _ := runLabctl(t, vars, "device", "node1", "health"); code != 1 {
		t.Errorf("device health during a job: exit %d\n%s", code, out)
	}

	if code, out, _ := runLabctl(t, vars, "cancel", strconv.FormatInt(queued.ID, 10), strconv.FormatInt(running.ID, 10)); code != 0 || strings.Count(out, "canceled") < 2 {
		t.Errorf("cancel: exit %d\n%s", code, out)
	}
	if l.Sims["node1"].On() {
		t.Error("node1 on after its job was canceled")
	}
	if code, _, stderr := runLabctl(t, vars, "cancel", strconv.FormatInt(done.ID, 10)); code != 1 || !strings.Contains(stderr, "already ended") {
		t.Errorf("cancel of an ended job: exit %d %q", code, stderr)
	}
	if code, out, _ := runLabctl(t, vars, "logs", "-f", strconv.FormatInt(running.ID, 10)); code != 0 || !strings.Contains(out, "canceled") {
		t.Errorf("logs -f of a canceled job: exit %d\n%s", code, out)
	}
	l.WaitDevice("node1", labctl.DeviceIdle)
	if code, out, _ := runLabctl(t, vars, "power", "node1", "cycle"); code != 0 || out != "node1: on\n" {
		t.Errorf("power cycle: exit %d %q", code, out)
	}
	if code, out, _ := runLabctl(t, vars, "bootdev", "node1", "pxe"); code != 0 || !strings.Contains(out, "pxe") {
		t.Errorf("bootdev: exit %d %q", code, out)
	}
	code, out, _ = runLabctl(t, vars, "devices", "-o", "json")
	var devs []labctl.Device
	if code != 0 || json.Unmarshal([]byte(out), &devs) != nil || len(devs) != 1 || devs[0].Name != "node1" {
		t.Errorf("devices -o json: exit %d\n%s", code, out)
	}
	if code, out, _ := runLabctl(t, vars, "device", "node1", "health"); code != 0 || !strings.Contains(out, "health:  passed") {
		t.Errorf("device node1 health: exit %d\n%s", code, out)
	}
	for _, args := range [][]string{
		{"power", "node1"}, {"power", "node1", "explode"}, {"bootdev", "node1", "cdrom"}, {"device", "node1", "fix"},
		{"device", "node1", "online", "--reason", "x"}, {"logs", "abc"}, {"cancel"}, {"devices", "--power"}, {"jobs", "-o", "yaml"},
		{"power", "node1", "on", "--bogus"},
	} {
		if code, _, _ := runLabctl(t, vars, args...); code != 64 {
			t.Errorf("labctl %s: exit %d, want 64", strings.Join(args, " "), code)
		}
	}
}

// A submit --wait that loses the daemon (it restarts) picks the job up
// again when the daemon is back.
func TestSubmitWaitSurvivesRestart(t *testing.T) {
	t.Parallel()
	r := &gate{release: make(chan struct{})}
	l := daemontest.Start(t, daemontest.Options{Nodes: 1, Fake: true, API: true, Run: r.run})
	l.WaitIdle()
	first := l.Submit(daemontest.JobText(t, "name = \"cut\"\ndevice = \"node1\"\n"))
	second := l.Submit(daemontest.JobText(t, "name = \"waited\"\ndevice = \"node1\"\n"))
	env, stdout, stderr := envWith(map[string]string{"LABCTL_SERVER": l.URL, "LABCTL_TOKEN": daemontest.Token})
	client, err := connect(clientOptions{}, env)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		job labctl.Job
		err error
	}
	waited := make(chan result, 1)
	go func() {
		v := newFollowView(env.stdout, env.stderr, false)
		j, err := followJob(t.Context(), client, second.ID, true, v, env, time.Minute)
		waited <- result{j, err}
	}()
	time.Sleep(200 * time.Millisecond)
	// A restart on another port would strand the client: keep the port.
	port := strings.TrimPrefix(l.URL, "http://")
	l.Shutdown()
	l.StartAt(port)
	if j, _ := l.Daemon.Job(daemontest.Context(t), first.ID); j.Outcome != "incomplete" {
		t.Errorf("job %d after the shutdown: %+v", first.ID, j)
	}
	close(r.release)
	select {
	case res := <-waited:
		if res.err != nil || res.job.Outcome != "complete" {
			t.Errorf("wait across a restart: %+v, %v\n%s%s", res.job, res.err, stdout, stderr)
		}
		if !strings.Contains(stderr.String(), "lost the daemon") {
			t.Errorf("the wait did not say it lost the daemon: %q", stderr)
		}
	case <-time.After(time.Minute):
		t.Fatal("the wait did not end after the restart")
	}
}

// gate is a RunFunc whose jobs complete once release is closed (or end as
// the pipeline ends a job its context stopped).
type gate struct{ release chan struct{} }

func (g *gate) run(ctx context.Context, j dispatcher.Job) *results.Job {
	res := &results.Job{ID: j.ID, Name: j.Spec.Name, Device: j.Device, Started: time.Now()}
	select {
	case <-g.release:
		res.Outcome = "complete"
	case <-ctx.Done():
		end := dispatcher.Stopped(context.Cause(ctx))
		res.Outcome, res.Reason, res.Action = string(end.Outcome), end.Reason, end.Action
	}
	res.Finished = time.Now()
	return res
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
