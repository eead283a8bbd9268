package main

// labctl console as a person uses it, in tmux, against `labctl serve` on
// a simulated node (real ipmi_sim, QEMU, ipmitool): `go test -run
// LabConsole ./cmd/labctl`. One node, one job; the person parts run while
// the stuck viewer is stopped, so the whole test is one job long (~2 min).

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/api"
	"github.com/labctl/labctl/internal/testutil"
	"github.com/labctl/labctl/results"
	"github.com/labctl/labctl/simlab"
	"github.com/labctl/labctl/simlab/simlabtest"
	"github.com/labctl/labctl/sol"
)

// tmuxServer is a private tmux server for a test: its sessions run labctl
// console in 160x50 terminals; panes stay after their command exits.
type tmuxServer struct {
	t    *testing.T
	sock string
	conf string
	env  []string
	// more, if set, adds to what a failed wait shows (the console log's
	// last records: what reached the node, and when).
	more func() string
}

func newTmux(t *testing.T, env []string) *tmuxServer {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		testutil.SkipOrFail(t, fmt.Errorf("tmux is missing (make deps installs it): %w", err))
	}
	dir := t.TempDir()
	tm := &tmuxServer{t: t, sock: filepath.Join(dir, "tmux.sock"), conf: filepath.Join(dir, "tmux.conf"), env: env}
	if err := os.WriteFile(tm.conf, []byte("set -g remain-on-exit on\nset -g history-limit 300000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, name := range tm.sessions() {
				t.Logf("tmux pane %s at the end:\n%s", name, tail(tm.capture(name), 60))
			}
		}
		exec.Command("tmux", "-S", tm.sock, "kill-server").Run()
	})
	return tm
}

func (tm *tmuxServer) run(args ...string) (string, error) {
	cmd := exec.Command("tmux", append([]string{"-S", tm.sock, "-f", tm.conf}, args...)...)
	cmd.Env = tm.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (tm *tmuxServer) must(args ...string) string {
	tm.t.Helper()
	out, err := tm.run(args...)
	if err != nil {
		tm.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (tm *tmuxServer) sessions() []string {
	out, _ := tm.run("list-sessions", "-F", "#{session_name}")
	return strings.Fields(out)
}

// start runs command (a shell command line) as user in a new session.
func (tm *tmuxServer) start(name, user, command string) {
	tm.t.Helper()
	tm.must("new-session", "-d", "-s", name, "-x", "160", "-y", "50", "-e", "USER="+user, command)
}

// capture is the pane's text, history included, wrapped lines joined.
func (tm *tmuxServer) capture(name string) string {
	out, _ := tm.run("capture-pane", "-p", "-J", "-t", name, "-S", "-300000")
	return out
}

// waitFor waits until the pane shows s at least count times.
func (tm *tmuxServer) waitFor(name, s string, count int, timeout time.Duration) string {
	tm.t.Helper()
	text, ok := tm.shows(name, s, count, timeout)
	if !ok {
		extra := ""
		if tm.more != nil {
			extra = "\n" + tm.more()
		}
		tm.t.Fatalf("pane %s does not show %q (%d times) within %s:\n%s%s", name, s, count, timeout, tail(text, 40), extra)
	}
	return text
}

// shows reports whether the pane shows s at least count times within
// timeout, and what it shows.
func (tm *tmuxServer) shows(name, s string, count int, timeout time.Duration) (string, bool) {
	deadline := time.Now().Add(timeout)
	for {
		text := tm.capture(name)
		if strings.Count(text, s) >= count {
			return text, true
		}
		if time.Now().After(deadline) {
			return text, false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// keys types text literally; enter adds Enter.
func (tm *tmuxServer) keys(name, text string, enter bool) {
	tm.t.Helper()
	if text != "" {
		tm.must("send-keys", "-t", name, "-l", text)
	}
	if enter {
		tm.must("send-keys", "-t", name, "Enter")
	}
}

// pid is the pid of the pane's command.
func (tm *tmuxServer) pid(name string) int {
	tm.t.Helper()
	pid, err := strconv.Atoi(strings.TrimSpace(tm.must("display-message", "-p", "-t", name, "#{pane_pid}")))
	if err != nil {
		tm.t.Fatal(err)
	}
	return pid
}

// exited waits for the pane's labctl console to end and returns its exit
// status, as the pane's shell prints it ("labctl exited: N").
func (tm *tmuxServer) exited(name string, timeout time.Duration) int {
	tm.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if m := exitedLine.FindStringSubmatch(tm.capture(name)); m != nil {
			code, _ := strconv.Atoi(m[1])
			return code
		}
		if time.Now().After(deadline) {
			// The pane's processes (state, where they wait) and labctl's
			// goroutines (Go prints them on SIGQUIT), for the failure report.
			sid := strconv.Itoa(tm.pid(name))
			ps, _ := exec.Command("ps", "-s", sid, "-o", "pid,ppid,pgid,tpgid,stat,wchan:32,args").CombinedOutput()
			pids, _ := exec.Command("pgrep", "-s", sid, "-x", "labctl").Output()
			for _, p := range strings.Fields(string(pids)) {
				if pid, err := strconv.Atoi(p); err == nil {
					syscall.Kill(pid, syscall.SIGCONT) // a stopped process would not dump
					syscall.Kill(pid, syscall.SIGQUIT)
				}
			}
			time.Sleep(2 * time.Second)
			tm.t.Fatalf("labctl console in pane %s did not exit within %s; its processes:\n%s\nthe pane (goroutines after SIGQUIT at the end):\n%s",
				name, timeout, ps, tail(tm.capture(name), 300))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var exitedLine = regexp.MustCompile(`labctl exited: (\d+)`)

// jobLogText is the job's log as it is now.
func jobLogText(c *api.Client, id int64) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	log, err := c.JobLog(ctx, id)
	if err != nil {
		return ""
	}
	defer log.Close()
	b, _ := io.ReadAll(log)
	return string(b)
}

// stepOf returns the step named name of a finished job.
func stepOf(t *testing.T, j labctl.Job, name string) results.Step {
	t.Helper()
	if j.Result != nil {
		for _, s := range j.Result.Steps {
			if s.Name == name {
				return s
			}
		}
	}
	t.Fatalf("job %d has no step %s: %+v", j.ID, name, j.Result)
	return results.Step{}
}

// floodLines is how many lines each flood step prints: about 960 KB
// ("000001\r\n"...), well over what a stopped viewer's buffer in the daemon
// (256 KiB), the socket buffers (64 KiB each way, which the kernel doubles)
// and the client's own buffers hold together (490 KB was not always enough).
const floodLines = 120000

// TestLabConsole: labctl console in tmux against labctl serve on a
// simulated node.
//   - a job runs with nobody attached at first; a viewer attaching mid-job
//     is read-only ("cancel it first"), sees the job's typed commands and
//     the node's output live, cannot type, and ~. detaches without
//     disturbing the job;
//   - a viewer whose process is stopped for more than a minute does not
//     slow the job: its two identical output-heavy steps, one with the
//     viewer reading and one with it stopped, take the same time, and the
//     viewer is told what it missed when it runs again;
//   - after the job (the node kept on, at its shell): the first person gets
//     write, types `uname -a` and sees the answer; a second is read-only,
//     is refused typing and sees the same output; ~R asks first; ~B sends
//     ipmitool's break; killing the SOL session at the BMC shows the loss
//     and the reconnect on both screens and the console works again;
//   - the console log holds the node's whole boot from power-on, printed
//     before anyone attached, and the session's gap.
func TestLabConsole(t *testing.T) {
	t.Parallel()
	lab := simlabtest.StartLab(t, 1, simlab.Options{})
	t.Cleanup(func() { killStrays(lab) })
	node := lab.Nodes[0]
	bin := labctlBinary(t)
	tokenFile := filepath.Join(lab.Dir, "ci.token")
	token, client := labAdminClient(t, lab)
	server := client.Server()
	tm := newTmux(t, append(cleanEnv(), "HOME="+t.TempDir()))
	startServeProc(t, bin, lab.ConfigPath, client)
	start := time.Now()
	step := func(what string) { t.Logf("%5.1fs %s", time.Since(start).Seconds(), what) }
	// Each labctl console runs under a shell that prints its exit status:
	// tmux 3.3a sometimes never reaps a pane's own process (seen: labctl
	// exited after ~. and stayed a zombie, the pane never dead), and the
	// viewer stopped below must be a shell's child anyway (tmux continues
	// a stopped pane process).
	console := func(args string) string {
		return fmt.Sprintf(`%s console --server %s --token-file %s %s; echo "labctl exited: $?"; sleep 600`, bin, server, tokenFile, args)
	}
	waitLabDevice(t, client, node.Name, labctl.DeviceIdle, 2*time.Minute)
	step("node idle after its start-up health check")

	// A job, nobody attached.
	flood := fmt.Sprintf("seq -w 1 %d", floodLines)
	steps := fmt.Sprintf("[[test]]\nname = \"flood-1\"\ncommands = [%q]\n"+
		"[[test]]\nname = \"pause\"\ncommands = [\"sleep 6\"]\n"+
		"[[test]]\nname = \"flood-2\"\ncommands = [%q]\n", flood, flood)
	jobPath := labJobFile(t, lab, "watched", fmt.Sprintf("device = %q\nkeep_powered_on = true", node.Name), steps)
	text, _ := os.ReadFile(jobPath)
	job, err := client.Submit(context.Background(), labctl.SubmitRequest{File: jobPath, Dir: filepath.Dir(jobPath), Spec: string(text)})
	if err != nil {
		t.Fatal(err)
	}
	jid := strconv.FormatInt(job.ID, 10)
	waitJob(t, client, job.ID, "in its deploy", time.Minute, func(j labctl.Job) bool { return j.Phase == "deploy" })
	// The node's firmware prints with nobody watching: wait until the
	// console log has it (a busy machine starts QEMU slowly), not for a
	// guessed time.
	consoleLog := filepath.Join(filepath.Dir(lab.ConfigPath), "state", "devices", node.Name, "console.log")
	logDeadline := time.Now().Add(3 * time.Minute)
	for {
		b, _ := os.ReadFile(consoleLog)
		if strings.Contains(string(sol.Joined(b, sol.Read)), "SeaBIOS") {
			break
		}
		if time.Now().After(logDeadline) {
			t.Fatalf("the console log shows no SeaBIOS 3 minutes into job %s's deploy:\n%s", jid, tail(string(b), 20))
		}
		time.Sleep(200 * time.Millisecond)
	}
	step("job " + jid + " deploying; nobody attached")
	tm.more = func() string {
		b, _ := os.ReadFile(consoleLog)
		return "the console log's last records:\n" + tail(string(b), 30)
	}

	// A viewer mid-job: read-only, sees the job type, cannot type.
	tm.start("alice", "alice", console(node.Name))
	tm.waitFor("alice", "read-only: job "+jid+" is the writer; to type, cancel it first (labctl cancel "+jid+")", 1, 30*time.Second)
	tm.waitFor("alice", "wget -q -O - 'http", 1, 3*time.Minute)
	step("alice attached mid-job: read-only, sees the job's commands")
	tm.keys("alice", "echo alice-was-here", true)
	tm.waitFor("alice", "read-only: job "+jid+" is the writer", 2, 10*time.Second)
	tm.keys("alice", "~.", false)
	if code := tm.exited("alice", 10*time.Second); code != 0 {
		t.Errorf("labctl console after ~.: exit %d", code)
	}
	tm.waitFor("alice", "[labctl] detached from "+node.Name, 1, time.Second)
	step("alice typed (refused) and detached with ~.")

	// A viewer that stops reading: the test stops the shell's child, labctl.
	tm.start("bob", "bob", console(node.Name+" --read-only"))
	tm.waitFor("bob", "read-only: attached to watch", 1, 30*time.Second)
	waitJob(t, client, job.ID, "flood-1 done", 5*time.Minute, func(labctl.Job) bool {
		return strings.Contains(jobLogText(client, job.ID), "test flood-1: pass")
	})
	bobPid := childPid(t, tm.pid("bob"))
	if err := syscall.Kill(bobPid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	resumed := false
	resume := func() {
		if !resumed {
			syscall.Kill(bobPid, syscall.SIGCONT)
			resumed = true
		}
	}
	t.Cleanup(resume)
	step("bob's labctl console stopped (SIGSTOP) after flood-1")
	done := waitJob(t, client, job.ID, "finished", 5*time.Minute, func(j labctl.Job) bool { return j.State == labctl.JobFinished })
	if done.Outcome != "complete" {
		t.Fatalf("job %d with a stopped viewer: %s: %s\n%s", job.ID, done.Outcome, done.Reason, tail(jobLogText(client, job.ID), 30))
	}
	f1, f2 := stepOf(t, done, "flood-1"), stepOf(t, done, "flood-2")
	step(fmt.Sprintf("job complete with bob stopped for %s: flood-1 (bob reading) %s, flood-2 (bob stopped) %s; typing %s vs %s",
		time.Since(stopped).Round(time.Second), f1.Duration.Round(10*time.Millisecond), f2.Duration.Round(10*time.Millisecond),
		f1.TypingDuration.Round(time.Millisecond), f2.TypingDuration.Round(time.Millisecond)))
	if limit := f1.Duration*3/2 + 3*time.Second; f2.Duration > limit {
		t.Errorf("flood-2, with a stopped viewer, took %s; flood-1 with it reading took %s: the viewer slowed the job", f2.Duration, f1.Duration)
	}
	if strings.Contains(jobLogText(client, job.ID), "without echo") {
		t.Errorf("the job's typing fell back to the fixed delay (echoes late) while a viewer was stopped:\n%s", tail(jobLogText(client, job.ID), 30))
	}

	// People at the node's shell (kept on after the job).
	tm.start("carol", "carol", console(node.Name))
	tm.waitFor("carol", "[labctl] you have write", 1, 30*time.Second)
	tm.waitFor("carol", "stty rows 50 cols 160", 1, 5*time.Second)
	tm.keys("carol", "", true)
	tm.keys("carol", "uname -a", true)
	uname := regexp.MustCompile(`(?m)^Linux \S+ \d+\.\d+`)
	deadline := time.Now().Add(30 * time.Second)
	for !uname.MatchString(tm.capture("carol")) {
		if time.Now().After(deadline) {
			t.Fatalf("carol typed uname -a and does not see its answer:\n%s", tail(tm.capture("carol"), 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
	answer := uname.FindString(tm.capture("carol"))
	step("carol has write, typed uname -a: " + answer)
	tm.start("dave", "dave", console(node.Name))
	tm.waitFor("dave", "read-only: ci (carol@", 1, 30*time.Second)
	tm.waitFor("dave", answer, 1, 5*time.Second) // the replay
	tm.keys("dave", "echo dave-types", true)
	tm.waitFor("dave", "[labctl] read-only: ci (carol@", 2, 10*time.Second)
	tm.keys("carol", "echo same-$((6*7))", true)
	tm.waitFor("dave", "same-42", 1, 10*time.Second)
	if strings.Contains(tm.capture("carol"), "dave-types") {
		t.Errorf("dave's typing reached the node:\n%s", tail(tm.capture("carol"), 20))
	}
	step("dave is read-only, refused, sees carol's output")

	tm.keys("carol", "~R", false)
	tm.waitFor("carol", "power-cycle "+node.Name+"? [y/N]", 1, 5*time.Second)
	tm.keys("carol", "n", false)
	tm.waitFor("carol", "[labctl] not power-cycled", 1, 5*time.Second)
	tm.keys("carol", "~B", false)
	tm.waitFor("carol", "sent a break", 1, 10*time.Second)
	tm.waitFor("dave", "[send break]", 1, 10*time.Second) // ipmitool's own word for it
	step("~R asked and was declined; ~B sent ipmitool's break")

	// The BMC ends the SOL session.
	if err := node.KillSOL(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, who := range []string{"carol", "dave"} {
		tm.waitFor(who, "[labctl] session lost: SOL session closed by BMC", 1, 30*time.Second)
		tm.waitFor(who, "[labctl] reconnected after", 1, 30*time.Second)
	}
	tm.keys("carol", "", true)
	tm.keys("carol", "echo back-$((2+3))", true)
	tm.waitFor("carol", "back-5", 1, 20*time.Second)
	tm.waitFor("dave", "back-5", 1, 10*time.Second)
	// The break put nothing on the node's line: ipmi_sim sends it as
	// telnet's IAC BRK, which simlab's relay takes out (FFh F3h typed
	// before "echo" made it "-sh: \xff\xf3ck-5: not found").
	if b, _ := os.ReadFile(consoleLog); strings.Contains(string(sol.Joined(b, sol.Read)), "\xff\xf3") {
		t.Errorf("the node echoed the break's IAC BRK as characters:\n%s", tm.more())
	}
	step("SOL killed at the BMC: both saw the loss and the reconnect; the console works again")

	code, out := runClient(t, bin, server, token, "consoles")
	if code != 0 || !strings.Contains(out, "*ci (carol@") || !strings.Contains(out, "ci (dave@") || !strings.Contains(out, "ci (bob@") {
		t.Errorf("labctl consoles: exit %d\n%s", code, out)
	}

	// The stopped viewer runs again after more than a minute.
	if wait := time.Minute + 5*time.Second - time.Since(stopped); wait > 0 {
		time.Sleep(wait)
	}
	resume()
	text2 := tm.waitFor("bob", "bytes of console output (this viewer did not keep up)", 1, 30*time.Second)
	step("bob resumed after " + time.Since(stopped).Round(time.Second).String() + ": " + strings.TrimSpace(lineWith(text2, "missed")))

	tm.keys("carol", "~.", false)
	tm.keys("dave", "~.", false)
	tm.keys("bob", "~.", false)
	for _, who := range []string{"carol", "dave", "bob"} {
		if code := tm.exited(who, 20*time.Second); code != 0 {
			t.Errorf("%s's labctl console after ~.: exit %d", who, code)
		}
	}

	// The console log: the whole boot, before anyone attached, and the gap.
	log, err := os.ReadFile(filepath.Join(filepath.Dir(lab.ConfigPath), "state", "devices", node.Name, "console.log"))
	if err != nil {
		t.Fatal(err)
	}
	// A record holds what came in one burst: a word the BIOS wrote slowly
	// may span two, so the words are looked for in the output joined up.
	var output strings.Builder
	var firstBoot, aliceAttached, lost time.Time
	for _, line := range strings.Split(string(log), "\n") {
		r, err := sol.ParseRecord([]byte(line))
		if err != nil {
			continue
		}
		text := string(r.Data)
		if r.Dir == sol.Read {
			output.Write(r.Data)
		}
		switch {
		case firstBoot.IsZero() && r.Dir == sol.Read && strings.Contains(output.String(), "SeaBIOS"):
			firstBoot = r.Time
		case aliceAttached.IsZero() && r.Dir == sol.Note && strings.HasPrefix(text, "ci (alice@"):
			aliceAttached = r.Time
		case lost.IsZero() && r.Dir == sol.Event && strings.Contains(text, "session lost: SOL session closed by BMC"):
			lost = r.Time
		}
	}
	// The words as the node showed them: the firmware mirrors its screen
	// to the serial port with cursor moves and colours between pieces of
	// a line, so escape sequences are taken out first, and white space:
	// the mirror sometimes puts a line end inside a word, where a cursor
	// move takes it back (a make test run logged PXELINUX's banner as
	// "P", a line end, "XELINUX").
	shown := sol.Plain([]byte(output.String()))
	unspaced := strings.Join(strings.Fields(shown), "")
	for _, want := range []string{"iPXE", "PXELINUX", "simlab master ready", "master# ", "simlab test OS booted from disk", "login: "} {
		if !strings.Contains(unspaced, strings.Join(strings.Fields(want), "")) {
			t.Errorf("the console log's output has no %q; from power-on it shows:\n%q", want, shown[:min(len(shown), 3000)])
		}
	}
	if firstBoot.IsZero() || aliceAttached.IsZero() || !firstBoot.Before(aliceAttached) || lost.IsZero() {
		t.Errorf("console log: the boot at %s, alice attached at %s, the SOL kill at %s: want the boot logged before anyone attached, and the gap",
			firstBoot, aliceAttached, lost)
	}
	step(fmt.Sprintf("console log: %d KB, boot from %s (%.0fs before alice attached)", len(log)>>10,
		firstBoot.Format("15:04:05.000"), aliceAttached.Sub(firstBoot).Seconds()))
}

// childPid is the pid of parent's only child process.
func childPid(t *testing.T, parent int) int {
	t.Helper()
	out, err := exec.Command("pgrep", "-P", strconv.Itoa(parent)).Output()
	pids := strings.Fields(string(out))
	if err != nil || len(pids) != 1 {
		t.Fatalf("the child of process %d: %q, %v", parent, out, err)
	}
	pid, err := strconv.Atoi(pids[0])
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// lineWith is the first line of text with s.
func lineWith(text, s string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}
