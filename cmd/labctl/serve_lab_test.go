package main

// The lab daemon against the simulated lab (real ipmi_sim, QEMU, ipmitool):
// `go test -run Lab ./cmd/labctl`. One test, two nodes, one `labctl serve`
// subprocess (built here, or $LABCTL_BIN), jobs submitted with the real
// labctl binary so that exit statuses are real. A job costs ~35 s under
// TCG, so each job shows several things.

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/api"
	"github.com/labctl/labctl/internal/testutil"
	"github.com/labctl/labctl/simlab"
	"github.com/labctl/labctl/simlab/simlabtest"
)

// labctlBinary is $LABCTL_BIN (`make test` sets bin/labctl) or labctl
// built into a temporary directory.
func labctlBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("LABCTL_BIN"); bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(abs); err != nil {
			t.Fatalf("LABCTL_BIN: %v", err)
		}
		return abs
	}
	bin := filepath.Join(t.TempDir(), "labctl")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build labctl: %v\n%s", err, out)
	}
	return bin
}

// serveProc is `labctl serve` as a subprocess.
type serveProc struct {
	t       *testing.T
	cmd     *exec.Cmd
	log     string
	exited  chan error
	running bool
}

// startServeProc starts labctl serve on the lab and waits until its API
// answers.
func startServeProc(t *testing.T, bin, labFile string, client *api.Client) *serveProc {
	t.Helper()
	p := spawnServe(t, bin, labFile)
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := client.Devices(ctx)
		cancel()
		if err == nil {
			return p
		}
		p.checkRunning()
		if time.Now().After(deadline) {
			t.Fatalf("labctl serve's API did not answer within a minute: %v", err)
		}
	}
}

// spawnServe starts labctl serve on the lab, logging to p.log; it is
// stopped when the test ends.
func spawnServe(t *testing.T, bin, labFile string) *serveProc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "serve.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--lab", labFile)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(cleanEnv(), "HOME="+t.TempDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serveProc{t: t, cmd: cmd, log: logPath, exited: make(chan error, 1), running: true}
	go func() {
		p.exited <- cmd.Wait()
		logf.Close()
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() || os.Getenv("LABCTL_SHOW_SERVE_LOG") == "1" {
			b, _ := os.ReadFile(logPath)
			t.Logf("labctl serve log (%s):\n%s", logPath, tail(string(b), 200))
		}
	})
	return p
}

// checkRunning fails the test if the daemon exited; it waits a little
// for that, as a pause between two looks at the daemon.
func (p *serveProc) checkRunning() {
	p.t.Helper()
	select {
	case err := <-p.exited:
		p.running = false
		b, _ := os.ReadFile(p.log)
		p.t.Fatalf("labctl serve exited: %v\n%s", err, b)
	case <-time.After(200 * time.Millisecond):
	}
}

// kill9 kills the daemon as a crash would.
func (p *serveProc) kill9() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		p.t.Fatal(err)
	}
	<-p.exited
	p.running = false
}

// stop ends the daemon with SIGTERM (it finalizes running jobs), then
// SIGKILL after 3 minutes.
func (p *serveProc) stop() {
	if !p.running {
		return
	}
	p.running = false
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.exited:
		if err != nil {
			p.t.Errorf("labctl serve after SIGTERM: %v", err)
		}
	case <-time.After(3 * time.Minute):
		p.t.Error("labctl serve did not stop within 3 minutes of SIGTERM")
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
}

// cleanEnv is the environment without labctl's own variables.
func cleanEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "LABCTL_") && !strings.HasPrefix(kv, "LABCTL_REQUIRE")
	})
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// clientProc is a labctl client command running as a subprocess.
type clientProc struct {
	cmd    *exec.Cmd
	out    *testutil.SyncBuffer
	exited chan struct{}
}

func startClient(t *testing.T, bin, server, token string, args ...string) *clientProc {
	t.Helper()
	var out testutil.SyncBuffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = append(cleanEnv(), "HOME="+t.TempDir(), "LABCTL_SERVER="+server, "LABCTL_TOKEN="+token)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &clientProc{cmd: cmd, out: &out, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// wait waits for the command's exit status.
func (p *clientProc) wait(t *testing.T, timeout time.Duration) (int, string) {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(timeout):
		t.Fatalf("labctl %s did not end within %s:\n%s", strings.Join(p.cmd.Args[1:], " "), timeout, p.out)
	}
	return p.cmd.ProcessState.ExitCode(), p.out.String()
}

func runClient(t *testing.T, bin, server, token string, args ...string) (int, string) {
	t.Helper()
	return startClient(t, bin, server, token, args...).wait(t, 5*time.Minute)
}

// labJobFile writes a job file for the simulated lab.
func labJobFile(t *testing.T, lab *simlab.Lab, name, placement, steps string) string {
	t.Helper()
	img := lab.Artifacts.Images
	return writeJobFile(t, name, fmt.Sprintf("name = %q\n%s\n[deploy]\nimage = %q\nsha256 = %q\n[boot]\npassword = \"test\"\n%s", name, placement, img.Gzip.Path, img.RawSHA256, steps))
}

// labAdminClient reads the lab's admin token (ci.token, written by simlab)
// and returns it with an API client of the lab's labctl serve.
func labAdminClient(t *testing.T, lab *simlab.Lab) (string, *api.Client) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(lab.Dir, "ci.token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(b))
	client, err := api.NewClient("http://"+lab.BootServer.ServerAddr, token, nil)
	if err != nil {
		t.Fatal(err)
	}
	return token, client
}

// appendFile appends text to a file the test wrote (a lab or device
// file gaining a table).
func appendFile(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString(text)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

// writeJobFile writes text as the job file NAME.toml in a fresh directory and
// returns its path.
func writeJobFile(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".toml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const labStep = "[[test]]\nname = \"kernel\"\ncommands = [\"uname -a\"]\n"

// waitJob waits until the job satisfies cond.
func waitJob(t *testing.T, c *api.Client, id int64, what string, timeout time.Duration, cond func(labctl.Job) bool) labctl.Job {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		j, err := c.Job(ctx, id)
		cancel()
		if err == nil && cond(j) {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %d: %s: not within %s (last: %+v, %v)", id, what, timeout, j, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// waitLabDevice waits until the device is in state.
func waitLabDevice(t *testing.T, c *api.Client, name, state string, timeout time.Duration) labctl.Device {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		d, err := c.Device(ctx, name)
		cancel()
		if err == nil && d.State == state {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("device %s: want %s within %s (last: %+v, %v)", name, state, timeout, d, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// jobLogHas reports whether the job's log has s.
func jobLogHas(c *api.Client, id int64, s string) bool {
	return strings.Contains(jobLogText(c, id), s)
}

func nodePower(t *testing.T, n *simlab.Node) bool {
	t.Helper()
	st, err := n.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Power
}

// poweredOffSince reports whether the node's BMC powered it off after t.
func poweredOffSince(t *testing.T, n *simlab.Node, since time.Time) bool {
	t.Helper()
	st, err := n.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range st.Chassis {
		if e.At.After(since) && e.Action == "power off" {
			return true
		}
	}
	return false
}

// maxOverlap is the largest number of jobs that ran at the same moment.
func maxOverlap(list []labctl.Job) int {
	most := 0
	for _, a := range list {
		n := 0
		for _, b := range list {
			if !b.Started.After(*a.Started) && b.Finished.After(*a.Started) {
				n++
			}
		}
		most = max(most, n)
	}
	return most
}

// killStrays ends `ipmitool sol activate` processes a killed daemon left
// for the lab's BMCs (each in its own process group, with the BMC port on
// its command line).
func killStrays(lab *simlab.Lab) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || filepath.Base(args[0]) != "ipmitool" {
			continue
		}
		for _, n := range lab.Nodes {
			if i := slices.Index(args, "-p"); i >= 0 && i+1 < len(args) && args[i+1] == strconv.Itoa(n.BMC.Port) {
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// TestLabServe: the daemon on two simulated nodes.
//   - a request without a token is refused;
//   - four jobs submitted at once run two at a time and all complete;
//     `submit --wait --junit` exits 0 and writes the report;
//   - a node whose BMC is silenced goes offline with the reason and gets no
//     jobs while the other node runs a failing job (`submit --wait` exits
//     1); `labctl device NODE health` brings it back once the BMC answers,
//     and the queued job runs on it at once;
//   - a job canceled mid-deploy ends canceled (`submit --wait` exits 3)
//     with its node off;
//   - kill -9 of the daemon mid-job, then a restart: the job is incomplete,
//     its node off, the device idle after its health check, the queued job
//     then runs, and the `submit --wait` that waited across it exits 2.
func TestLabServe(t *testing.T) {
	t.Parallel()
	lab := simlabtest.StartLab(t, 2, simlab.Options{})
	t.Cleanup(func() { killStrays(lab) })
	n1, n2 := lab.Nodes[0], lab.Nodes[1]
	bin := labctlBinary(t)
	token, client := labAdminClient(t, lab)
	server := client.Server()
	daemon := startServeProc(t, bin, lab.ConfigPath, client)
	start := time.Now()
	step := func(what string) { t.Logf("%5.1fs %s", time.Since(start).Seconds(), what) }

	resp, err := http.Get(server + "/api/v1/jobs")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /api/v1/jobs without a token: %s, want 401", resp.Status)
	}
	if code, out := runClient(t, bin, server, "not-the-token", "jobs"); code != 1 || !strings.Contains(out, "bearer token") {
		t.Errorf("labctl jobs with a wrong token: exit %d: %s", code, out)
	}
	waitLabDevice(t, client, n1.Name, labctl.DeviceIdle, 2*time.Minute)
	waitLabDevice(t, client, n2.Name, labctl.DeviceIdle, 2*time.Minute)
	step("both devices idle after their start-up health checks")

	// Four jobs at once: two at a time, all complete.
	junit := filepath.Join(t.TempDir(), "junit.xml")
	first := startClient(t, bin, server, token, "submit", "--wait", "--junit", junit, labJobFile(t, lab, "batch-0", `device_type = "simlab-qemu"`, labStep))
	ids := make(chan int64, 3)
	for i := 1; i < 4; i++ {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			path := labJobFile(t, lab, fmt.Sprintf("batch-%d", i), `device_type = "simlab-qemu"`+"\ntags = [\"simlab\"]", labStep)
			text, _ := os.ReadFile(path)
			j, err := client.Submit(ctx, labctl.SubmitRequest{File: path, Dir: filepath.Dir(path), Spec: string(text)})
			if err != nil {
				t.Errorf("submit batch-%d: %v", i, err)
			}
			ids <- j.ID
		}()
	}
	code, out := first.wait(t, 6*time.Minute)
	if code != 0 || !strings.Contains(out, "COMPLETE") {
		t.Errorf("labctl submit --wait --junit: exit %d\n%s", code, out)
	}
	var report struct {
		Tests    int `xml:"tests,attr"`
		Failures int `xml:"failures,attr"`
		Errors   int `xml:"errors,attr"`
	}
	if b, err := os.ReadFile(junit); err != nil || xml.Unmarshal(b, &report) != nil || report.Tests != 1 || report.Failures+report.Errors != 0 {
		t.Errorf("--junit: %+v, %v", report, err)
	}
	var batch []labctl.Job
	for range 3 {
		id := <-ids
		if id == 0 {
			t.FailNow()
		}
		batch = append(batch, waitJob(t, client, id, "finished", 6*time.Minute, func(j labctl.Job) bool { return j.State == labctl.JobFinished }))
	}
	first0, err := client.Job(context.Background(), waitForJobNamed(t, client, "batch-0"))
	if err != nil {
		t.Fatal(err)
	}
	batch = append(batch, first0)
	used := map[string]bool{}
	var latencies []time.Duration
	for _, j := range batch {
		if j.Outcome != "complete" {
			t.Errorf("job %d (%s) on %s: %s: %s", j.ID, j.Name, j.Device, j.Outcome, j.Reason)
		}
		used[j.Device] = true
		latencies = append(latencies, j.Started.Sub(j.Submitted))
	}
	slices.Sort(latencies)
	if n := maxOverlap(batch); n != 2 || len(used) != 2 {
		t.Errorf("the four jobs ran at most %d at a time on %v, want 2 at a time on both nodes", n, used)
	}
	step(fmt.Sprintf("four jobs complete, two at a time; queue-to-start of the two that found a free node: %s, %s", latencies[0], latencies[1]))

	// A silent BMC: offline with the reason, no jobs, back after a health check.
	ctx := context.Background()
	if err := n2.SilenceBMC(ctx, 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	code, out = runClient(t, bin, server, token, "device", n2.Name, "health")
	if code != 1 || !strings.Contains(out, "offline") || !strings.Contains(out, "FAILED") {
		t.Errorf("labctl device %s health with its BMC silent: exit %d\n%s", n2.Name, code, out)
	}
	dev := waitLabDevice(t, client, n2.Name, labctl.DeviceOffline, time.Minute)
	if !strings.Contains(dev.Reason, "BMC") {
		t.Errorf("offline without the reason: %+v", dev)
	}
	step("silent BMC: " + n2.Name + " offline: " + dev.Reason)
	failing := startClient(t, bin, server, token, "submit", "--wait", labJobFile(t, lab, "failing", `device_type = "simlab-qemu"`,
		"[[test]]\nname = \"broken\"\ncommands = [\"test -e /no/such/file\"]\n"))
	fj := waitJob(t, client, waitForJobNamed(t, client, "failing"), "running", time.Minute, func(j labctl.Job) bool { return j.State == labctl.JobRunning })
	if fj.Device != n1.Name {
		t.Errorf("with %s offline, the failing job runs on %s", n2.Name, fj.Device)
	}
	waitText := labJobFile(t, lab, "waits-for-a-node", `device_type = "simlab-qemu"`, labStep)
	text, _ := os.ReadFile(waitText)
	waiting, err := client.Submit(ctx, labctl.SubmitRequest{File: waitText, Dir: filepath.Dir(waitText), Spec: string(text)})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if j, _ := client.Job(ctx, waiting.ID); j.State != labctl.JobQueued {
		t.Errorf("with %s offline and %s busy, job %d is %s on %s, want queued", n2.Name, n1.Name, j.ID, j.State, j.Device)
	}
	if err := n2.SilenceBMC(ctx, 0); err != nil {
		t.Fatal(err)
	}
	code, out = runClient(t, bin, server, token, "device", n2.Name, "health")
	if code != 0 || !strings.Contains(out, "passed") {
		t.Errorf("labctl device %s health with its BMC back: exit %d\n%s", n2.Name, code, out)
	}
	j := waitJob(t, client, waiting.ID, "started", time.Minute, func(j labctl.Job) bool { return j.State != labctl.JobQueued })
	if j.Device != n2.Name {
		t.Errorf("the queued job went to %s, want %s", j.Device, n2.Name)
	}
	step(n2.Name + " back after `labctl device health`; the queued job runs on it")

	// Canceled mid-deploy: exit 3, node off.
	canceled := startClient(t, bin, server, token, "submit", "--wait", labJobFile(t, lab, "canceled", `device = "`+n1.Name+`"`, labStep))
	code, out = failing.wait(t, 6*time.Minute)
	if code != 1 || !strings.Contains(out, "FAILED") {
		t.Errorf("labctl submit --wait of a failing job: exit %d\n%s", code, out)
	}
	cj := waitForJobNamed(t, client, "canceled")
	waitJob(t, client, cj, "in its deploy, the master up", 4*time.Minute, func(j labctl.Job) bool {
		return j.Phase == "deploy" && jobLogHas(client, cj, "master prompt")
	})
	if code, out := runClient(t, bin, server, token, "cancel", strconv.FormatInt(cj, 10)); code != 0 || !strings.Contains(out, "canceled") {
		t.Errorf("labctl cancel: exit %d: %s", code, out)
	}
	if code, out := canceled.wait(t, 3*time.Minute); code != 3 {
		t.Errorf("labctl submit --wait of a job canceled mid-deploy: exit %d\n%s", code, out)
	}
	if nodePower(t, n1) {
		t.Errorf("%s is on after its job was canceled", n1.Name)
	}
	step("job canceled mid-deploy, " + n1.Name + " off")

	// kill -9 mid-job, restart.
	if j := waitJob(t, client, waiting.ID, "finished", 5*time.Minute, func(j labctl.Job) bool { return j.State == labctl.JobFinished }); j.Outcome != "complete" {
		t.Errorf("job %d: %s: %s", j.ID, j.Outcome, j.Reason)
	}
	crashed := startClient(t, bin, server, token, "submit", "--wait", labJobFile(t, lab, "crashed", `device = "`+n2.Name+`"`, labStep))
	crashedID := waitForJobNamed(t, client, "crashed")
	afterText := labJobFile(t, lab, "after-the-crash", `device = "`+n2.Name+`"`, labStep)
	text, _ = os.ReadFile(afterText)
	after, err := client.Submit(ctx, labctl.SubmitRequest{File: afterText, Dir: filepath.Dir(afterText), Spec: string(text)})
	if err != nil {
		t.Fatal(err)
	}
	waitJob(t, client, crashedID, "in its deploy, the master up", 4*time.Minute, func(j labctl.Job) bool {
		return j.Phase == "deploy" && jobLogHas(client, crashedID, "master prompt")
	})
	daemon.kill9()
	killed := time.Now()
	step("daemon killed with SIGKILL mid-deploy")
	if !nodePower(t, n2) {
		t.Errorf("%s is off right after the crash: the test did not catch the job mid-deploy", n2.Name)
	}
	daemon = startServeProc(t, bin, lab.ConfigPath, client)
	cj2, err := client.Job(ctx, crashedID)
	if err != nil || cj2.Outcome != "incomplete" || !strings.Contains(cj2.Reason, "daemon restarted") {
		t.Errorf("the job cut short by the crash: %+v, %v", cj2, err)
	}
	j = waitJob(t, client, after.ID, "started", 3*time.Minute, func(j labctl.Job) bool { return j.State != labctl.JobQueued })
	if nodeDev, _ := client.Device(ctx, n2.Name); nodeDev.Health == nil || !nodeDev.Health.OK || !strings.Contains(nodeDev.Health.Detail, "powered off") {
		t.Errorf("%s's recovery check: %+v", n2.Name, nodeDev.Health)
	}
	if !poweredOffSince(t, n2, killed) {
		t.Errorf("%s was not powered off after the restart (before the next job)", n2.Name)
	}
	step("restarted: the crashed job is incomplete, " + n2.Name + " powered off and health-checked, the queued job runs")
	// A job the crash cut short is the lab's failure: the lab runs it
	// again (retries = 1 by default), and submit --wait follows it there.
	if code, out := crashed.wait(t, 4*time.Minute); code != 0 || !strings.Contains(out, "daemon restarted") || !strings.Contains(out, "the lab runs it again as job") {
		t.Errorf("labctl submit --wait across the crash: exit %d, want 0 after the lab's retry\n%s", code, out)
	}
	if j := waitJob(t, client, after.ID, "finished", 5*time.Minute, func(j labctl.Job) bool { return j.State == labctl.JobFinished }); j.Outcome != "complete" {
		t.Errorf("the job queued before the crash: %s: %s", j.Outcome, j.Reason)
	}
	waitLabDevice(t, client, n2.Name, labctl.DeviceIdle, time.Minute)
	if nodePower(t, n2) {
		t.Errorf("%s is on after its last job", n2.Name)
	}
	step("the job queued before the crash completed")
}

// waitForJobNamed returns the ID of the newest job called name, once the
// daemon has it.
func waitForJobNamed(t *testing.T, c *api.Client, name string) int64 {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		list, err := c.Jobs(context.Background(), labctl.JobFilter{Limit: 20})
		for i := len(list) - 1; err == nil && i >= 0; i-- {
			if list[i].Name == name {
				return list[i].ID
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no job %s: %v", name, errors.Join(err, errors.New("not submitted")))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
