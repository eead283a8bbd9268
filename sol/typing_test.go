package sol_test

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl/sol"
	"github.com/labctl/labctl/sol/soltest"
)

// lossyConsole models a BMC serial console that cannot keep up: it takes
// in one byte per millisecond, but every 8th byte takes 40 ms (the BMC is
// busy); a byte that arrives while an earlier one is still un-echoed, or
// less than 1 ms after the previous one, is dropped; more than 20 bytes in
// 10 ms close the session, as "SOL session closed by BMC".
//
// The smallest fixed delay that never loses a byte is therefore just over
// 40 ms, while echo pacing pays 1 ms for most bytes.
var lossyConsole = soltest.Config{
	Name:        "lossy console",
	EchoDelay:   time.Millisecond,
	SlowEvery:   8,
	SlowDelay:   40 * time.Millisecond,
	Lossy:       true,
	MaxUnechoed: 0,
	MinGap:      time.Millisecond,
	BurstLimit:  20,
	BurstWindow: 10 * time.Millisecond,
}

// typeOnLossy types text to a fresh lossy console and returns the report,
// the line the shell received and how many bytes it dropped.
func typeOnLossy(t *testing.T, text string, p sol.Pacing) (sol.TypeReport, string, int) {
	t.Helper()
	c := newConsole(t, lossyConsole)
	var tr transcriptBuffer
	s, w := atPrompt(t, c, fastOptions(&tr))
	rep := typeText(t, w, text, p)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := s.Expect(ctx, regexp.MustCompile(`\nfake# `)); err != nil {
		// The Enter itself was lost: send one slowly to end the line.
		time.Sleep(100 * time.Millisecond)
		if _, err := w.Write([]byte("\r")); err != nil {
			t.Fatal(err)
		}
		expect(t, s, 5*time.Second, `\nfake# `)
	}
	lines := c.Lines()
	if len(lines) != 1 {
		t.Fatalf("shell got %d lines %q, want 1", len(lines), lines)
	}
	if strings.Contains(tr.String(), "session lost") {
		t.Errorf("the console closed the session:\n%s", tr.String())
	}
	return rep, lines[0], c.Dropped()
}

func TestEchoPacingIsLosslessAndFasterThanLosslessFixed(t *testing.T) {
	if testing.Short() {
		t.Skip("types at 45 ms per character")
	}
	const cmd = "echo the-quick-brown-fox-jumps-0123456789"
	text := cmd + "\r"

	echo, got, dropped := typeOnLossy(t, text, sol.Pacing{Mode: sol.Echo, Delay: 45 * time.Millisecond})
	if got != cmd || dropped != 0 || echo.EchoFallbacks != 0 {
		t.Errorf("echo pacing: shell got %q (dropped %d, %d echo fallbacks), want %q", got, dropped, echo.EchoFallbacks, cmd)
	}
	fixed, got, dropped := typeOnLossy(t, text, sol.Pacing{Mode: sol.Fixed, Delay: 45 * time.Millisecond})
	if got != cmd || dropped != 0 {
		t.Errorf("fixed 45 ms (just over the slowest byte): shell got %q (dropped %d), want %q", got, dropped, cmd)
	}
	fast, got, dropped := typeOnLossy(t, text, sol.Pacing{Mode: sol.Fixed, Delay: 10 * time.Millisecond})
	if got == cmd || dropped == 0 {
		t.Errorf("fixed 10 ms: shell got %q, dropped %d; want losses", got, dropped)
	}
	t.Logf("echo:      %v", echo)
	t.Logf("fixed:     %v", fixed)
	t.Logf("fixed 10:  %v, shell got %q", fast, got)
	if echo.Duration*3 > fixed.Duration {
		t.Errorf("echo pacing took %s, not much faster than the lossless fixed delay's %s", echo.Duration, fixed.Duration)
	}
}

func TestUnpacedBurstClosesLossySession(t *testing.T) {
	c := newConsole(t, lossyConsole)
	var tr transcriptBuffer
	s := openSession(t, c, fastOptions(&tr))
	w := claim(t, s, "job")
	if _, err := w.Write([]byte("echo this is far too much input at once\r")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reconnect", 5*time.Second, func() bool {
		return strings.Contains(tr.String(), "! reconnected after")
	})
	if !strings.Contains(tr.String(), "session lost: SOL session closed by BMC") {
		t.Errorf("transcript:\n%s", tr.String())
	}
	// After the reconnect the console works again, at echo pace. The shell
	// kept the bytes it took in before the burst: end that line first.
	time.Sleep(50 * time.Millisecond)
	if _, err := w.Write([]byte("\r")); err != nil {
		t.Fatal(err)
	}
	expect(t, s, 5*time.Second, `fake# `)
	typeText(t, w, "echo ok\r", sol.Pacing{Mode: sol.Echo})
	expect(t, s, 5*time.Second, `\nok\n`)
}

func TestEchoFallsBackWhereNothingEchoes(t *testing.T) {
	c := newConsole(t, soltest.Config{EchoDelay: time.Millisecond})
	var tr transcriptBuffer
	s, w := atPrompt(t, c, fastOptions(&tr))
	typeText(t, w, "passwd\r", sol.Pacing{Mode: sol.Echo})
	expect(t, s, 5*time.Second, `Password: `)
	p := sol.Pacing{Mode: sol.Echo, Delay: 5 * time.Millisecond, EchoTimeout: 250 * time.Millisecond}
	rep := typeText(t, w, "hunter2\r", p)
	expect(t, s, 5*time.Second, `password set`)
	if rep.EchoFallbacks != 1 {
		t.Errorf("echo fallbacks %d, want 1 (the first character; then fixed)", rep.EchoFallbacks)
	}
	// One echo timeout, then 7 characters at 5 ms: well under 8 timeouts,
	// the least it takes if every character waits for its echo (a bound
	// the timers guarantee, not a guess at how fast a busy machine is).
	if took := rep.Duration; took >= 8*p.EchoTimeout {
		t.Errorf("typing took %s: did every character wait for the echo timeout?", took)
	}
	if got := c.Lines(); len(got) != 2 || got[1] != "hunter2" {
		t.Errorf("shell got %q", got)
	}
	t.Log(rep)
}

func TestNoEchoKeepsSecretOutOfTranscriptAndSubscribers(t *testing.T) {
	const secret = "s3cr3t-Pa55"
	c := newConsole(t, soltest.Config{})
	var tr transcriptBuffer
	s := openSession(t, c, fastOptions(&tr))
	sub := s.Subscribe(0)
	defer sub.Close()
	w := claim(t, s, "job")
	typeText(t, w, "passwd\r", sol.Pacing{Mode: sol.Echo})
	expect(t, s, 5*time.Second, `Password: `)
	rep := typeText(t, w, secret+"\r", sol.Pacing{Mode: sol.Echo, NoEcho: true, Delay: time.Millisecond})
	expect(t, s, 5*time.Second, `password set`)
	if rep.EchoFallbacks != 0 || rep.Chars != len(secret)+1 {
		t.Errorf("report %+v: NoEcho should type at the fixed delay without waiting for echoes", rep)
	}
	if got := c.Lines(); len(got) != 2 || got[1] != secret {
		t.Fatalf("shell got %q", got)
	}
	_ = s.Close()
	text := tr.String()
	if strings.Contains(text, secret) || strings.Contains(text, "s3cr") {
		t.Errorf("secret in transcript:\n%s", text)
	}
	if !strings.Contains(text, " > ********\n") {
		t.Errorf("transcript lacks the placeholder:\n%s", text)
	}
	var all strings.Builder
	for {
		r, err := sub.Next(context.Background())
		if err != nil {
			break
		}
		all.Write(r.Data)
	}
	if strings.Contains(all.String(), "s3cr") {
		t.Errorf("secret sent to a subscriber: %q", all.String())
	}
}

// The busybox quirk: a shell that sends ESC[6n a moment after its prompt
// loses what is typed before that. Type's settle step waits for the query.
func TestTypeWaitsForCursorQuery(t *testing.T) {
	// The query comes long enough after the prompt that typing without
	// settling (Expect, Claim, the first character) reaches the shell
	// before it also on a busy machine.
	cfg := soltest.Config{CursorQuery: 500 * time.Millisecond}
	run := func(settle time.Duration) (line string, swallowed int, rep sol.TypeReport) {
		c := newConsole(t, cfg)
		s, w := atPrompt(t, c, fastOptions(nil))
		rep = typeText(t, w, "echo x\r", sol.Pacing{Mode: sol.Echo, Settle: settle})
		expect(t, s, 5*time.Second, `\nfake# `)
		return c.Lines()[0], c.Swallowed(), rep
	}
	// A quiet time far longer than the query's delay: only the query can
	// end the wait before it (a busy machine cannot make the quiet win).
	line, swallowed, rep := run(time.Minute)
	if line != "echo x" || swallowed != 0 {
		t.Errorf("with settle: shell got %q, %d swallowed", line, swallowed)
	}
	if !rep.SettledOnQuery || rep.Settled >= time.Minute {
		t.Errorf("settled for %s (on query: %v): want the wait ended by the cursor query, not by the quiet time", rep.Settled, rep.SettledOnQuery)
	}
	line, swallowed, _ = run(-1)
	if line == "echo x" || swallowed == 0 {
		t.Errorf("without settle the quirk should bite: shell got %q, %d swallowed", line, swallowed)
	}
}

func TestTypeReportString(t *testing.T) {
	r := sol.TypeReport{Mode: sol.Echo, Delay: 100 * time.Millisecond, Chars: 86, Duration: 410 * time.Millisecond}
	if got, want := r.String(), "typed 86 chars in 0.41 s (echo), fixed 100 ms would take 8.6 s"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	r = sol.TypeReport{Mode: sol.Fixed, Delay: 10 * time.Millisecond, Chars: 3, Duration: 30 * time.Millisecond}
	if got, want := r.String(), "typed 3 chars in 0.03 s (fixed)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	r = sol.TypeReport{Mode: sol.Echo, Delay: 100 * time.Millisecond, Chars: 8, Duration: 1700 * time.Millisecond, EchoFallbacks: 1}
	if got, want := r.String(), "typed 8 chars in 1.7 s (echo, 1 without echo), fixed 100 ms would take 0.80 s"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestTypeMultiByteCharacterEchoes(t *testing.T) {
	c := newConsole(t, soltest.Config{EchoDelay: time.Millisecond})
	s := openSession(t, c, fastOptions(nil))
	w := claim(t, s, "job")
	// A generous echo timeout: a multi-byte character that never matches
	// its echo still shows as a fallback; a slow machine does not.
	rep := typeText(t, w, "echo café\r", sol.Pacing{Mode: sol.Echo, EchoTimeout: 5 * time.Second, Settle: -1})
	expect(t, s, 5*time.Second, `\ncafé\n`)
	if rep.EchoFallbacks != 0 || rep.Chars != 10 {
		t.Errorf("report %+v", rep)
	}
}

// A console that drops input arriving less than 10 ms after the previous
// byte, while it echoes in 1 ms: echo pacing alone loses characters, and
// StrictEcho says so instead of typing on; with MinGap it is lossless.
func TestEchoMinGapAndStrictEcho(t *testing.T) {
	cfg := soltest.Config{Name: "min-gap console", EchoDelay: time.Millisecond, Lossy: true, MaxUnechoed: 4, MinGap: 10 * time.Millisecond}
	text := "echo min-gap-0123456789\r"

	c := newConsole(t, cfg)
	_, w := atPrompt(t, c, fastOptions(nil))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := w.Type(ctx, text, sol.Pacing{Mode: sol.Echo, EchoTimeout: 100 * time.Millisecond, StrictEcho: true})
	if !errors.Is(err, sol.ErrNoEcho) {
		t.Fatalf("Type on a console faster than its min gap: %v, want ErrNoEcho", err)
	}

	c2 := newConsole(t, cfg)
	s2 := openSession(t, c2, fastOptions(nil))
	c2.Prompt()
	expect(t, s2, 5*time.Second, `fake# `)
	w2 := claim(t, s2, "job")
	// The gap is measured when Type sends and again when the console takes
	// the byte in: room for a thread preempted between the two.
	rep := typeText(t, w2, text, sol.Pacing{Mode: sol.Echo, EchoTimeout: 100 * time.Millisecond, StrictEcho: true, MinGap: 30 * time.Millisecond})
	expect(t, s2, 5*time.Second, `\nmin-gap-0123456789\n`)
	if c2.Dropped() != 0 || rep.EchoFallbacks != 0 {
		t.Errorf("with MinGap: dropped %d, %d echo fallbacks", c2.Dropped(), rep.EchoFallbacks)
	}
}

// A window lets several characters be on their way at once, never more
// than Window: a console that drops input while more than Window-1 bytes
// are un-echoed loses nothing.
func TestEchoWindowStaysWithinTheConsoleBuffer(t *testing.T) {
	const cmd = "echo windowed-typing-0123456789-abcdefghij"
	for _, window := range []int{1, 2, 4} {
		c := newConsole(t, soltest.Config{Name: "buffering console", EchoDelay: 2 * time.Millisecond, Lossy: true, MaxUnechoed: window - 1})
		s, w := atPrompt(t, c, fastOptions(nil))
		rep := typeText(t, w, cmd+"\r", sol.Pacing{Mode: sol.Echo, Window: window, EchoTimeout: 2 * time.Second, StrictEcho: true})
		expect(t, s, 5*time.Second, `\nwindowed-typing-0123456789-abcdefghij\n`)
		if c.Dropped() != 0 || rep.EchoFallbacks != 0 || rep.Chars != len(cmd)+1 {
			t.Errorf("window %d: dropped %d, %d echo fallbacks, %d chars typed", window, c.Dropped(), rep.EchoFallbacks, rep.Chars)
		}
		if got := c.Lines(); len(got) != 1 || got[0] != cmd {
			t.Errorf("window %d: shell got %q", window, got)
		}
		t.Logf("window %d: %v", window, rep)
	}
}

// The characters the window has room for go in one write, one SOL packet
// rather than one each, and never more than Window of them; a line end
// waits for every echo and goes alone.
func TestEchoWindowSendsWhatFitsInOneWrite(t *testing.T) {
	c := newConsole(t, soltest.Config{Name: "holding console", Hold: true})
	s, w := atPrompt(t, c, fastOptions(nil))
	const cmd = "echo batched-0123456789"
	done := typeAsync(w, cmd+"\r", sol.Pacing{Mode: sol.Echo, StrictEcho: true, Settle: -1, Window: 4,
		EchoTimeout: time.Hour})
	waitFor(t, "the first four characters to reach the console", 10*time.Second, func() bool { return c.Held() == 4 })
	if got := c.Writes(); got != 1 {
		t.Fatalf("the first 4 characters came in %d writes, want 1", got)
	}
	// Echo what is held, whenever there is some, until Type ends; the
	// console never holds more than the window.
	var r typeResult
	for finished := false; !finished; {
		select {
		case r = <-done:
			finished = true
		default:
			if held := c.Held(); held > 4 {
				t.Fatalf("the console holds %d characters, want at most 4", held)
			}
			c.Release(4)
			time.Sleep(time.Millisecond)
		}
	}
	if r.err != nil {
		t.Fatalf("Type: %v", r.err)
	}
	expect(t, s, 5*time.Second, `\nbatched-0123456789\n`)
	if r.rep.Chars != len(cmd)+1 {
		t.Errorf("typed %d characters, want %d", r.rep.Chars, len(cmd)+1)
	}
	if got := c.Lines(); len(got) != 1 || got[0] != cmd {
		t.Errorf("the shell got %q", got)
	}
	if writes := c.Writes(); writes >= len(cmd)+1 {
		t.Errorf("%d writes for %d characters: one each", writes, len(cmd)+1)
	}
	t.Logf("%d characters in %d writes", len(cmd)+1, c.Writes())
}

// When a console loses a character of a windowed line, the Enter is never
// sent: the node takes no damaged line, and StrictEcho says which character
// did not come back.
func TestEchoWindowNeverEndsADamagedLine(t *testing.T) {
	const cmd = "echo a-line-that-must-arrive-whole"
	// Takes one byte at a time and 50 ms for each: with 4 on their way,
	// the second arrives while the first is still un-echoed.
	c := newConsole(t, soltest.Config{Name: "one-byte console", EchoDelay: 50 * time.Millisecond, Lossy: true, MaxUnechoed: 0})
	s, w := atPrompt(t, c, fastOptions(nil))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := w.Type(ctx, cmd+"\r", sol.Pacing{Mode: sol.Echo, Window: 4, EchoTimeout: 300 * time.Millisecond, StrictEcho: true})
	switch {
	case err == nil:
		// Only if the machine was so slow that no two characters met.
		expect(t, s, 5*time.Second, `\na-line-that-must-arrive-whole\n`)
		if c.Dropped() != 0 {
			t.Errorf("Type succeeded, but the console dropped %d bytes", c.Dropped())
		}
	case errors.Is(err, sol.ErrNoEcho):
		if c.Dropped() == 0 {
			t.Errorf("ErrNoEcho, but the console dropped nothing: %v", err)
		}
		if rep.Chars > len(cmd) {
			t.Errorf("typed %d chars: the Enter went out after a lost character (%v)", rep.Chars, err)
		}
	default:
		t.Fatalf("Type: %v, want success or ErrNoEcho", err)
	}
	// Whatever happened, the shell never took a damaged line.
	for _, l := range c.Lines() {
		if l != cmd {
			t.Errorf("the shell took %q", l)
		}
	}
	t.Logf("%v: %v (dropped %d)", rep, err, c.Dropped())
}

// typeResult is what a Type run in the background returned.
type typeResult struct {
	rep sol.TypeReport
	err error
}

// typeAsync types text in the background (for 30 s at most), so that the
// test can play the console meanwhile; its result arrives on the channel.
func typeAsync(w *sol.Writer, text string, p sol.Pacing) <-chan typeResult {
	done := make(chan typeResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		rep, err := w.Type(ctx, text, p)
		done <- typeResult{rep, err}
	}()
	return done
}

// An echo that comes after the echo timeout but comes is late, not lost:
// StrictEcho types on (no ErrNoEcho, nothing typed twice), counts it, and
// waits longer for the echoes after it. The console holds every byte until
// the test has seen Type give up waiting the first time.
func TestLateEchoIsNotTakenForLost(t *testing.T) {
	const cmd = "echo late"
	c := newConsole(t, soltest.Config{Name: "slow console", Hold: true})
	var tr transcriptBuffer
	s, w := atPrompt(t, c, fastOptions(&tr))

	done := typeAsync(w, cmd+"\r", sol.Pacing{Mode: sol.Echo, StrictEcho: true, Settle: -1,
		EchoTimeout: time.Millisecond, LateEcho: time.Hour})
	gaveUp := func() bool {
		for _, e := range tr.events(t) {
			if strings.HasPrefix(e, "no echo of ") {
				return true
			}
		}
		return false
	}
	for i := range len(cmd) + 1 {
		waitFor(t, "a character to reach the console", 10*time.Second, func() bool { return c.Held() == 1 })
		if i == 0 {
			waitFor(t, "Type to miss the first echo", 10*time.Second, gaveUp)
		}
		c.Release(1)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("Type: %v", r.err)
	}
	if r.rep.LateEchoes < 1 || r.rep.EchoFallbacks != 0 || r.rep.Chars != len(cmd)+1 {
		t.Errorf("report %+v: want at least 1 late echo, no fallback, %d chars", r.rep, len(cmd)+1)
	}
	if r.rep.EchoTimeout <= time.Millisecond {
		t.Errorf("echo timeout after a late echo: %s, want it widened", r.rep.EchoTimeout)
	}
	expect(t, s, 5*time.Second, `\nlate\n`)
	if got := c.Lines(); len(got) != 1 || got[0] != cmd || c.Dropped() != 0 {
		t.Errorf("shell got %q, dropped %d", got, c.Dropped())
	}
}

// With several characters on their way, the echo of a later one arriving
// while an earlier one's is missing proves the earlier one lost: Type
// fails with ErrNoEcho at once instead of waiting for a late echo, and
// never sends the Enter.
func TestEchoOfALaterCharacterProvesTheLoss(t *testing.T) {
	c := newConsole(t, soltest.Config{Name: "lossy console", Hold: true})
	_, w := atPrompt(t, c, fastOptions(nil))

	done := typeAsync(w, "ab\r", sol.Pacing{Mode: sol.Echo, StrictEcho: true, Settle: -1, Window: 2,
		EchoTimeout: time.Millisecond, LateEcho: time.Hour})
	waitFor(t, "two characters to reach the console", 10*time.Second, func() bool { return c.Held() == 2 })
	c.DropHeld()
	c.Release(1)
	r := <-done
	if !errors.Is(r.err, sol.ErrNoEcho) || !strings.Contains(r.err.Error(), "a character typed after it did") {
		t.Fatalf("Type: %v, want ErrNoEcho proved by the later echo", r.err)
	}
	if r.rep.Chars != 2 || r.rep.LateEchoes != 0 {
		t.Errorf("report %+v: want 2 chars typed (no Enter), no late echo", r.rep)
	}
}
