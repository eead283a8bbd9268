package sol

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// PacingMode says how Type spaces characters.
type PacingMode int

const (
	// Fixed waits Pacing.Delay after every character, as LAVA does with
	// bootloader_serial_delay_ms and test_shell_serial_delay_ms.
	Fixed PacingMode = iota
	// Echo sends the next character as soon as the previous one has come
	// back in the output. A character that does not come back within
	// Pacing.EchoTimeout (a password prompt, a console that does not echo)
	// switches the rest of that text to Fixed.
	Echo
)

func (m PacingMode) String() string {
	switch m {
	case Fixed:
		return "fixed"
	case Echo:
		return "echo"
	}
	return fmt.Sprintf("PacingMode(%d)", int(m))
}

// Pacing says how to type a text.
type Pacing struct {
	Mode PacingMode
	// Delay is the wait after each character in Fixed mode, and in Echo
	// mode for characters that are not expected to echo (control
	// characters, TAB) and after an echo timeout.
	Delay time.Duration
	// EchoTimeout is how long Echo waits for a character to come back;
	// 0 means 1 s.
	EchoTimeout time.Duration
	// NoEcho marks a secret (a password): it is typed at the fixed delay,
	// and the transcript and subscribers see "********" instead of it.
	NoEcho bool
	// MinGap (Echo) is the least time between sending two characters, even
	// when the first has already echoed: some consoles drop input that
	// comes faster than they take it, however promptly they echo.
	MinGap time.Duration
	// Window (Echo) is how many characters may be on their way at once:
	// sent, their echo not yet seen. 0 or 1 sends one at a time; more
	// saves the round trip per character on a console that buffers its
	// input; the characters the window has room for at a time go in one
	// write (one SOL packet), unless MinGap spaces them. A line end ("\r",
	// "\n") and a character that does not echo wait for every earlier
	// echo, so a line that lost a character is never ended: the loss shows
	// before the node takes the line.
	Window int
	// StrictEcho (Echo) makes a character that does not echo within
	// EchoTimeout end Type with an error wrapping ErrNoEcho, instead of
	// typing on at the fixed delay. A shell echoes what it reads: no echo
	// means the character was lost, the line is wrong, and the caller
	// should abandon it and type it again (more slowly).
	StrictEcho bool
	// LateEcho (StrictEcho) is how much longer than EchoTimeout Type waits
	// for a missing echo before taking the character for lost; 0 means
	// twice EchoTimeout. An echo that turns up in that time was late, not
	// lost (a busy BMC or network): typing goes on, and the echo timeout
	// for the rest of the text becomes twice that echo's delay. The echo
	// of a character sent after the missing one (Window > 1) coming first
	// proves it lost at once.
	LateEcho time.Duration
	// Settle: before the first character Type waits until the console
	// output has been quiet this long, or ends with a cursor position query
	// (ESC [ 6 n), which busybox's shell sends right after its prompt once
	// it is reading input. Characters typed while a shell is still setting
	// up its line editor can be lost (simlab saw "echo" arrive as "cho").
	// The wait is capped at ten times Settle. 0 means 100 ms; negative
	// means do not wait.
	Settle time.Duration
}

func (p Pacing) withDefaults() Pacing {
	if p.EchoTimeout <= 0 {
		p.EchoTimeout = time.Second
	}
	if p.Settle == 0 {
		p.Settle = 100 * time.Millisecond
	}
	if p.LateEcho <= 0 {
		p.LateEcho = 2 * p.EchoTimeout
	}
	if p.Delay < 0 {
		p.Delay = 0
	}
	return p
}

// TypeReport says what typing a text cost.
type TypeReport struct {
	Mode  PacingMode    // as asked (Echo with NoEcho types Fixed)
	Delay time.Duration // the fixed delay, for comparison
	Chars int           // characters sent (a multi-byte UTF-8 character counts once)
	// Duration is from the first character to the end of the last wait.
	Duration time.Duration
	// Settled is how long Type waited for the console before typing.
	Settled time.Duration
	// SettledOnQuery says the wait ended with the shell's cursor position
	// query rather than with quiet output.
	SettledOnQuery bool
	// EchoFallbacks counts characters that did not echo within the echo
	// timeout (the text went on at the fixed delay after the first).
	EchoFallbacks int
	// LateEchoes counts echoes that came after the echo timeout but within
	// Pacing.LateEcho (StrictEcho): taken as echoed, not lost.
	LateEchoes int
	// EchoTimeout is the echo timeout typing ended with: Pacing's, widened
	// by late echoes. A caller typing more on the same console can carry it
	// on.
	EchoTimeout time.Duration
}

// FixedWouldTake is how long typing the same characters at the fixed delay
// takes.
func (r TypeReport) FixedWouldTake() time.Duration { return time.Duration(r.Chars) * r.Delay }

// String reads like "typed 86 chars in 0.41 s (echo), fixed 100 ms would take
// 8.6 s".
func (r TypeReport) String() string {
	mode := r.Mode.String()
	if r.EchoFallbacks > 0 {
		mode += fmt.Sprintf(", %d without echo", r.EchoFallbacks)
	}
	if r.LateEchoes > 0 {
		mode += fmt.Sprintf(", %d echoes late", r.LateEchoes)
	}
	s := fmt.Sprintf("typed %d chars in %s (%s)", r.Chars, seconds(r.Duration), mode)
	if r.Mode == Echo {
		s += fmt.Sprintf(", fixed %s would take %s", millis(r.Delay), seconds(r.FixedWouldTake()))
	}
	return s
}

func seconds(d time.Duration) string {
	switch {
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.3f s", d.Seconds())
	case d < time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	default:
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
}

func millis(d time.Duration) string {
	if d%time.Millisecond == 0 {
		return fmt.Sprintf("%d ms", d/time.Millisecond)
	}
	return d.String()
}

// Writer is the right to type to a Session, held by one owner at a time
// (see Claim). Its methods fail with ErrNotWriter once the claim was taken
// over or released.
type Writer struct {
	s     *Session
	owner string
}

// Claim makes owner (e.g. "job 42", "alice") the console's only writer. If
// somebody else holds it, Claim fails with ErrBusy naming them, unless force
// is set: then the previous Writer stops working (a Type in progress stops
// after the current character) and the takeover is recorded. Policy — who may
// force — belongs to the caller (the console broker refuses people while a
// job writes). Claims are recorded as events in the transcript and to
// subscribers.
func (s *Session) Claim(owner string, force bool) (*Writer, error) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil, fmt.Errorf("console %s: %w", s.Target(), ErrClosed)
	}
	prev := s.writer
	if prev != nil && !force {
		s.mu.Unlock()
		return nil, fmt.Errorf("console %s: %w: %s", s.Target(), ErrBusy, prev.owner)
	}
	w := &Writer{s: s, owner: owner}
	s.writer = w
	s.signalLocked()
	s.mu.Unlock()
	if prev != nil {
		s.event("writer: %s (took over from %s)", owner, prev.owner)
	} else {
		s.event("writer: %s", owner)
	}
	return w, nil
}

// Owner is who holds this Writer.
func (w *Writer) Owner() string { return w.owner }

// Release gives up the claim (if still held).
func (w *Writer) Release() {
	s := w.s
	s.mu.Lock()
	held := s.writer == w
	if held {
		s.writer = nil
	}
	s.mu.Unlock()
	if held {
		s.event("writer %s released the console", w.owner)
	}
}

// Write sends p as it is, with no pacing: for interactive use, where a
// person's typing paces itself. It fails if the console is disconnected.
func (w *Writer) Write(p []byte) (int, error) {
	s := w.s
	s.inputMu.Lock()
	defer s.inputMu.Unlock()
	s.mu.Lock()
	if err := w.checkLocked(); err != nil {
		s.mu.Unlock()
		return 0, err
	}
	stream := s.stream
	s.mu.Unlock()
	if stream == nil {
		return 0, fmt.Errorf("console %s: write: disconnected (reconnecting)", s.Target())
	}
	n, err := stream.Write(p)
	if n > 0 {
		s.record(Written, p[:n])
	}
	if err != nil {
		return n, fmt.Errorf("console %s: write: %w", s.Target(), err)
	}
	return n, nil
}

// checkLocked says why w may not write now, if it may not.
func (w *Writer) checkLocked() error {
	s := w.s
	if s.err != nil {
		return s.err
	}
	if s.closing {
		return fmt.Errorf("console %s: %w", s.Target(), ErrClosed)
	}
	if s.writer != w {
		if s.writer == nil {
			return fmt.Errorf("console %s: %s: %w (released)", s.Target(), w.owner, ErrNotWriter)
		}
		return fmt.Errorf("console %s: %s: %w (taken over by %s)", s.Target(), w.owner, ErrNotWriter, s.writer.owner)
	}
	return nil
}

// errLostWhileTyping is wrapped when the stream dropped during Type.
var errLostWhileTyping = errors.New("console session lost while typing")

// Type types text with the given pacing and reports what it cost. If the
// console is reconnecting when Type starts, it waits for it (within ctx). If
// the stream drops while typing, Type stops with an error that says how much
// was typed: the node may have received part of the line, so the caller
// decides what to do (e.g. send Ctrl-C and type it again).
//
// Echo pacing looks for each character in the normalised output that
// arrived after it was sent, skipping whatever else came with it; "\r"
// and "\n" echo as a line end. It does not wait for control characters or
// TAB (they echo as something else, or not at all): those get the fixed
// delay.
func (w *Writer) Type(ctx context.Context, text string, p Pacing) (rep TypeReport, err error) {
	p = p.withDefaults()
	s := w.s
	rep = TypeReport{Mode: p.Mode, Delay: p.Delay, EchoTimeout: p.EchoTimeout}
	s.inputMu.Lock()
	defer s.inputMu.Unlock()

	if p.Settle > 0 {
		waited, query, err := s.settle(ctx, p.Settle)
		rep.Settled, rep.SettledOnQuery = waited, query
		if err != nil {
			return rep, err
		}
	}
	gen, stream, err := s.waitConnected(ctx)
	if err != nil {
		return rep, err
	}
	mode := p.Mode
	if p.NoEcho {
		mode = Fixed
		s.recordWhole(Written, []byte("********"))
	}
	if mode == Echo {
		s.echoWatch(true)
		defer s.echoWatch(false)
	}
	start := time.Now()
	defer func() { rep.Duration = time.Since(start) }()

	rest := []byte(text)
	window := max(p.Window, 1)
	// pending are the echoes of the characters on their way, oldest first.
	var pending []pendingEcho
	// awaitEchoes waits until at most keep characters are on their way.
	// A character that does not echo in time ends Echo pacing (or, with
	// StrictEcho, Type), unless its echo turns up late.
	awaitEchoes := func(keep int) error {
		for len(pending) > keep {
			ok, lost, err := s.waitEcho(ctx, pending, p.EchoTimeout)
			if err == nil && !ok && !lost && p.StrictEcho {
				s.event("no echo of %q within %s; waiting up to %s more before taking it for lost",
					pending[0].echo, p.EchoTimeout, p.LateEcho)
				ok, lost, err = s.waitEcho(ctx, pending, p.LateEcho)
				if ok {
					late := time.Since(pending[0].sent)
					p.EchoTimeout = max(p.EchoTimeout, 2*late)
					rep.LateEchoes++
					rep.EchoTimeout = p.EchoTimeout
					s.event("the echo of %q came after %s; waiting up to %s for echoes from now on",
						pending[0].echo, late.Round(time.Millisecond), p.EchoTimeout.Round(time.Millisecond))
				}
			}
			if err != nil {
				return err
			}
			if ok {
				pending = pending[1:]
				continue
			}
			rep.EchoFallbacks++
			if p.StrictEcho {
				why := fmt.Sprintf("did not echo within %s", p.EchoTimeout+p.LateEcho)
				if lost {
					why = "did not echo, a character typed after it did"
				}
				return fmt.Errorf("console %s: typing: %q %s (after %d of %d bytes): %w",
					s.Target(), pending[0].echo, why, len(text)-len(rest), len(text), ErrNoEcho)
			}
			mode, pending = Fixed, nil
			if p.Delay > p.EchoTimeout {
				if err := sleep(ctx, p.Delay-p.EchoTimeout); err != nil {
					return fmt.Errorf("console %s: typing: %w", s.Target(), err)
				}
			}
		}
		return nil
	}
	var lastSent time.Time
	for len(rest) > 0 {
		unit := nextUnit(rest)
		if mode == Echo {
			keep := window - 1
			if !windowed(unit[0]) {
				keep = 0
			}
			if err := awaitEchoes(keep); err != nil {
				return rep, err
			}
		}
		if mode == Echo && p.MinGap > 0 && !lastSent.IsZero() {
			if err := sleep(ctx, p.MinGap-time.Since(lastSent)); err != nil {
				return rep, fmt.Errorf("console %s: typing: %w", s.Target(), err)
			}
		}
		// The characters the window has room for go in one write (one
		// SOL packet, not one each): the console gets no more at once
		// than Window allows either way. MinGap spaces every character.
		send, units := unit, 1
		if mode == Echo && p.MinGap == 0 && windowed(unit[0]) {
			pending = s.takeEchoes(pending)
			for units < window-len(pending) && len(send) < len(rest) {
				next := nextUnit(rest[len(send):])
				if !windowed(next[0]) {
					break
				}
				send = rest[:len(send)+len(next)]
				units++
			}
		}
		lastSent = time.Now()
		if mode == Echo && len(pending) == 0 {
			// Only output that arrives after the character was sent can be
			// its echo: a redrawn line or other output still in the buffer
			// must not let the next character go early.
			s.echoWatch(true)
		}
		if err := s.writeChars(ctx, w, gen, stream, send, !p.NoEcho); err != nil {
			return rep, fmt.Errorf("%w (after %d of %d bytes)", err, len(text)-len(rest), len(text))
		}
		rest = rest[len(send):]
		rep.Chars += units

		if mode == Echo && echoes(unit[0]) {
			for len(send) > 0 {
				u := nextUnit(send)
				pending = append(pending, pendingEcho{echo: echoOf(u), sent: lastSent})
				send = send[len(u):]
			}
			continue
		}
		if err := sleep(ctx, p.Delay); err != nil {
			return rep, fmt.Errorf("console %s: typing: %w", s.Target(), err)
		}
	}
	if mode == Echo {
		if err := awaitEchoes(0); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// nextUnit is the first character of p: one byte, or a whole UTF-8
// sequence.
func nextUnit(p []byte) []byte {
	if p[0] >= utf8.RuneSelf {
		if _, size := utf8.DecodeRune(p); size > 1 {
			return p[:size]
		}
	}
	return p[:1]
}

// windowed says whether b may be typed while earlier characters are on
// their way: a line end or a character that does not echo waits for every
// earlier echo.
func windowed(b byte) bool {
	return echoes(b) && b != '\r' && b != '\n'
}

// writeChars writes characters, if w still holds the console and the
// stream is the one typing started on.
func (s *Session) writeChars(ctx context.Context, w *Writer, gen int, stream interface{ Write([]byte) (int, error) }, chars []byte, show bool) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("console %s: typing: %w", s.Target(), err)
	}
	s.mu.Lock()
	if err := w.checkLocked(); err != nil {
		s.mu.Unlock()
		return err
	}
	if s.gen != gen || s.stream == nil {
		s.mu.Unlock()
		return fmt.Errorf("console %s: %w", s.Target(), errLostWhileTyping)
	}
	s.mu.Unlock()
	if _, err := stream.Write(chars); err != nil {
		return fmt.Errorf("console %s: %w: %w", s.Target(), errLostWhileTyping, err)
	}
	if show {
		s.record(Written, chars)
	}
	return nil
}

// echoes says whether Echo waits for b to come back.
func echoes(b byte) bool {
	return b == '\r' || b == '\n' || b >= 0x20 && b != 0x7f
}

// echoOf is what a typed character looks like in normalised output.
func echoOf(unit []byte) []byte {
	if unit[0] == '\r' || unit[0] == '\n' {
		return []byte{'\n'}
	}
	return unit
}

// pendingEcho is the echo of a character on its way, and when it was sent.
type pendingEcho struct {
	echo []byte
	sent time.Time
}

// echoWatch starts (anew) or stops collecting output for waitEcho.
func (s *Session) echoWatch(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.echoOn = on
	s.echoBuf = s.echoBuf[:0]
}

// waitEcho waits until the echo of pending[0] appears in the output
// collected since it was sent. It returns false on timeout, and lost when
// the echo of a character sent after it appeared first: a console echoes
// in order, so pending[0] was lost, not late.
func (s *Session) waitEcho(ctx context.Context, pending []pendingEcho, timeout time.Duration) (ok, lost bool, err error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		s.mu.Lock()
		if s.takeEchoLocked(pending[0].echo) {
			s.mu.Unlock()
			return true, false, nil
		}
		for _, later := range pending[1:] {
			if bytes.Contains(s.echoBuf, later.echo) {
				s.mu.Unlock()
				return false, true, nil
			}
		}
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return false, false, err
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-t.C:
			return false, false, nil
		case <-ctx.Done():
			return false, false, fmt.Errorf("console %s: typing: waiting for echo: %w", s.Target(), ctx.Err())
		}
	}
}

// takeEchoes drops from pending, oldest first, the echoes already in the
// output, without waiting.
func (s *Session) takeEchoes(pending []pendingEcho) []pendingEcho {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(pending) > 0 && s.takeEchoLocked(pending[0].echo) {
		pending = pending[1:]
	}
	return pending
}

// takeEchoLocked removes the output up to and including the first echo
// want from what waitEcho looks at, if it is there.
func (s *Session) takeEchoLocked(want []byte) bool {
	i := bytes.Index(s.echoBuf, want)
	if i < 0 {
		return false
	}
	s.echoBuf = append(s.echoBuf[:0], s.echoBuf[i+len(want):]...)
	return true
}

// settle waits until the output has been quiet for quiet, or ends with a
// cursor position query, for at most 10*quiet; it returns how long it
// waited and whether the query ended the wait.
func (s *Session) settle(ctx context.Context, quiet time.Duration) (time.Duration, bool, error) {
	start := time.Now()
	limit := start.Add(10 * quiet)
	for {
		s.mu.Lock()
		query, last, ch := s.norm.query, s.lastOutput, s.changed
		s.mu.Unlock()
		now := time.Now()
		idle := now.Sub(last)
		if query || idle >= quiet || !now.Before(limit) {
			return now.Sub(start), query, nil
		}
		t := time.NewTimer(min(quiet-idle, limit.Sub(now)))
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return time.Since(start), false, fmt.Errorf("console %s: waiting for the console to settle: %w", s.Target(), ctx.Err())
		}
		t.Stop()
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
