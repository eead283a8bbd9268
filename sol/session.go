package sol

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Session is a long-lived console connection to one node, built on a Dialer.
//
// One goroutine reads the console continuously, whether or not anybody is
// waiting, and hands every chunk to four places:
//   - the transcript (Options.Transcript): timestamped records of everything
//     read (<), typed (>) and every session event (!), raw bytes escaped;
//   - the match buffer that Expect searches: the output since the last match,
//     with escape sequences removed, line ends normalised and kernel messages
//     that split a line moved out of its way (see Expect);
//   - echo pacing, which waits for typed characters to come back;
//   - subscribers (Subscribe), each through its own bounded buffer.
//
// When the stream drops unexpectedly (the BMC closed the session, the
// connection command died), the session records "session lost: <reason>",
// dials again with capped exponential backoff and records "reconnected after
// 2.3s". Expect calls in progress keep waiting across the gap. If the console
// is not back within Options.GiveUpAfter, the session fails: Expect, Type and
// subscribers then get an error that names the dialer's target.
//
// Input goes through a Writer: Claim makes one owner (a job, a person) the
// only one who may type; everybody else can still subscribe and watch. Type
// paces text (a fixed delay per character, or waiting for each character's
// echo) and reports what the typing cost.
//
// A Session is used by one expecter (Expect calls are serialised and each
// consumes what it matched), one writer at a time and any number of
// subscribers. Open it once, Close it when done.
type Session struct {
	d      Dialer
	opts   Options
	log    *slog.Logger
	tr     *transcript
	ctx    context.Context // the session's lifetime; canceled by Close
	cancel context.CancelFunc

	expectMu sync.Mutex // one Expect at a time
	inputMu  sync.Mutex // one Type or Write at a time

	closeOnce  sync.Once
	readerDone chan struct{} // closed when the reader goroutine has exited

	mu         sync.Mutex
	opened     bool
	closing    bool
	stream     io.ReadWriteCloser // nil while disconnected
	gen        int                // counts connections; a Type is bound to one
	connected  chan struct{}      // closed and replaced on each connect
	changed    chan struct{}      // closed and replaced on any news
	norm       normalizer
	normBuf    []byte
	mb         *matchBuffer
	echoOn     bool
	echoBuf    []byte
	lastOutput time.Time
	err        error // why the session ended (gave up, closed)
	subs       map[*Subscription]struct{}
	writer     *Writer
}

// Options configure a Session. The zero value is usable.
type Options struct {
	// Transcript receives the session's records, one line each (see
	// Record). Nil means no transcript. Write errors are logged once and
	// otherwise ignored: the console keeps running.
	Transcript io.Writer
	// Log receives session events (lost, reconnected, gave up); nil
	// discards them.
	Log *slog.Logger
	// MatchBuffer bounds the normalised output kept for Expect, in bytes;
	// beyond it the oldest output is dropped. 0 means 1 MiB.
	MatchBuffer int
	// GiveUpAfter is how long to keep trying to connect, counted from the
	// moment the stream dropped (or from Open). 0 means 2 minutes; a
	// negative value means never give up.
	GiveUpAfter time.Duration
	// MinBackoff and MaxBackoff bound the wait between dial attempts, which
	// doubles after each failure. 0 means 250 ms and 10 s.
	MinBackoff, MaxBackoff time.Duration
	// DialTimeout bounds one dial attempt; 0 means 30 s.
	DialTimeout time.Duration
	// OnChange, if set, hears the session's stream drop, come back and
	// be given up on (for metrics). It runs on the session's reader and
	// must not block.
	OnChange func(SessionChange)
}

// SessionChange is what happened to a session's stream.
type SessionChange string

// What happens to a session's stream.
const (
	SessionLost        SessionChange = "lost"
	SessionReconnected SessionChange = "reconnected"
	SessionGaveUp      SessionChange = "gave_up"
)

// changed tells OnChange, if set.
func (o Options) changed(c SessionChange) {
	if o.OnChange != nil {
		o.OnChange(c)
	}
}

func (o Options) withDefaults() Options {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.MatchBuffer <= 0 {
		o.MatchBuffer = 1 << 20
	}
	if o.GiveUpAfter == 0 {
		o.GiveUpAfter = 2 * time.Minute
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 250 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 10 * time.Second
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = o.MinBackoff
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 30 * time.Second
	}
	return o
}

// NewSession returns a session that will use d. It does nothing until Open.
func NewSession(d Dialer, opts Options) *Session {
	opts = opts.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Session{
		d:          d,
		opts:       opts,
		log:        opts.Log.With("console", d.Target()),
		ctx:        ctx,
		cancel:     cancel,
		readerDone: make(chan struct{}),
		connected:  make(chan struct{}),
		changed:    make(chan struct{}),
		mb:         newMatchBuffer(opts.MatchBuffer),
		subs:       make(map[*Subscription]struct{}),
	}
	s.tr = newTranscript(opts.Transcript, func(err error) {
		s.log.Error("console transcript write failed; transcript stops here", "err", err)
	})
	return s
}

// Target is the dialer's target.
func (s *Session) Target() string { return s.d.Target() }

// Open connects, retrying with backoff for up to Options.GiveUpAfter or
// until ctx ends, and starts reading.
func (s *Session) Open(ctx context.Context) error {
	s.mu.Lock()
	if s.opened {
		s.mu.Unlock()
		return fmt.Errorf("console %s: already opened", s.Target())
	}
	if s.closing {
		s.mu.Unlock()
		return fmt.Errorf("console %s: %w", s.Target(), ErrClosed)
	}
	s.opened = true
	s.mu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	start := time.Now()
	s.event("connecting to %s", s.Target())
	stream, attempts, err := s.dial(ctx, start)
	if err != nil && s.ctx.Err() != nil {
		close(s.readerDone)
		return fmt.Errorf("console %s: %w", s.Target(), ErrClosed)
	}
	if err != nil {
		err = fmt.Errorf("console %s: connect: %d attempts in %s: %w", s.Target(), attempts, since(start), err)
		s.event("%v", err)
		s.fail(err)
		close(s.readerDone)
		return err
	}
	if !s.setStream(stream) {
		close(s.readerDone)
		return fmt.Errorf("console %s: %w", s.Target(), ErrClosed)
	}
	s.event("connected after %s", since(start))
	go s.run(stream)
	return nil
}

// dial makes attempts until one works, ctx ends, or GiveUpAfter (counted
// from start) would be exceeded.
func (s *Session) dial(ctx context.Context, start time.Time) (io.ReadWriteCloser, int, error) {
	backoff := s.opts.MinBackoff
	var failed error // the last attempt that failed by itself, not by ctx ending
	for attempt := 1; ; attempt++ {
		dctx, cancel := context.WithTimeout(ctx, s.opts.DialTimeout)
		stream, err := s.d.Dial(dctx)
		cancel()
		if err == nil {
			return &onceCloser{ReadWriteCloser: stream}, attempt, nil
		}
		if ctx.Err() != nil {
			// The wait ended during an attempt: say why the earlier
			// ones failed, which is what the person needs to know.
			if failed != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
				err = fmt.Errorf("%w (attempt %d failed: %v)", err, attempt-1, failed)
			}
			return nil, attempt, err
		}
		failed = err
		wait := backoff
		if s.opts.GiveUpAfter > 0 {
			left := s.opts.GiveUpAfter - time.Since(start)
			if left <= 0 {
				return nil, attempt, err
			}
			wait = min(wait, left)
		}
		s.event("dial attempt %d failed: %v; retrying in %s", attempt, err, wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, attempt, err
		}
		backoff = min(backoff*2, s.opts.MaxBackoff)
	}
}

// onceCloser makes Close safe to call twice (some streams panic).
type onceCloser struct {
	io.ReadWriteCloser
	once sync.Once
	err  error
}

func (c *onceCloser) Close() error {
	c.once.Do(func() { c.err = c.ReadWriteCloser.Close() })
	return c.err
}

// setStream installs a new stream (or nil when it dropped). A stream that
// arrives while the session is closing is closed at once; then it returns
// false.
func (s *Session) setStream(stream io.ReadWriteCloser) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if stream != nil && s.closing {
		_ = stream.Close()
		return false
	}
	s.stream = stream
	if stream != nil {
		s.gen++
		close(s.connected)
		s.connected = make(chan struct{})
	}
	s.signalLocked()
	return true
}

// run is the reader goroutine: read, deliver, and redial when the stream
// drops, until Close or giving up.
func (s *Session) run(stream io.ReadWriteCloser) {
	defer close(s.readerDone)
	buf := make([]byte, 32<<10)
	for {
		n, err := stream.Read(buf)
		if n > 0 {
			s.deliver(buf[:n])
		}
		if err == nil {
			continue
		}
		_ = stream.Close()
		s.setStream(nil)
		if s.ctx.Err() != nil {
			return // Close
		}
		lost := time.Now()
		reason := describe(err)
		s.event("session lost: %s", reason)
		s.opts.changed(SessionLost)
		next, attempts, derr := s.dial(s.ctx, lost)
		if derr != nil {
			if s.ctx.Err() != nil {
				return
			}
			gerr := fmt.Errorf("console %s: session lost (%s) and not back after %s (%d attempts): %w",
				s.Target(), reason, since(lost), attempts, derr)
			s.event("giving up: not back after %s (%d attempts): %v", since(lost), attempts, derr)
			s.opts.changed(SessionGaveUp)
			s.fail(gerr)
			return
		}
		if !s.setStream(next) {
			return
		}
		s.event("reconnected after %s (%d attempts)", since(lost), attempts)
		s.opts.changed(SessionReconnected)
		stream = next
	}
}

// describe turns a stream's end into a short reason.
func describe(err error) string {
	switch {
	case errors.Is(err, ErrClosedByBMC):
		if err.Error() == ErrClosedByBMC.Error() {
			return err.Error()
		}
		return ErrClosedByBMC.Error() + " (" + strings.TrimSuffix(err.Error(), ": "+ErrClosedByBMC.Error()) + ")"
	case err == io.EOF:
		return "end of stream"
	default:
		return err.Error()
	}
}

func since(t time.Time) time.Duration {
	d := time.Since(t)
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond)
	default:
		return d.Round(100 * time.Millisecond)
	}
}

// deliver hands a chunk of console output to everybody who wants it.
func (s *Session) deliver(p []byte) {
	now := time.Now()
	data := append([]byte(nil), p...)
	s.tr.add(Read, now, data)
	rec := Record{Time: now, Dir: Read, Data: data}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.normBuf = s.norm.write(s.normBuf[:0], data)
	s.mb.write(s.normBuf)
	if s.echoOn {
		s.echoBuf = append(s.echoBuf, s.normBuf...)
		if len(s.echoBuf) > 8192 {
			s.echoBuf = append(s.echoBuf[:0], s.echoBuf[len(s.echoBuf)-4096:]...)
		}
	}
	s.lastOutput = now
	for sub := range s.subs {
		sub.push(rec)
	}
	s.signalLocked()
}

// record hands typed input to the transcript and the subscribers.
func (s *Session) record(dir Direction, p []byte) {
	s.recordAs(dir, p, dir == Event)
}

// recordWhole hands the transcript and the subscribers an entry that is a
// record of its own, after whatever is pending: a secret's placeholder
// never shares a line with what was typed before it.
func (s *Session) recordWhole(dir Direction, p []byte) {
	s.recordAs(dir, p, true)
}

func (s *Session) recordAs(dir Direction, p []byte, whole bool) {
	now := time.Now()
	data := append([]byte(nil), p...)
	if whole {
		s.tr.whole(Record{Time: now, Dir: dir, Data: data})
	} else {
		s.tr.add(dir, now, data)
	}
	rec := Record{Time: now, Dir: dir, Data: data}
	s.mu.Lock()
	for sub := range s.subs {
		sub.push(rec)
	}
	s.mu.Unlock()
}

// event records a session event in the transcript, the log and for every
// subscriber.
func (s *Session) event(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.log.Info("console: " + msg)
	s.record(Event, []byte(msg))
}

func (s *Session) signalLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// fail ends the session with err: waiters and subscribers get it.
func (s *Session) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
	for sub := range s.subs {
		sub.finish(s.err)
	}
	s.signalLocked()
}

// Err returns why the session ended (it gave up reconnecting, or was
// closed), or nil while it is usable.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends the session: the stream is closed, the reader stopped, waiters
// and subscribers released with ErrClosed, the transcript flushed. It is
// safe to call more than once.
func (s *Session) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closing = true
		stream := s.stream
		s.stream = nil
		opened := s.opened
		s.signalLocked()
		s.mu.Unlock()
		s.cancel()
		if stream != nil {
			if cerr := stream.Close(); cerr != nil {
				err = fmt.Errorf("console %s: close: %w", s.Target(), cerr)
			}
		}
		if opened {
			select {
			case <-s.readerDone:
			case <-time.After(10 * time.Second):
				err = fmt.Errorf("console %s: close: the stream's Read did not return after Close", s.Target())
			}
		}
		s.event("session closed")
		s.mu.Lock()
		if s.err == nil {
			s.err = fmt.Errorf("console %s: %w", s.Target(), ErrClosed)
		}
		for sub := range s.subs {
			sub.finish(ErrClosed)
		}
		s.subs = map[*Subscription]struct{}{}
		s.signalLocked()
		s.mu.Unlock()
		s.tr.close()
	})
	return err
}

// Subscribe returns a Subscription that gets every record from now on.
// buf bounds its queue in bytes (console output and input; events are
// kept regardless); 0 means 256 KiB.
func (s *Session) Subscribe(buf int) *Subscription {
	if buf <= 0 {
		buf = 256 << 10
	}
	sub := &Subscription{s: s, limit: buf, notify: make(chan struct{}, 1)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		sub.end = s.err
		return sub
	}
	s.subs[sub] = struct{}{}
	return sub
}

func (s *Session) unsubscribe(sub *Subscription) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.subs, sub)
}

// waitConnected waits until a stream is up and returns its generation.
func (s *Session) waitConnected(ctx context.Context) (int, io.ReadWriteCloser, error) {
	for {
		s.mu.Lock()
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return 0, nil, err
		}
		if s.closing {
			s.mu.Unlock()
			return 0, nil, fmt.Errorf("console %s: %w", s.Target(), ErrClosed)
		}
		if s.stream != nil {
			gen, stream := s.gen, s.stream
			s.mu.Unlock()
			return gen, stream, nil
		}
		ch := s.connected
		s.mu.Unlock()
		select {
		case <-ch:
		case <-s.ctx.Done():
			return 0, nil, fmt.Errorf("console %s: %w", s.Target(), ErrClosed)
		case <-ctx.Done():
			return 0, nil, fmt.Errorf("console %s: waiting for the console to reconnect: %w", s.Target(), ctx.Err())
		}
	}
}
