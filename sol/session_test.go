package sol_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labctl/labctl/sol"
	"github.com/labctl/labctl/sol/soltest"
)

func TestSessionExpectAndType(t *testing.T) {
	checkGoroutines(t)
	c := newConsole(t, soltest.Config{Name: "node1 console"})
	var tr transcriptBuffer
	s := openSession(t, c, fastOptions(&tr))
	c.Print("\x1b[2J\x1b[1;1HBooting...\r\n")
	c.Prompt()
	expect(t, s, 5*time.Second, `fake# $`)
	w := claim(t, s, "job 1")
	rep := typeText(t, w, "echo hello world\r", sol.Pacing{Mode: sol.Echo, Delay: 10 * time.Millisecond})
	m := expect(t, s, 5*time.Second, `(?m)^(hello \w+)\n`)
	if m.Groups[1] != "hello world" {
		t.Errorf("groups %q", m.Groups)
	}
	if !strings.Contains(m.Before, "echo hello world\n") {
		t.Errorf("Before = %q, want the echoed command", m.Before)
	}
	if got := c.Lines(); len(got) != 1 || got[0] != "echo hello world" {
		t.Errorf("console got lines %q", got)
	}
	if rep.Chars != 17 || rep.EchoFallbacks != 0 || rep.Mode != sol.Echo {
		t.Errorf("report %+v", rep)
	}
	t.Log(rep)
	_ = s.Close()
	text := tr.String()
	for _, want := range []string{
		" ! connecting to node1 console\n",
		" ! writer: job 1\n",
		" ! session closed\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("transcript lacks %q:\n%s", want, text)
		}
	}
	// Output and input as the records hold them, joined up: typing the
	// line takes 17 echo round trips, and a pause over the transcript's
	// 200 ms flush (a busy machine) splits it into two records.
	if got := tr.joined(t, sol.Read); !strings.Contains(got, "\x1b[2J\x1b[1;1HBooting...\r\n") {
		t.Errorf("transcript output lacks the boot line: %q\n%s", got, text)
	}
	if got := tr.joined(t, sol.Written); got != "echo hello world\r" {
		t.Errorf("transcript input %q, want %q:\n%s", got, "echo hello world\r", text)
	}
}

func TestExpectTimeoutSaysWhatAndShowsTail(t *testing.T) {
	c := newConsole(t, soltest.Config{Name: "node2 console"})
	s := openSession(t, c, fastOptions(nil))
	sub := s.Subscribe(0)
	defer sub.Close()
	c.Print(strings.Repeat("x", 300) + "\r\nlast words\r\n")
	// The output is in before the short wait starts (a subscriber gets it
	// after Expect can see it), however slowly the reader runs.
	seen(t, sub, "last words\r\n")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := s.Expect(ctx, regexp.MustCompile(`master# `), regexp.MustCompile(`Kernel panic`))
	if err == nil {
		t.Fatal("no error")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error does not wrap the deadline: %v", err)
	}
	msg := err.Error()
	for _, want := range []string{"node2 console", `"master# " or "Kernel panic"`, `last words\n"`, "waited "} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, strings.Repeat("x", 250)) {
		t.Errorf("error shows more than ~200 chars: %q", msg)
	}
}

func TestExpectNeedsPatterns(t *testing.T) {
	s := sol.NewSession(newConsole(t, soltest.Config{}), sol.Options{})
	defer s.Close()
	if _, err := s.Expect(context.Background()); err == nil {
		t.Error("Expect with no patterns: no error")
	}
}

func TestDiscard(t *testing.T) {
	c := newConsole(t, soltest.Config{})
	s := openSession(t, c, fastOptions(nil))
	c.Print("old prompt# ")
	expect(t, s, 5*time.Second, `old`)
	s.Discard()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.Expect(ctx, regexp.MustCompile(`prompt# `)); err == nil {
		t.Error("discarded output matched")
	}
}

func TestReconnectMarksGapAndWaitContinues(t *testing.T) {
	checkGoroutines(t)
	c := newConsole(t, soltest.Config{Name: "node3 bmc"})
	var tr transcriptBuffer
	s := openSession(t, c, fastOptions(&tr))
	sub := s.Subscribe(0)
	defer sub.Close()

	type result struct {
		m   sol.Match
		err error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		m, err := s.Expect(ctx, regexp.MustCompile(`back (\d+)`))
		done <- result{m, err}
	}()
	c.Print("before the gap\r\n")
	time.Sleep(20 * time.Millisecond)
	c.Kill()
	waitFor(t, "a second dial", 5*time.Second, func() bool { return c.Dials() == 2 })
	waitFor(t, "the reconnect event", 5*time.Second, func() bool {
		return strings.Contains(tr.String(), "! reconnected after")
	})
	c.Print("back 42\r\n")
	r := <-done
	if r.err != nil {
		t.Fatalf("expect across the reconnect: %v", r.err)
	}
	if r.m.Groups[1] != "42" || !strings.Contains(r.m.Before, "before the gap") {
		t.Errorf("match %+v", r.m)
	}
	ev := strings.Join(tr.events(t), "\n")
	if !strings.Contains(ev, "session lost: SOL session closed by BMC") {
		t.Errorf("events lack the loss with its reason:\n%s", ev)
	}
	// The subscriber saw the same gap.
	var seen []string
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		r, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("subscriber: %v (saw %q)", err, seen)
		}
		seen = append(seen, fmt.Sprintf("%c %s", r.Dir, r.Data))
		if r.Dir == sol.Read && strings.Contains(string(r.Data), "back 42") {
			break
		}
	}
	got := strings.Join(seen, "|")
	lost := strings.Index(got, "! session lost")
	back := strings.Index(got, "! reconnected after")
	if lost < 0 || back < lost || strings.Index(got, "< before the gap") > lost {
		t.Errorf("subscriber records out of order or missing: %q", got)
	}
}

func TestGiveUpNamesTarget(t *testing.T) {
	checkGoroutines(t)
	c := newConsole(t, soltest.Config{Name: "bmc 127.0.0.1:16230"})
	var tr transcriptBuffer
	opts := fastOptions(&tr)
	opts.GiveUpAfter = 300 * time.Millisecond
	s := openSession(t, c, opts)
	sub := s.Subscribe(0)
	c.SetDown(errors.New("no answer"))
	c.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := s.Expect(ctx, regexp.MustCompile(`never`))
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("expect after giving up: %v", err)
	}
	for _, want := range []string{"bmc 127.0.0.1:16230", "not back after", "no answer", `"never"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if s.Err() == nil {
		t.Error("Err() is nil after giving up")
	}
	w, err := s.Claim("job", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Type(ctx, "x", sol.Pacing{}); err == nil || !strings.Contains(err.Error(), "bmc 127.0.0.1:16230") {
		t.Errorf("type after giving up: %v", err)
	}
	var last sol.Record
	for {
		r, err := sub.Next(ctx)
		if err != nil {
			if !strings.Contains(err.Error(), "not back after") {
				t.Errorf("subscriber ended with %v", err)
			}
			break
		}
		last = r
	}
	if !strings.HasPrefix(string(last.Data), "giving up") {
		t.Errorf("last record before the end: %q", last.Data)
	}
	if !strings.Contains(tr.String(), "dial attempt 1 failed: bmc 127.0.0.1:16230: no answer") {
		t.Errorf("transcript does not show the failed attempts:\n%s", tr.String())
	}
}

func TestOpenFailsAfterGiveUp(t *testing.T) {
	c := newConsole(t, soltest.Config{Name: "dead bmc"})
	c.SetDown(errors.New("connection refused"))
	s := sol.NewSession(c, sol.Options{GiveUpAfter: 100 * time.Millisecond, MinBackoff: 10 * time.Millisecond})
	defer s.Close()
	err := s.Open(context.Background())
	if err == nil || !strings.Contains(err.Error(), "dead bmc") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("open: %v", err)
	}
}

// slowThenDeadDialer fails its first attempt at once and hangs in every
// later one until the caller gives up: a BMC that stopped answering.
type slowThenDeadDialer struct{ attempts atomic.Int32 }

func (d *slowThenDeadDialer) Target() string { return "hanging bmc" }

func (d *slowThenDeadDialer) Dial(ctx context.Context) (io.ReadWriteCloser, error) {
	if d.attempts.Add(1) == 1 {
		return nil, errors.New("BMC not answering")
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

// An open whose wait ends during an attempt says why the attempts before
// it failed, not only that time ran out.
func TestOpenTimeoutNamesEarlierFailure(t *testing.T) {
	s := sol.NewSession(&slowThenDeadDialer{}, sol.Options{MinBackoff: 10 * time.Millisecond})
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := s.Open(ctx)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "attempt 1 failed: BMC not answering") {
		t.Fatalf("open: %v", err)
	}
}

func TestSlowSubscriberNeverBlocksAndLearnsWhatItMissed(t *testing.T) {
	checkGoroutines(t)
	c := newConsole(t, soltest.Config{})
	s := openSession(t, c, fastOptions(nil))
	slow := s.Subscribe(4096)
	full := s.Subscribe(64 << 20)
	defer slow.Close()
	defer full.Close()

	const lines = 5000
	var sb strings.Builder
	for i := range lines {
		fmt.Fprintf(&sb, "line %05d the quick brown fox jumps over the lazy dog\r\n", i)
	}
	total := sb.Len()
	start := time.Now()
	for chunk := range strings.SplitSeq(sb.String(), "\r\n") {
		if chunk != "" {
			c.Print(chunk + "\r\n")
		}
	}
	c.Print("done# ")
	// Nobody reads slow; the session keeps up regardless.
	expect(t, s, 10*time.Second, `line 04999 .*\ndone# `)
	t.Logf("%d bytes through the session in %s with a stalled subscriber", total, time.Since(start))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sum := func(sub *sol.Subscription) (data int, missed int64) {
		for data+int(missed) < total+len("done# ") {
			r, err := sub.Next(ctx)
			if err != nil {
				t.Fatalf("next: %v (have %d bytes, %d missed)", err, data, missed)
			}
			switch r.Dir {
			case sol.Read:
				data += len(r.Data)
			case sol.Event:
				missed += r.Missed
			}
		}
		return data, missed
	}
	fd, fm := sum(full)
	sd, sm := sum(slow)
	if fm != 0 {
		t.Errorf("large subscriber missed %d bytes", fm)
	}
	if sm == 0 || sd > 4096 {
		t.Errorf("stalled subscriber: %d bytes delivered, %d missed; want <= 4096 and > 0", sd, sm)
	}
	if sd+int(sm) != fd {
		t.Errorf("delivered %d + missed %d != %d", sd, sm, fd)
	}
}

func TestClaimOneWriter(t *testing.T) {
	c := newConsole(t, soltest.Config{})
	var tr transcriptBuffer
	s := openSession(t, c, fastOptions(&tr))
	job, err := s.Claim("job 7", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim("alice", false); !errors.Is(err, sol.ErrBusy) || !strings.Contains(err.Error(), "job 7") {
		t.Errorf("second claim: %v", err)
	}
	alice, err := s.Claim("alice", true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := job.Write([]byte("x")); !errors.Is(err, sol.ErrNotWriter) || !strings.Contains(err.Error(), "alice") {
		t.Errorf("write after takeover: %v", err)
	}
	if _, err := job.Type(context.Background(), "x", sol.Pacing{Settle: -1}); !errors.Is(err, sol.ErrNotWriter) {
		t.Errorf("type after takeover: %v", err)
	}
	if _, err := alice.Write([]byte("echo hi\r")); err != nil {
		t.Fatal(err)
	}
	expect(t, s, 5*time.Second, `hi\n`)
	alice.Release()
	if _, err := alice.Write([]byte("x")); !errors.Is(err, sol.ErrNotWriter) {
		t.Errorf("write after release: %v", err)
	}
	if _, err := s.Claim("bob", false); err != nil {
		t.Errorf("claim after release: %v", err)
	}
	ev := strings.Join(tr.events(t), "\n")
	for _, want := range []string{"writer: job 7", "writer: alice (took over from job 7)", "writer alice released the console", "writer: bob"} {
		if !strings.Contains(ev, want) {
			t.Errorf("events lack %q:\n%s", want, ev)
		}
	}
}

func TestTypeWaitsForReconnect(t *testing.T) {
	c := newConsole(t, soltest.Config{})
	var tr transcriptBuffer
	s := openSession(t, c, fastOptions(&tr))
	w := claim(t, s, "job")
	c.SetDown(errors.New("busy"))
	c.Kill()
	waitFor(t, "the loss", 5*time.Second, func() bool { return strings.Contains(tr.String(), "session lost") })
	go func() {
		time.Sleep(100 * time.Millisecond)
		c.SetDown(nil)
	}()
	typeText(t, w, "echo again\r", sol.Pacing{Mode: sol.Echo, Settle: -1})
	expect(t, s, 5*time.Second, `again\n`)
}

func TestTypeStopsWhenStreamDrops(t *testing.T) {
	c := newConsole(t, soltest.Config{EchoDelay: 5 * time.Millisecond})
	s := openSession(t, c, fastOptions(nil))
	w := claim(t, s, "job")
	// The stream drops once typing is under way (its first character went
	// out), not after a guessed delay: a drop before Type starts is a
	// reconnect that Type waits out, and then types everything.
	sub := s.Subscribe(0)
	defer sub.Close()
	go func() {
		for {
			r, err := sub.Next(context.Background())
			if err != nil {
				return
			}
			if r.Dir == sol.Written {
				c.Kill()
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := w.Type(ctx, strings.Repeat("a", 200), sol.Pacing{Mode: sol.Fixed, Delay: 5 * time.Millisecond, Settle: -1})
	if err == nil || !strings.Contains(err.Error(), "lost while typing") || !strings.Contains(err.Error(), "of 200 bytes") {
		t.Fatalf("got %v", err)
	}
}

func TestCloseReleasesWaiters(t *testing.T) {
	checkGoroutines(t)
	c := newConsole(t, soltest.Config{})
	s := sol.NewSession(c, fastOptions(nil))
	if err := s.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	sub := s.Subscribe(0)
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, err := s.Expect(context.Background(), regexp.MustCompile(`never`))
		errs <- err
	}()
	go func() {
		defer wg.Done()
		for {
			if _, err := sub.Next(context.Background()); err != nil {
				errs <- err
				return
			}
		}
	}()
	time.Sleep(20 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, sol.ErrClosed) {
			t.Errorf("after Close: %v", err)
		}
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.Claim("x", false); !errors.Is(err, sol.ErrClosed) {
		t.Errorf("claim after close: %v", err)
	}
	if err := s.Open(context.Background()); err == nil {
		t.Error("Open after Close: no error")
	}
}

func TestStreamDialer(t *testing.T) {
	c := newConsole(t, soltest.Config{})
	calls := 0
	d := sol.StreamDialer("native sol 10.0.0.5:623", func(ctx context.Context) (io.ReadWriteCloser, error) {
		calls++
		return c.Dial(ctx)
	})
	if d.Target() != "native sol 10.0.0.5:623" {
		t.Errorf("target %q", d.Target())
	}
	s := openSession(t, d, fastOptions(nil))
	c.Print("hello\r\n")
	expect(t, s, 5*time.Second, `hello`)
	if calls != 1 {
		t.Errorf("dial calls %d", calls)
	}
}
