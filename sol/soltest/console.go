// Package soltest provides an in-process fake serial console for testing
// code that drives consoles through package sol: a tiny shell behind a
// deliberately lossy input path, with the failure modes of real BMC serial
// consoles as knobs.
package soltest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labctl/labctl/sol"
)

// Config sets up a Console. The zero value is a well-behaved console: it
// echoes at once and never loses input.
type Config struct {
	// Name is the Console's Target; "" means "soltest console".
	Name string
	// Prompt is the shell prompt; "" means "fake# ".
	Prompt string
	// CursorQuery, if > 0, makes the shell behave like busybox ash: it sends
	// a cursor position query (ESC [ 6 n) this long after each prompt, and
	// input that arrives between the prompt and the query is swallowed.
	CursorQuery time.Duration

	// EchoDelay is how long the console takes to take in one input byte;
	// the byte is echoed (and acted on) when done. Bytes are taken in one
	// after another.
	EchoDelay time.Duration
	// Every SlowEvery-th accepted byte takes SlowDelay instead of
	// EchoDelay (a busy BMC or UART): this is what makes a fixed delay that
	// never loses anything much slower than waiting for echoes.
	SlowEvery int
	SlowDelay time.Duration

	// Lossy turns on the two input-loss rules: a byte is dropped if it
	// arrives while more than MaxUnechoed earlier bytes have not been
	// echoed yet, or less than MinGap after the previous byte arrived.
	// (Bytes written in one Write call arrive together.)
	Lossy       bool
	MaxUnechoed int
	MinGap      time.Duration

	// BurstLimit, if > 0, closes the session ("SOL session closed by BMC")
	// when more than BurstLimit bytes arrive within BurstWindow.
	BurstLimit  int
	BurstWindow time.Duration

	// Hold keeps every accepted input byte (its echo and its effect on the
	// shell) until the test calls Release or DropHeld: an echo as late as
	// the test wants, decided by events rather than by delays.
	Hold bool
}

// Console is a fake node console. It implements sol.Dialer: each Dial opens
// a new stream and ends the previous one, as a BMC allows one SOL session.
// Output printed while no stream is open is lost.
//
// The shell knows: "echo WORDS", "passwd" (asks "Password: " and reads a line
// without echo), "flood N" (prints N numbered lines), "exit" (ends the stream
// as if the BMC closed it); anything else is "not found".
type Console struct {
	cfg Config

	mu          sync.Mutex
	cur         *stream
	dials       int
	writes      int
	down        error // Dial fails with it while set
	pending     []time.Time
	lastArrival time.Time
	lastFinish  time.Time
	accepted    int
	arrivals    []time.Time
	queryAt     time.Time
	line        []byte
	noEcho      bool
	afterCR     bool
	lines       []string
	dropped     int
	swallowed   int
	jobs        []job
	held        []byte
	closed      bool

	work chan struct{}
	quit chan struct{}
	wg   sync.WaitGroup
}

type job struct {
	b  byte
	at time.Time
}

// New starts a Console; Close stops it.
func New(cfg Config) *Console {
	if cfg.Name == "" {
		cfg.Name = "soltest console"
	}
	if cfg.Prompt == "" {
		cfg.Prompt = "fake# "
	}
	c := &Console{cfg: cfg, work: make(chan struct{}, 1), quit: make(chan struct{})}
	c.wg.Add(1)
	go c.process()
	return c
}

// Close stops the console and ends its stream.
func (c *Console) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	if c.cur != nil {
		c.cur.end(sol.ErrClosed)
		c.cur = nil
	}
	c.mu.Unlock()
	close(c.quit)
	c.wg.Wait()
}

// Target implements sol.Dialer.
func (c *Console) Target() string { return c.cfg.Name }

// Dial implements sol.Dialer.
func (c *Console) Dial(ctx context.Context) (io.ReadWriteCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("%s: %w", c.cfg.Name, sol.ErrClosed)
	}
	if c.down != nil {
		return nil, fmt.Errorf("%s: %w", c.cfg.Name, c.down)
	}
	if c.cur != nil {
		c.cur.end(fmt.Errorf("%s: deactivated by a new session: %w", c.cfg.Name, sol.ErrClosedByBMC))
	}
	c.dials++
	c.cur = &stream{c: c, notify: make(chan struct{}, 1)}
	return c.cur, nil
}

// SetDown makes Dial fail with err (the BMC does not answer) until called
// with nil.
func (c *Console) SetDown(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down = err
}

// Kill ends the current stream the way a BMC does: its Read fails with an
// error wrapping sol.ErrClosedByBMC.
func (c *Console) Kill() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur != nil {
		c.cur.end(fmt.Errorf("%s: %w", c.cfg.Name, sol.ErrClosedByBMC))
		c.cur = nil
	}
}

// Print makes the node print s (kernel messages, boot output).
func (c *Console) Print(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.outputLocked(s)
}

// Prompt makes the shell print its prompt, as when it starts.
func (c *Console) Prompt() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.promptLocked()
}

// Held is the number of input bytes held (Config.Hold).
func (c *Console) Held() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.held)
}

// Release takes in the n oldest held input bytes (at most all of them): the
// shell echoes them and acts on them now.
func (c *Console) Release(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n = min(n, len(c.held))
	for _, b := range c.held[:n] {
		c.accepted++
		c.takeLocked(b)
	}
	c.held = c.held[n:]
}

// DropHeld loses the oldest held input byte, as a console that drops input
// does; it counts in Dropped.
func (c *Console) DropHeld() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.held) > 0 {
		c.held = c.held[1:]
		c.dropped++
	}
}

// Lines returns the input lines the shell received, in order.
func (c *Console) Lines() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.lines...)
}

// Dropped is the number of input bytes lost to the Lossy rules or the burst
// limit; Swallowed the number lost because they arrived before the cursor
// query.
func (c *Console) Dropped() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropped
}

// Swallowed: see Dropped.
func (c *Console) Swallowed() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.swallowed
}

// Dials is the number of streams opened so far.
func (c *Console) Dials() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dials
}

// Writes is the number of writes (SOL packets) that brought input on any
// stream.
func (c *Console) Writes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

// input applies the loss rules to bytes that arrived at t on stream st.
func (c *Console) input(st *stream, p []byte, t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur != st {
		return sol.ErrClosed
	}
	c.writes++
	for _, b := range p {
		if c.cfg.BurstLimit > 0 {
			c.arrivals = append(c.arrivals, t)
			for len(c.arrivals) > 0 && t.Sub(c.arrivals[0]) > c.cfg.BurstWindow {
				c.arrivals = c.arrivals[1:]
			}
			if len(c.arrivals) > c.cfg.BurstLimit {
				c.dropped++
				c.arrivals = nil
				c.cur.end(fmt.Errorf("%s: input burst over %d bytes in %s: %w",
					c.cfg.Name, c.cfg.BurstLimit, c.cfg.BurstWindow, sol.ErrClosedByBMC))
				c.cur = nil
				return nil // the writer does not notice; the reader does
			}
		}
		if t.Before(c.queryAt) {
			c.swallowed++
			continue
		}
		if c.cfg.Lossy {
			for len(c.pending) > 0 && !c.pending[0].After(t) {
				c.pending = c.pending[1:]
			}
			gap := !c.lastArrival.IsZero() && t.Sub(c.lastArrival) < c.cfg.MinGap
			c.lastArrival = t // dropped or not, it arrived
			if len(c.pending) > c.cfg.MaxUnechoed || gap {
				c.dropped++
				continue
			}
		}
		c.lastArrival = t
		if c.cfg.Hold {
			c.held = append(c.held, b)
			continue
		}
		c.accepted++
		d := c.cfg.EchoDelay
		if c.cfg.SlowEvery > 0 && c.accepted%c.cfg.SlowEvery == 0 {
			d = c.cfg.SlowDelay
		}
		start := t
		if c.lastFinish.After(start) {
			start = c.lastFinish
		}
		finish := start.Add(d)
		c.lastFinish = finish
		c.pending = append(c.pending, finish)
		c.jobs = append(c.jobs, job{b: b, at: finish})
	}
	select {
	case c.work <- struct{}{}:
	default:
	}
	return nil
}

// process takes in accepted bytes at their finish times.
func (c *Console) process() {
	defer c.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		c.mu.Lock()
		var next *job
		if len(c.jobs) > 0 {
			next = &c.jobs[0]
		}
		if next != nil && !time.Now().Before(next.at) {
			b := next.b
			c.jobs = c.jobs[1:]
			c.takeLocked(b)
			c.mu.Unlock()
			continue
		}
		wait := time.Hour
		if next != nil {
			wait = time.Until(next.at)
		}
		c.mu.Unlock()
		timer.Reset(wait)
		select {
		case <-timer.C:
		case <-c.work:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		case <-c.quit:
			return
		}
	}
}

// takeLocked is the shell's line editor receiving b.
func (c *Console) takeLocked(b byte) {
	if b == '\n' && c.afterCR {
		c.afterCR = false
		return
	}
	c.afterCR = b == '\r'
	switch {
	case b == '\r' || b == '\n':
		if !c.noEcho {
			c.outputLocked("\r\n")
		}
		line := string(c.line)
		c.line = nil
		c.lines = append(c.lines, line)
		c.runLocked(line)
	case b == 0x7f || b == '\b':
		if len(c.line) > 0 {
			c.line = c.line[:len(c.line)-1]
			if !c.noEcho {
				c.outputLocked("\b \b")
			}
		}
	default:
		c.line = append(c.line, b)
		if !c.noEcho {
			c.outputLocked(string([]byte{b}))
		}
	}
}

// runLocked runs a command line.
func (c *Console) runLocked(line string) {
	if c.noEcho { // the answer to passwd
		c.noEcho = false
		c.outputLocked("\r\npassword set\r\n")
		c.promptLocked()
		return
	}
	cmd, arg, _ := strings.Cut(strings.TrimSpace(line), " ")
	switch cmd {
	case "":
	case "echo":
		c.outputLocked(arg + "\r\n")
	case "passwd":
		c.outputLocked("Password: ")
		c.noEcho = true
		return
	case "flood":
		n, _ := strconv.Atoi(arg)
		var sb strings.Builder
		for i := 1; i <= n; i++ {
			fmt.Fprintf(&sb, "flood line %06d of %06d: the quick brown fox jumps over the lazy dog\r\n", i, n)
		}
		c.outputLocked(sb.String())
	case "exit":
		if c.cur != nil {
			c.cur.end(fmt.Errorf("%s: shell exited: %w", c.cfg.Name, sol.ErrClosedByBMC))
			c.cur = nil
		}
		return
	default:
		c.outputLocked("sh: " + cmd + ": not found\r\n")
	}
	c.promptLocked()
}

func (c *Console) promptLocked() {
	c.outputLocked(c.cfg.Prompt)
	if c.cfg.CursorQuery > 0 {
		c.queryAt = time.Now().Add(c.cfg.CursorQuery)
		time.AfterFunc(c.cfg.CursorQuery, func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if !c.closed {
				c.outputLocked("\x1b[6n")
			}
		})
	}
}

func (c *Console) outputLocked(s string) {
	if c.cur != nil {
		c.cur.put([]byte(s))
	}
}

// stream is one console session.
type stream struct {
	c      *Console
	mu     sync.Mutex
	buf    []byte
	err    error
	notify chan struct{}
}

func (s *stream) put(p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	s.buf = append(s.buf, p...)
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

func (s *stream) end(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Read returns output; once the stream has ended, what is left, then the
// reason.
func (s *stream) Read(p []byte) (int, error) {
	for {
		s.mu.Lock()
		if len(s.buf) > 0 {
			n := copy(p, s.buf)
			s.buf = s.buf[n:]
			s.mu.Unlock()
			return n, nil
		}
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return 0, err
		}
		s.mu.Unlock()
		<-s.notify
	}
}

// Write delivers input to the console.
func (s *stream) Write(p []byte) (int, error) {
	s.mu.Lock()
	err := s.err
	s.mu.Unlock()
	if err != nil {
		if errors.Is(err, sol.ErrClosed) {
			return 0, err
		}
		return 0, fmt.Errorf("write: %w", err)
	}
	if err := s.c.input(s, p, time.Now()); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close ends the stream.
func (s *stream) Close() error {
	s.end(sol.ErrClosed)
	s.c.mu.Lock()
	if s.c.cur == s {
		s.c.cur = nil
	}
	s.c.mu.Unlock()
	return nil
}
