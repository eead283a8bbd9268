package console_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/console"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/sol"
	"github.com/labctl/labctl/sol/soltest"
)

// newBroker starts a broker that keeps sessions, logging to a temporary
// directory, for a lab of one node, node1, whose console is c; it is
// closed when the test ends.
func newBroker(t *testing.T, cfg console.Config, c sol.Dialer) *console.Broker {
	t.Helper()
	cfg.Keep = true
	if cfg.LogDir == "" {
		cfg.LogDir = t.TempDir()
	}
	cfg.Lab = &devices.Lab{Config: devices.Config{Name: "test"}, Devices: []*devices.Device{{Name: "node1"}}}
	cfg.Nodes = fakeNodes{"node1": c}
	b := console.New(cfg)
	t.Cleanup(func() { b.Close() })
	return b
}

// fakeNodes are nodes with nothing but a console.
type fakeNodes map[string]sol.Dialer

func (f fakeNodes) Node(name string) (*labctl.Node, error) {
	d, ok := f[name]
	if !ok {
		return nil, fmt.Errorf("%w: no device %q", labctl.ErrNotFound, name)
	}
	return &labctl.Node{Console: d}, nil
}

// fakePower records the power requests it gets.
type fakePower struct {
	mu       sync.Mutex
	requests []string // "CALLER: NODE OP"
}

func (p *fakePower) Power(ctx context.Context, name string, req labctl.PowerRequest) (labctl.PowerResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests = append(p.requests, fmt.Sprintf("%s: %s %s", labctl.CallerFrom(ctx), name, req.Op))
	return labctl.PowerResponse{Node: name, On: true}, nil
}

func (p *fakePower) SetBootDevice(ctx context.Context, name string, req labctl.BootdevRequest) (labctl.BootdevResponse, error) {
	return labctl.BootdevResponse{}, errors.New("fake power: no boot devices")
}

func (p *fakePower) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.requests, "|")
}

func fakeConsole(t *testing.T) *soltest.Console {
	t.Helper()
	c := soltest.New(soltest.Config{Name: "fake console"})
	t.Cleanup(c.Close)
	return c
}

// viewerLog collects what a viewer is sent.
type viewerLog struct {
	t   *testing.T
	who string
	v   labctl.ConsoleAttachment

	mu      sync.Mutex
	out     bytes.Buffer
	notices []labctl.ConsoleNotice
	state   labctl.ConsoleState
	missed  int64
	err     error
	done    chan struct{}
}

// attach attaches a viewer to node1 and reads everything it is sent
// (unless stuck: then nothing until read is called).
func attach(t *testing.T, b *console.Broker, o labctl.ConsoleOptions, stuck bool) *viewerLog {
	t.Helper()
	v, err := b.AttachConsole(context.Background(), "node1", o)
	if err != nil {
		t.Fatal(err)
	}
	l := &viewerLog{t: t, who: o.Who, v: v, done: make(chan struct{})}
	t.Cleanup(func() { v.Close() })
	if !stuck {
		go l.read(context.Background())
	}
	return l
}

// read takes messages until ctx ends or the attachment does.
func (l *viewerLog) read(ctx context.Context) {
	defer close(l.done)
	for {
		m, err := l.v.Next(ctx)
		l.mu.Lock()
		if err != nil {
			l.err = err
			l.mu.Unlock()
			return
		}
		switch {
		case m.Output != nil:
			l.out.Write(m.Output)
		case m.Notice != nil:
			l.notices = append(l.notices, *m.Notice)
			l.missed += m.Notice.Missed
		case m.State != nil:
			l.state = *m.State
		}
		l.mu.Unlock()
	}
}

func (l *viewerLog) output() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.out.String()
}

func (l *viewerLog) noticeTexts() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, n := range l.notices {
		b.WriteString(n.Kind + ": " + n.Text + "\n")
	}
	return b.String()
}

// waitFor waits until cond holds for the viewer.
func (l *viewerLog) waitFor(what string, cond func() bool) {
	l.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			l.t.Fatalf("viewer %s: no %s within 10 s; notices:\n%s\noutput:\n%q", l.who, what, l.noticeTexts(), l.output())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (l *viewerLog) waitNotice(s string) {
	l.t.Helper()
	l.waitFor("notice "+s, func() bool { return strings.Contains(l.noticeTexts(), s) })
}

func (l *viewerLog) waitOutput(s string) {
	l.t.Helper()
	l.waitFor("output "+s, func() bool { return strings.Contains(l.output(), s) })
}

// waitFile waits until the file has s.
func waitFile(t *testing.T, path, s string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), s) {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has no %q within 10 s:\n%s", path, s, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The session stays open after its user is done, and everything the node
// prints goes to the console log, watched or not; a viewer attaching
// later gets the last lines replayed.
func TestBrokerKeepsAndLogs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c := fakeConsole(t)
	b := newBroker(t, console.Config{LogDir: dir}, c)
	s, release, err := b.AcquireFor(context.Background(), "node1", "job 1", c, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Print("SeaBIOS (version 1.16)\r\n")
	if _, err := s.Expect(context.Background(), regexp.MustCompile(`SeaBIOS`)); err != nil {
		t.Fatal(err)
	}
	release()
	c.Print("printed between jobs\r\nlogin: ")
	log := filepath.Join(dir, "node1", "console.log")
	text := waitFile(t, log, "printed between jobs")
	if !strings.Contains(text, " < SeaBIOS (version 1.16)\\r\\n") || !strings.Contains(text, " # job 1 holds the console") {
		t.Errorf("console log:\n%s", text)
	}
	if n := b.Open(); n != 1 || c.Dials() != 1 {
		t.Errorf("after the job: %d consoles open, %d dials; want the session kept", n, c.Dials())
	}
	v := attach(t, b, labctl.ConsoleOptions{Who: "alice", Replay: 1}, false)
	v.waitOutput("login: ")
	if got := v.output(); got != "printed between jobs\r\nlogin: " {
		t.Errorf("replay of 1 line: %q", got)
	}
	if info := b.Info("node1"); info.State != labctl.ConsoleOpen || info.Log != log || len(info.Viewers) != 1 || info.Writer != "alice" {
		t.Errorf("Info = %+v", info)
	}
}

// checkedConsole is a fake console whose streams answer Check as the
// test says, as native SOL streams do when the broker asks whether the
// BMC still has their payload active.
type checkedConsole struct {
	*soltest.Console
	mu     sync.Mutex
	answer error
	checks int
}

func (c *checkedConsole) Dial(ctx context.Context) (io.ReadWriteCloser, error) {
	s, err := c.Console.Dial(ctx)
	if err != nil {
		return nil, err
	}
	return checkedStream{s, c}, nil
}

func (c *checkedConsole) set(answer error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.answer = answer
}

type checkedStream struct {
	io.ReadWriteCloser
	c *checkedConsole
}

func (s checkedStream) Check(ctx context.Context) error {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	s.c.checks++
	return s.c.answer
}

// A job gets the open session if its stream vouches for it, a new one
// if the check fails; a console that cannot be asked (a connection
// command, as the plain fake is) gets a new one for every job.
func TestBrokerKeepsVouchedSession(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c := &checkedConsole{Console: fakeConsole(t)}
	b := newBroker(t, console.Config{LogDir: dir}, c)
	acquire := func(holder string) *sol.Session {
		t.Helper()
		s, release, err := b.AcquireFor(context.Background(), "node1", holder, c, 5*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", holder, err)
		}
		c.Print(holder + " was here\r\n")
		if _, err := s.Expect(context.Background(), regexp.MustCompile(holder+" was here")); err != nil {
			t.Fatalf("%s: %v", holder, err)
		}
		release()
		return s
	}
	first := acquire("job 1")
	if second := acquire("job 2"); second != first || c.Dials() != 1 || c.checks != 1 {
		t.Errorf("job 2 after a check that passed: same session %v, %d dials, %d checks; want the session kept, 1 dial, 1 check",
			second == first, c.Dials(), c.checks)
	}
	waitFile(t, filepath.Join(dir, "node1", "console.log"), "the session stays for job 2")

	c.set(errors.New("the payload is active on another session"))
	if third := acquire("job 3"); third == first || c.Dials() != 2 {
		t.Errorf("job 3 after a check that failed: same session %v, %d dials; want a new session", third == first, c.Dials())
	}

	plain := fakeConsole(t)
	pb := newBroker(t, console.Config{}, plain)
	for _, holder := range []string{"job 1", "job 2"} {
		_, release, err := pb.AcquireFor(context.Background(), "node1", holder, plain, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		release()
	}
	if plain.Dials() != 2 {
		t.Errorf("a console that cannot be checked: %d dials for 2 jobs, want a new session each", plain.Dials())
	}
}

// One writer: the first person, then whoever forces it; a job holding
// the console makes people read-only and refuses their typing until it
// ends; breaks and power cycles are the writer's.
func TestBrokerWriters(t *testing.T) {
	t.Parallel()
	c := fakeConsole(t)
	power := &fakePower{}
	b := newBroker(t, console.Config{Power: power}, c)
	alice := attach(t, b, labctl.ConsoleOptions{Who: "alice", Window: labctl.WindowSize{Rows: 50, Cols: 200}}, false)
	alice.waitNotice("you have write")
	alice.waitNotice("stty rows 50 cols 200")
	alice.waitFor("state open", func() bool { alice.mu.Lock(); defer alice.mu.Unlock(); return alice.state.State == labctl.ConsoleOpen })
	alice.v.Input([]byte("echo one\r"))
	alice.waitOutput("one\r\nfake# ")

	bob := attach(t, b, labctl.ConsoleOptions{Who: "bob"}, false)
	bob.waitNotice("read-only: alice has write (labctl console --force takes it)")
	alice.waitNotice("bob attached")
	bob.v.Input([]byte("echo bob\r"))
	bob.v.Input([]byte("\x1b[24;1R")) // his terminal answering: not typing, no notice
	bob.v.Break()
	bob.v.PowerCycle()
	bob.waitNotice("no power cycle: read-only")
	if strings.Count(bob.noticeTexts(), "refused: ") != 3 {
		t.Errorf("bob's refusals:\n%s", bob.noticeTexts())
	}
	alice.v.Input([]byte("echo two\r"))
	bob.waitOutput("two\r\n")
	if got := c.Lines(); strings.Join(got, "|") != "echo one|echo two" {
		t.Errorf("the console got %q: bob typed on alice's console", got)
	}

	carol := attach(t, b, labctl.ConsoleOptions{Who: "carol", Force: true}, false)
	carol.waitNotice("you have write")
	alice.waitNotice("carol took write: you are read-only now")
	bob.waitNotice("carol has write")
	carol.v.PowerCycle()
	alice.waitNotice("power cycle of node1 done")
	if got := power.String(); got != "carol (console): node1 cycle" {
		t.Errorf("power requests %q, want one cycle by carol", got)
	}
	carol.v.Break()
	carol.waitNotice("break not sent: ") // the fake console has no break

	// A job: everybody read-only, the job types, people see it.
	s, release, err := b.AcquireFor(context.Background(), "node1", "job 42", c, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	carol.waitNotice("job 42 started: it types on the console now; you are read-only until it ends")
	bob.waitNotice("job 42 started: it has write")
	w, err := s.Claim("job 42", true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Type(context.Background(), "echo from-the-job\r", sol.Pacing{Mode: sol.Echo, Settle: -1}); err != nil {
		t.Fatal(err)
	}
	carol.waitOutput("from-the-job\r\nfake# ")
	carol.v.Input([]byte("echo carol\r"))
	carol.waitNotice("read-only: job 42 is the writer; to type, cancel it first (labctl cancel 42)")
	dave := attach(t, b, labctl.ConsoleOptions{Who: "dave", Force: true}, false)
	dave.waitNotice("read-only: job 42 is the writer")
	carol.v.PowerCycle()
	carol.waitNotice("no power cycle: read-only: job 42")
	if info := b.Info("node1"); info.Holder != "job 42" || info.Writer != "job 42" {
		t.Errorf("during the job: holder %q, writer %q", info.Holder, info.Writer)
	}
	w.Release()
	release()
	bob.waitNotice("job 42 ended: the console is free")
	// Write is free: the first to type takes it.
	bob.v.Input([]byte("echo bob-now\r"))
	bob.waitNotice("you have write")
	bob.waitOutput("bob-now\r\nfake# ")
	carol.waitNotice("bob has write")
	bob.v.Close()
	carol.waitNotice("bob detached: write is free")
	if got := c.Lines(); strings.Join(got, "|") != "echo one|echo two|echo from-the-job|echo bob-now" {
		t.Errorf("the console got %q", got)
	}
}

// A viewer that never reads does not slow the node's console or a job on
// it: it loses output, is told how much, and the bytes it got plus those
// it missed are all there were.
func TestBrokerStuckViewer(t *testing.T) {
	t.Parallel()
	c := fakeConsole(t)
	b := newBroker(t, console.Config{ViewerBuffer: 16 << 10}, c)
	reader := attach(t, b, labctl.ConsoleOptions{Who: "reader", ReadOnly: true}, false)
	stuck := attach(t, b, labctl.ConsoleOptions{Who: "stuck", ReadOnly: true}, true)
	s, release, err := b.AcquireFor(context.Background(), "node1", "job 7", c, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	w, err := s.Claim("job 7", true)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := w.Type(context.Background(), "flood 4000\r", sol.Pacing{Mode: sol.Echo, Settle: -1}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := s.Expect(ctx, regexp.MustCompile(`flood line 004000 of 004000`)); err != nil {
		t.Fatalf("the job's wait with a stuck viewer: %v", err)
	}
	took := time.Since(start)
	// All of it, the prompt after the flood too (it may come in a chunk
	// of its own).
	reader.waitOutput("flood line 004000 of 004000: the quick brown fox jumps over the lazy dog\r\nfake# ")
	reader.mu.Lock()
	total := int64(reader.out.Len()) + reader.missed
	reader.mu.Unlock()

	// The stuck viewer reads what it was left, until that adds up (or for
	// 10 s), however slowly a busy machine hands it over.
	rctx, rcancel := context.WithCancel(context.Background())
	defer rcancel()
	go stuck.read(rctx)
	stuck.waitFor("its output and what it missed to add up", func() bool {
		stuck.mu.Lock()
		defer stuck.mu.Unlock()
		return int64(stuck.out.Len())+stuck.missed >= total
	})
	rcancel()
	<-stuck.done
	if stuck.missed == 0 || !strings.Contains(stuck.noticeTexts(), "bytes of console output (this viewer did not keep up)") {
		t.Errorf("the stuck viewer was not told it missed output:\n%s", stuck.noticeTexts())
	}
	if got := int64(len(stuck.output())) + stuck.missed; got != total {
		t.Errorf("stuck viewer: %d bytes + %d missed = %d, the reader had %d", len(stuck.output()), stuck.missed, got, total)
	}
	if info := b.Info("node1"); len(info.Viewers) != 2 || info.Viewers[1].Missed != stuck.missed {
		t.Errorf("Info viewers: %+v", info.Viewers)
	}
	t.Logf("~300 KB of output with a stuck viewer: the job saw it all in %s; the stuck viewer missed %d of %d bytes",
		took.Round(time.Millisecond), stuck.missed, total)
}

// A session the BMC ends is reconnected; viewers and the log see the gap
// and the console comes back.
func TestBrokerReconnects(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c := fakeConsole(t)
	b := newBroker(t, console.Config{LogDir: dir, Session: sol.Options{MinBackoff: 10 * time.Millisecond}}, c)
	v := attach(t, b, labctl.ConsoleOptions{Who: "alice"}, false)
	v.waitNotice("connected after")
	c.Kill()
	v.waitNotice("session lost: SOL session closed by BMC")
	v.waitNotice("reconnected after")
	v.v.Input([]byte("echo back\r"))
	v.waitOutput("back\r\nfake# ")
	text := waitFile(t, filepath.Join(dir, "node1", "console.log"), "reconnected after")
	if !strings.Contains(text, " ! session lost: SOL session closed by BMC") {
		t.Errorf("console log:\n%s", text)
	}
}

// A console that cannot be opened is retried with backoff, not in a tight
// loop; users waiting for it get the reason; it opens by itself once the
// BMC is back; a session that gives up reconnecting is opened again.
func TestBrokerRetriesWithBackoff(t *testing.T) {
	t.Parallel()
	c := fakeConsole(t)
	b := newBroker(t, console.Config{
		OpenTimeout: 150 * time.Millisecond, RetryMin: 100 * time.Millisecond, RetryMax: 400 * time.Millisecond,
		Session: sol.Options{GiveUpAfter: 100 * time.Millisecond, MinBackoff: 20 * time.Millisecond, MaxBackoff: 40 * time.Millisecond},
	}, c)
	c.SetDown(errors.New("BMC not answering"))
	s, release, err := b.Acquire(context.Background(), "node1", c, 2*time.Second)
	if err == nil || !strings.Contains(err.Error(), "BMC not answering") || s == nil || s.Err() == nil {
		t.Fatalf("Acquire of a dead console: %v (session err %v)", err, s.Err())
	}
	release()
	v := attach(t, b, labctl.ConsoleOptions{Who: "alice"}, false)
	v.waitNotice("console down: ")
	before := c.Dials()
	time.Sleep(2 * time.Second)
	// Each open makes ~4 dials in 150 ms, then waits 100, 200, 400, 400 ms.
	if n := c.Dials() - before; n > 40 {
		t.Errorf("%d dials in 2 s of a dead console: a tight loop", n)
	}
	if info := b.Info("node1"); info.State != labctl.ConsoleDown && info.State != labctl.ConsoleConnecting || (info.State == labctl.ConsoleDown && !strings.Contains(info.Error, "BMC not answering")) {
		t.Errorf("Info of a dead console: %+v", info)
	}
	c.SetDown(nil)
	v.waitFor("the console open again", func() bool { return b.Info("node1").State == labctl.ConsoleOpen })
	v.v.Input([]byte("echo up\r"))
	v.waitOutput("up\r\nfake# ")

	// Down for longer than the session waits: it gives up, the broker
	// opens a new one once the BMC is back.
	c.SetDown(errors.New("BMC rebooting"))
	c.Kill()
	v.waitNotice("giving up")
	c.SetDown(nil)
	v.waitFor("a new session", func() bool { return b.Info("node1").State == labctl.ConsoleOpen })
	v.v.Input([]byte("echo again\r"))
	v.waitOutput("again\r\nfake# ")
}

// Maintenance lets the session go when nobody uses it; Close ends every
// attachment after telling why; without Keep the last user closes it.
func TestBrokerParkCloseAndNoKeep(t *testing.T) {
	t.Parallel()
	c := fakeConsole(t)
	b := newBroker(t, console.Config{}, c)
	if err := b.Ensure(context.Background(), "node1", c, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	b.Park("node1", true)
	deadline := time.Now().Add(10 * time.Second)
	for b.Open() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("a parked console nobody uses stays open")
		}
		time.Sleep(5 * time.Millisecond)
	}
	v := attach(t, b, labctl.ConsoleOptions{Who: "admin"}, false)
	v.waitFor("the console open for a viewer", func() bool { return b.Open() == 1 })
	v.v.Close()
	if b.Open() != 0 {
		t.Error("a parked console stays open after its last viewer detached")
	}
	b.Park("node1", false)
	w := attach(t, b, labctl.ConsoleOptions{Who: "late"}, false)
	w.waitFor("open", func() bool { return b.Open() == 1 })
	b.Close()
	<-w.done
	if !errors.Is(w.err, labctl.ErrConsoleClosed) || !strings.Contains(w.noticeTexts(), "closed: the console broker stopped") {
		t.Errorf("a viewer when the broker closed: %v\n%s", w.err, w.noticeTexts())
	}
	if _, err := b.AttachConsole(context.Background(), "node1", labctl.ConsoleOptions{}); !errors.Is(err, labctl.ErrUnavailable) {
		t.Errorf("AttachConsole after Close: %v", err)
	}

	run := console.New(console.Config{})
	defer run.Close()
	c2 := fakeConsole(t)
	if _, release, err := run.Acquire(context.Background(), "node2", c2, 5*time.Second); err != nil {
		t.Fatal(err)
	} else {
		release()
	}
	if run.Open() != 0 {
		t.Error("without Keep the session outlives its last user")
	}
}

// The broker answers the console endpoints for the lab's nodes: every
// node listed, unknown ones not found, a node whose parts could not be
// made refused with the reason, the caller's token on the viewer.
func TestBrokerService(t *testing.T) {
	t.Parallel()
	c := fakeConsole(t)
	b := newBroker(t, console.Config{}, c)
	list, err := b.Consoles(context.Background())
	if err != nil || len(list) != 1 || list[0].Node != "node1" || list[0].State != labctl.ConsoleClosed {
		t.Errorf("Consoles = %+v, %v", list, err)
	}
	if _, err := b.Console(context.Background(), "node9"); !errors.Is(err, labctl.ErrNotFound) || !strings.Contains(err.Error(), `no device "node9" in lab test`) {
		t.Errorf("Console of an unknown node: %v", err)
	}
	if _, err := b.AttachConsole(context.Background(), "node9", labctl.ConsoleOptions{}); !errors.Is(err, labctl.ErrNotFound) {
		t.Errorf("AttachConsole to an unknown node: %v", err)
	}
	ctx := labctl.WithCaller(context.Background(), "ci-token")
	v, err := b.AttachConsole(ctx, "node1", labctl.ConsoleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	info, err := b.Console(ctx, "node1")
	if err != nil || len(info.Viewers) != 1 || info.Viewers[0].Who != "ci-token" || info.Viewers[0].Token != "ci-token" {
		t.Errorf("Console = %+v, %v; want the viewer named by its token", info, err)
	}
	l := &viewerLog{t: t, who: "ci-token", v: v, done: make(chan struct{})}
	go l.read(context.Background())
	l.waitNotice("you have write")
	v.PowerCycle()
	l.waitNotice("no power cycle: not available here")

	broken := console.New(console.Config{
		Lab:   &devices.Lab{Config: devices.Config{Name: "test"}, Devices: []*devices.Device{{Name: "node1"}}},
		Nodes: brokenNodes{},
	})
	defer broken.Close()
	if _, err := broken.AttachConsole(ctx, "node1", labctl.ConsoleOptions{}); !errors.Is(err, labctl.ErrDevice) {
		t.Errorf("AttachConsole to a node without parts: %v", err)
	}
	nobody := console.New(console.Config{})
	defer nobody.Close()
	if list, err := nobody.Consoles(ctx); len(list) != 0 || err != nil {
		t.Errorf("Consoles of a broker without a lab: %+v, %v", list, err)
	}
}

// brokenNodes are nodes whose parts cannot be made.
type brokenNodes struct{}

func (brokenNodes) Node(name string) (*labctl.Node, error) {
	return nil, fmt.Errorf("%w: %s: password file unreadable", labctl.ErrDevice, name)
}
