package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/daemon/daemontest"
	"github.com/labctl/labctl/internal/testutil"
)

// consoleUser is a labctl console run in-process: its keyboard is a pipe,
// its screen a buffer.
type consoleUser struct {
	t    *testing.T
	name string
	keys *io.PipeWriter
	out  *testutil.SyncBuffer
	done chan error
}

// attachConsole runs labctl console NODE args... as user.
func attachConsole(t *testing.T, vars map[string]string, user string, opts consoleOptions) *consoleUser {
	t.Helper()
	env := map[string]string{"USER": user}
	for k, v := range vars {
		env[k] = v
	}
	e, out, _ := envWith(env)
	r, w := io.Pipe()
	opts.in = r
	if opts.replay == 0 {
		opts.replay = 50
	}
	u := &consoleUser{t: t, name: user, keys: w, out: out, done: make(chan error, 1)}
	go func() { u.done <- runConsole(context.Background(), opts, e) }()
	t.Cleanup(func() {
		w.Close()
		select {
		case <-u.done:
		case <-time.After(20 * time.Second):
			t.Errorf("labctl console of %s did not end after its keyboard closed", user)
		}
	})
	return u
}

// typeKeys sends keys, as typed.
func (u *consoleUser) typeKeys(s string) {
	u.t.Helper()
	if _, err := u.keys.Write([]byte(s)); err != nil {
		u.t.Fatalf("%s types %q: %v", u.name, s, err)
	}
}

// waitFor waits until the screen shows s (count times), or fails.
func (u *consoleUser) waitFor(s string, count int) {
	u.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(u.out.String(), s) < count {
		if time.Now().After(deadline) {
			u.t.Fatalf("%s's screen does not show %q (%d times) within 30 s:\n%s", u.name, s, count, u.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// exit waits for labctl console to end.
func (u *consoleUser) exit() error {
	u.t.Helper()
	select {
	case err := <-u.done:
		u.done <- err // for the cleanup
		return err
	case <-time.After(30 * time.Second):
		u.t.Fatalf("%s's labctl console did not end:\n%s", u.name, u.out)
		return nil
	}
}

// labctl console through an in-process daemon and its API, on a simulated
// node (a real busybox shell):
//   - the first person gets write and types; the second is read-only, is
//     told so, sees the replay and the first one's output, and cannot
//     type; ~? says who writes; --force takes write and the first is told;
//   - when a job starts, the person with write is made read-only; people
//     see the job's commands; typing is refused "cancel it first"; ~.
//     detaches without disturbing the job;
//   - labctl consoles lists the viewers and who writes.
func TestConsoleThroughDaemon(t *testing.T) {
	t.Parallel()
	l, vars := clientLab(t, 1)
	keep := jobFile(t, "keep", "device = \"node1\"\nkeep_powered_on = true", helloStep)
	if code, out, _ := runLabctl(t, vars, "submit", "--wait", keep); code != 0 {
		t.Fatalf("a job that leaves node1 at its shell: exit %d\n%s", code, out)
	}

	alice := attachConsole(t, vars, "alice", consoleOptions{node: "node1"})
	alice.waitFor("[labctl] you have write", 1)
	alice.typeKeys("echo hi-$((6*7))\r")
	alice.waitFor("hi-42", 1)

	bob := attachConsole(t, vars, "bob", consoleOptions{node: "node1"})
	bob.waitFor("read-only: ci (alice@", 1)
	bob.waitFor("hi-42", 1) // replayed
	alice.waitFor("[labctl] ci (bob@", 1)
	bob.typeKeys("echo from-bob\r")
	bob.waitFor("[labctl] read-only: ci (alice@", 2)
	bob.typeKeys("~?")
	bob.waitFor("read-only: ci (alice@", 3)
	bob.waitFor("~. detach", 1)
	alice.typeKeys("echo two-$((1+1))\r")
	bob.waitFor("two-2", 1)
	if got := l.Sims["node1"]; got == nil {
		t.Fatal("no simulated node1")
	}
	if strings.Contains(alice.out.String(), "from-bob") {
		t.Errorf("bob typed on a console alice writes on:\n%s", alice.out)
	}

	code, out, _ := runLabctl(t, vars, "consoles")
	if code != 0 || !strings.Contains(out, "*ci (alice@") || !strings.Contains(out, "ci (bob@") || !strings.Contains(out, "open") {
		t.Errorf("labctl consoles: exit %d\n%s", code, out)
	}
	code, out, _ = runLabctl(t, vars, "consoles", "-o", "json")
	var list []labctl.ConsoleInfo
	if err := json.Unmarshal([]byte(out), &list); code != 0 || err != nil || len(list) != 1 || len(list[0].Viewers) != 2 ||
		!strings.HasPrefix(list[0].Writer, "ci (alice@") || list[0].Log == "" {
		t.Errorf("labctl consoles -o json: exit %d, %v\n%s", code, err, out)
	}

	bob.typeKeys("~.")
	if err := bob.exit(); err != nil {
		t.Errorf("~. ends labctl console with %v, want success", err)
	}
	bob.waitFor("[labctl] detached from node1", 1)
	carol := attachConsole(t, vars, "carol", consoleOptions{node: "node1", force: true})
	carol.waitFor("[labctl] you have write", 1)
	alice.waitFor("carol@", 1)
	alice.waitFor("took write: you are read-only now", 1)

	// A job takes write; carol sees its commands and cannot type.
	wgets := strings.Count(carol.out.String(), "wget -q -O - ")
	j := submitJob(t, l, jobFile(t, "during", `device = "node1"`, helloStep))
	carol.waitFor("job "+strconv.FormatInt(j, 10)+" started", 1)
	carol.waitFor("wget -q -O - ", wgets+1)
	carol.typeKeys("\recho carol\r")
	carol.waitFor("cancel it first (labctl cancel "+strconv.FormatInt(j, 10)+")", 1)
	carol.typeKeys("~.")
	if err := carol.exit(); err != nil {
		t.Errorf("carol's ~. during a job: %v", err)
	}
	if got := l.Wait(j); got.Outcome != "complete" {
		t.Errorf("the job watched and detached from: %s: %s", got.Outcome, got.Reason)
	}
	alice.waitFor("hello-42", 1)
	log, err := os.ReadFile(filepath.Join(l.Config.StateDir, "devices", "node1", "console.log"))
	if err != nil || !strings.Contains(string(log), "hi-42") || !strings.Contains(string(log), "carol@") ||
		strings.Contains(string(log), "> ") {
		t.Errorf("console log (%v): want the output and the broker's notes, no input:\n%s", err, log)
	}
}

// submitJob submits a job file to the lab and returns its ID.
func submitJob(t *testing.T, l *daemontest.Lab, path string) int64 {
	t.Helper()
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	j, err := l.Daemon.Submit(daemontest.Context(t), labctl.SubmitRequest{File: path, Dir: filepath.Dir(path), Spec: string(text)})
	if err != nil {
		t.Fatal(err)
	}
	return j.ID
}

// The command line: usage errors, an unknown node.
func TestConsoleUsage(t *testing.T) {
	_, vars := clientLab(t, 1)
	for _, args := range [][]string{
		{"console"},
		{"console", "a", "b"},
		{"console", "node1", "--force", "--read-only"},
		{"console", "--direct", "node1"},
		{"console", "node1", "--replay", "-1"},
		{"consoles", "extra"},
	} {
		if code, _, _ := runLabctl(t, vars, args...); code != exitUsage {
			t.Errorf("labctl %s: exit %d, want %d", strings.Join(args, " "), code, exitUsage)
		}
	}
	env, _, _ := envWith(vars)
	err := runConsole(context.Background(), consoleOptions{node: "nosuch", in: strings.NewReader("")}, env)
	if !errors.Is(err, labctl.ErrNotFound) {
		t.Errorf("console of an unknown node: %v, want not found", err)
	}
}
