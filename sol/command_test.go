package sol_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl/internal/testutil"
	"github.com/labctl/labctl/sol"
)

// The test binary doubles as the connection command: with SOL_TEST_HELPER
// set it runs helperMain instead of the tests.
func TestMain(m *testing.M) {
	switch os.Getenv("SOL_TEST_HELPER") {
	case "":
		os.Exit(m.Run())
	case "shell":
		helperShell()
	case "reset":
		helperReset()
	default:
		fmt.Fprintln(os.Stderr, "unknown helper", os.Getenv("SOL_TEST_HELPER"))
		os.Exit(2)
	}
}

// spawnGrandchild starts a grandchild that keeps the helper shell's
// terminal open and ignores SIGHUP, and prints its pid (or why it could
// not start, naming the shell command).
func spawnGrandchild(cmd string) bool {
	gc := exec.Command("sh", "-c", `trap "" HUP; exec sleep 300`)
	gc.Stdin, gc.Stdout, gc.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := gc.Start(); err != nil {
		fmt.Printf("%s: %v\r\n", cmd, err)
		return false
	}
	fmt.Printf("grandchild=%d\r\n", gc.Process.Pid)
	return true
}

// helperShell is a line-oriented shell on a raw terminal, like a node's
// shell behind a SOL client: it echoes what it reads ("\r" as "\r\n") and
// takes "\r" or "\n" as the end of a line.
func helperShell() {
	fmt.Printf("[SOL Session operational.  Use ~? for help]\r\n")
	fmt.Printf("pid=%d\r\nhelper$ ", os.Getpid())
	in := bufio.NewReader(os.Stdin)
	var line []byte
	for {
		b, err := in.ReadByte()
		if err != nil {
			os.Exit(0)
		}
		if b != '\r' && b != '\n' {
			line = append(line, b)
			os.Stdout.Write([]byte{b})
			continue
		}
		fmt.Printf("\r\n")
		text := string(line)
		line = line[:0]
		cmd, arg, _ := strings.Cut(strings.TrimSpace(text), " ")
		switch cmd {
		case "exit":
			n, _ := strconv.Atoi(arg)
			fmt.Printf("bye\r\n")
			os.Exit(n)
		case "bmc-close":
			// What ipmitool prints (on stderr) when the BMC ends the session.
			fmt.Fprintf(os.Stderr, "\r\nSOL session closed by BMC\r\n")
			os.Exit(1)
		case "pwlen":
			fmt.Printf("pwlen=%d\r\n", len(os.Getenv("IPMI_PASSWORD")))
		case "spawn":
			spawnGrandchild(cmd)
		case "orphan":
			// Leave the grandchild holding the terminal.
			if spawnGrandchild(cmd) {
				os.Exit(0)
			}
		default:
			fmt.Printf("got: %q\r\n", text)
		}
		fmt.Printf("helper$ ")
	}
}

// helperReset counts its runs in a file and fails if asked to.
func helperReset() {
	f, err := os.OpenFile(os.Getenv("SOL_TEST_RESET_LOG"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err == nil {
		fmt.Fprintf(f, "reset pwlen=%d\n", len(os.Getenv("IPMI_PASSWORD")))
		f.Close()
	}
	if os.Getenv("SOL_TEST_RESET_FAIL") != "" {
		fmt.Println("Error: unable to deactivate SOL payload")
		os.Exit(3)
	}
	os.Exit(0)
}

const testSecret = "pw-Zq8rT1vX"

// helperDialer runs this test binary as a shell in a pty.
func helperDialer(t *testing.T, extraEnv ...string) *sol.CommandDialer {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return &sol.CommandDialer{
		Argv: []string{exe, "-test.run=^$"},
		// GORACE: a race-enabled binary otherwise sleeps 1 s at exit.
		Env:  append([]string{"SOL_TEST_HELPER=shell", "IPMI_PASSWORD=" + testSecret, "GORACE=atexit_sleep_ms=0"}, extraEnv...),
		Name: "helper console",
	}
}

func dial(t *testing.T, d sol.Dialer) io.ReadWriteCloser {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := d.Dial(ctx)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	return st
}

// readUntil reads st until the output contains want, or fails.
func readUntil(t *testing.T, st io.Reader, want string) string {
	t.Helper()
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 1024)
		for {
			n, err := st.Read(buf)
			out.Write(buf[:n])
			if strings.Contains(out.String(), want) {
				done <- nil
				return
			}
			if err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("reading until %q: %v; got %q", want, err, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out reading until %q", want)
	}
	return out.String()
}

// readToEnd reads st until it fails and returns the error.
func readToEnd(t *testing.T, st io.Reader) error {
	_, err := readAll(t, st)
	return err
}

// readAll reads st until it fails and returns what it read and the error.
func readAll(t *testing.T, st io.Reader) (string, error) {
	t.Helper()
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 1024)
		for {
			n, err := st.Read(buf)
			out.Write(buf[:n])
			if err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(10 * time.Second):
		t.Fatal("stream did not end")
		return "", nil
	}
}

var pidRE = regexp.MustCompile(`pid=(\d+)`)

func TestCommandDialerChildExitEndsStream(t *testing.T) {
	checkGoroutines(t)
	st := dial(t, helperDialer(t))
	defer st.Close()
	readUntil(t, st, "helper$ ")
	if _, err := st.Write([]byte("exit 3\r")); err != nil {
		t.Fatal(err)
	}
	err := readToEnd(t, st)
	if !errors.Is(err, io.EOF) || errors.Is(err, sol.ErrClosedByBMC) {
		t.Fatalf("end error %v: want io.EOF, not ErrClosedByBMC", err)
	}
	for _, want := range []string{"exit status 3", "bye"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("end error %q lacks %q", err, want)
		}
	}
	// Reads after the end keep failing the same way.
	if _, err2 := st.Read(make([]byte, 10)); err2 == nil || err2.Error() != err.Error() {
		t.Errorf("second read: %v", err2)
	}
	if err := st.Close(); err != nil {
		t.Errorf("close after exit: %v", err)
	}
}

// The terminal is raw: bytes reach the command as they are (^C too, no
// SIGINT) and only the command's own echo comes back.
func TestCommandDialerRawTerminal(t *testing.T) {
	st := dial(t, helperDialer(t))
	defer st.Close()
	readUntil(t, st, "helper$ ")
	if _, err := st.Write([]byte("a\x03b\r")); err != nil {
		t.Fatal(err)
	}
	out := readUntil(t, st, "helper$ ")
	if want := "a\x03b\r\n" + `got: "a\x03b"` + "\r\nhelper$ "; out != want {
		t.Errorf("got %q, want %q", out, want)
	}
}

func TestCommandDialerClosedByBMC(t *testing.T) {
	st := dial(t, helperDialer(t))
	defer st.Close()
	readUntil(t, st, "helper$ ")
	if _, err := st.Write([]byte("bmc-close\r")); err != nil {
		t.Fatal(err)
	}
	if err := readToEnd(t, st); !errors.Is(err, sol.ErrClosedByBMC) {
		t.Fatalf("end error %v: want ErrClosedByBMC", err)
	}
}

func TestCommandDialerSecretInEnvOnly(t *testing.T) {
	d := helperDialer(t)
	st := dial(t, d)
	defer st.Close()
	out := readUntil(t, st, "helper$ ")
	m := pidRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no pid in %q", out)
	}
	cmdline, err := os.ReadFile("/proc/" + m[1] + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(cmdline, []byte(testSecret)) {
		t.Errorf("secret in the command line %q", cmdline)
	}
	if strings.Contains(d.Target(), testSecret) {
		t.Errorf("secret in the target %q", d.Target())
	}
	if _, err := st.Write([]byte("pwlen\r")); err != nil {
		t.Fatal(err)
	}
	readUntil(t, st, fmt.Sprintf("pwlen=%d", len(testSecret)))
}

func TestCommandDialerCloseKillsProcessGroup(t *testing.T) {
	checkGoroutines(t)
	st := dial(t, helperDialer(t))
	readUntil(t, st, "helper$ ")
	if _, err := st.Write([]byte("spawn\r")); err != nil {
		t.Fatal(err)
	}
	out := readUntil(t, st, "helper$ ")
	m := regexp.MustCompile(`grandchild=(\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no grandchild in %q", out)
	}
	gc, _ := strconv.Atoi(m[1])
	start := time.Now()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("close took %s", time.Since(start))
	waitFor(t, "the grandchild to go", 5*time.Second, func() bool { return !alive(gc) })
}

func TestCommandDialerOrphanHoldingTerminalDoesNotBlockRead(t *testing.T) {
	st := dial(t, helperDialer(t))
	defer st.Close()
	readUntil(t, st, "helper$ ")
	if _, err := st.Write([]byte("orphan\r")); err != nil {
		t.Fatal(err)
	}
	// The helper exits while its grandchild holds the terminal: the stream
	// must still end (the group is killed once the command has exited).
	out, err := readAll(t, st)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("end error %v", err)
	}
	m := regexp.MustCompile(`grandchild=(\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no grandchild in %q", out)
	}
	gc, _ := strconv.Atoi(m[1])
	waitFor(t, "the grandchild to go", 5*time.Second, func() bool { return !alive(gc) })
}

// alive says whether pid is a running (not zombie) process.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// "pid (comm) S ..." — the state follows the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

func TestCommandDialerCloseUnblocksRead(t *testing.T) {
	st := dial(t, helperDialer(t))
	readUntil(t, st, "helper$ ")
	done := make(chan error, 1)
	go func() {
		_, err := st.Read(make([]byte, 100))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, sol.ErrClosed) {
			t.Errorf("read after close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
	if _, err := st.Write([]byte("x")); !errors.Is(err, sol.ErrClosed) {
		t.Errorf("write after close: %v", err)
	}
}

func TestCommandDialerNoLeaks(t *testing.T) {
	checkGoroutines(t)
	d := helperDialer(t)
	// Warm up (first exec, poller start), then count.
	st := dial(t, d)
	readUntil(t, st, "helper$ ")
	st.Close()
	fds := openFDs(t)
	for range 10 {
		st := dial(t, d)
		readUntil(t, st, "helper$ ")
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		st := dial(t, d)
		readUntil(t, st, "helper$ ")
		st.Write([]byte("exit 0\r"))
		readToEnd(t, st)
		st.Close()
	}
	if after := openFDs(t); after > fds {
		t.Errorf("open file descriptors: %d before, %d after 15 sessions", fds, after)
	}
}

func TestCommandDialerReady(t *testing.T) {
	d := helperDialer(t)
	d.Ready = regexp.MustCompile(`SOL Session operational`)
	st := dial(t, d)
	defer st.Close()
	// What Dial read while waiting is still delivered.
	out := readUntil(t, st, "helper$ ")
	if !strings.HasPrefix(out, "[SOL Session operational") {
		t.Errorf("output starts %q", out)
	}

	// A command that exits before it is ready is a failed dial.
	d.Ready = regexp.MustCompile(`never printed`)
	d.Argv = []string{"sh", "-c", "echo 'Error: Unable to establish IPMI v2 / RMCP+ session'; exit 1"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := d.Dial(ctx)
	if err == nil || !strings.Contains(err.Error(), "Unable to establish") || !strings.Contains(err.Error(), "exit status 1") {
		t.Errorf("dial of a failing command: %v", err)
	}

	// A command that stays up but never gets ready is cut off with ctx.
	d.Argv = []string{"sleep", "300"}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	if _, err := d.Dial(ctx2); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("dial of a command that is never ready: %v", err)
	}
}

func TestCommandDialerReset(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "resets")
	var logBuf testutil.SyncBuffer
	d := helperDialer(t, "SOL_TEST_RESET_LOG="+logPath, "SOL_TEST_RESET_FAIL=1")
	d.Reset = []string{exe, "-test.run=^$"}
	d.Env = append(d.Env, "SOL_TEST_HELPER_RESET=1")
	d.Log = slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// The reset command is the same binary in "reset" mode.
	d.Reset = []string{"env", "SOL_TEST_HELPER=reset", exe, "-test.run=^$"}
	for range 2 {
		st := dial(t, d)
		readUntil(t, st, "helper$ ")
		st.Close()
	}
	got, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Repeat(fmt.Sprintf("reset pwlen=%d\n", len(testSecret)), 2); string(got) != want {
		t.Errorf("reset runs: %q, want %q", got, want)
	}
	log := logBuf.String()
	if !strings.Contains(log, "console reset command failed") || !strings.Contains(log, "unable to deactivate") {
		t.Errorf("failure not logged: %q", log)
	}
	if strings.Contains(log, testSecret) {
		t.Errorf("secret in the log: %q", log)
	}
}

// A session over CommandDialer: the child dies, the session marks the gap,
// dials a new child and the wait in progress completes.
func TestCommandSessionReconnectsAfterChildDies(t *testing.T) {
	checkGoroutines(t)
	var tr transcriptBuffer
	s := openSession(t, helperDialer(t), fastOptions(&tr))
	expect(t, s, 10*time.Second, `helper\$ `)
	w := claim(t, s, "job")
	typeText(t, w, "pwlen\r", sol.Pacing{Mode: sol.Echo})
	expect(t, s, 10*time.Second, `pwlen=\d+\n`)
	typeText(t, w, "bmc-close\r", sol.Pacing{Mode: sol.Echo})
	// The new child prints its banner and prompt again.
	m := expect(t, s, 10*time.Second, `(?s)SOL Session operational.*pid=(\d+)\nhelper\$ `)
	typeText(t, w, "exit 0\r", sol.Pacing{Mode: sol.Echo})
	expect(t, s, 10*time.Second, `(?s)pid=(\d+)\nhelper\$ `)
	_ = s.Close()
	text := tr.String()
	ev := strings.Join(tr.events(t), "\n")
	for _, want := range []string{
		"session lost: SOL session closed by BMC",
		"session lost: " + os.Args[0],
		"exited after",
		"reconnected after",
	} {
		if !strings.Contains(ev, want) {
			t.Errorf("events lack %q:\n%s", want, ev)
		}
	}
	if strings.Contains(text, testSecret) {
		t.Errorf("secret in the transcript")
	}
	t.Logf("second child pid %s", m.Groups[1])
}

func TestProgram(t *testing.T) {
	tests := []struct {
		argv []string
		name string
		args int
	}{
		{[]string{"ipmitool", "-I", "lanplus"}, "ipmitool", 2},
		{[]string{"/usr/bin/ipmitool", "sol", "activate"}, "ipmitool", 2},
		{[]string{"nice", "-n", "19", "ipmitool", "-e", "&"}, "ipmitool", 2},
		{[]string{"nice", "-5", "conserver"}, "conserver", 0},
		{[]string{"env", "-i", "A=b", "stdbuf", "-oL", "ipmitool"}, "ipmitool", 0},
		{[]string{"ionice", "-c", "3", "telnet", "host"}, "telnet", 1},
		{[]string{"nice"}, "", 0},
		{nil, "", 0},
	}
	for _, tt := range tests {
		name, args := sol.Program(tt.argv)
		if name != tt.name || len(args) != tt.args {
			t.Errorf("Program(%q) = %q, %q; want %q and %d arguments", tt.argv, name, args, tt.name, tt.args)
		}
	}
}
