package dispatcher

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/labctl/labctl/internal/statedir"
	"github.com/labctl/labctl/sol"
)

// Log is a log file of what the dispatcher does to a node: its events
// (sol.Note records) and, while it follows the node's console, the console
// transcript, one timestamped record per line, in the order they happened.
// Console records come from a subscription to the node's session, so the
// log holds what the dispatcher saw while other viewers of the same console
// see it too. A job writes job.log; the daemon's health check writes one
// too. The log's size is capped (see SetMaxSize). The methods of a nil
// *Log do nothing.
type Log struct {
	f      io.Closer
	cap    *logCap
	tw     *sol.TranscriptWriter
	now    func() time.Time
	events func(string)

	mu   sync.Mutex // orders events against the pump's records
	sub  *sol.Subscription
	done chan struct{}
}

// NewLog writes a log to f, which Close closes. now is the clock (nil means
// time.Now); events, if set, receives each event line as it is written
// (for a live view) and must not block.
func NewLog(f io.WriteCloser, now func() time.Time, events func(string)) *Log {
	if now == nil {
		now = time.Now
	}
	c := &logCap{w: f, now: now, max: DefaultMaxLog}
	return &Log{f: f, cap: c, tw: sol.NewTranscriptWriter(c, nil), now: now, events: events}
}

func openJobLog(path string, max int64, now func() time.Time, events func(string)) (*Log, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, statedir.FileMode)
	if err != nil {
		return nil, fmt.Errorf("job log: %w", err)
	}
	l := NewLog(f, now, events)
	if max > 0 {
		l.SetMaxSize(max)
	}
	return l, nil
}

// DefaultMaxLog is the size a log grows to unless SetMaxSize says
// otherwise.
const DefaultMaxLog = 64 << 20

// logReserve is how far the dispatcher's own records (phases, errors, the
// outcome) may still take a log past its size limit.
const logReserve = 1 << 20

// SetMaxSize caps the log at max bytes: console records beyond it are
// dropped, with one record that says so, while the dispatcher's own
// records still go in, up to a reserve of 1 MiB. Call it before the log
// is written to.
func (l *Log) SetMaxSize(max int64) {
	if l == nil {
		return
	}
	l.cap.max = max
}

// logCap writes a log's lines (one transcript record per Write) to w while
// the log is under max bytes. Beyond max it drops console records, after
// writing one record that says so; the dispatcher's own records (sol.Note)
// still go in up to logReserve bytes more. Writes come one at a time (the
// transcript writer serializes them).
type logCap struct {
	w         io.Writer
	now       func() time.Time
	max       int64
	n         int64
	truncated bool
}

func (c *logCap) Write(p []byte) (int, error) {
	note := isNote(p)
	switch {
	case c.n+int64(len(p)) <= c.max && !c.truncated:
	case !note:
		if !c.truncated {
			c.truncated = true
			msg := fmt.Sprintf("output truncated: job log reached %s; further console output not logged", sizeText(c.max))
			line := append(sol.Record{Time: c.now(), Dir: sol.Note, Data: []byte(msg)}.AppendText(nil), '\n')
			if err := c.write(line); err != nil {
				return 0, err
			}
		}
		return len(p), nil
	case c.n+int64(len(p)) > c.max+logReserve:
		return len(p), nil
	}
	if err := c.write(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *logCap) write(p []byte) error {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return err
}

// isNote reports whether a transcript line is a dispatcher record: its
// direction, after the time and a space, is sol.Note.
func isNote(line []byte) bool {
	i := bytes.IndexByte(line, ' ')
	return i >= 0 && i+1 < len(line) && line[i+1] == byte(sol.Note)
}

// Follow records the session's console records until StopFollowing.
func (l *Log) Follow(s *sol.Session) {
	if l == nil {
		return
	}
	// A large queue: the file keeps up with any console, and a log must
	// not miss bytes.
	l.sub = s.Subscribe(16 << 20)
	l.done = make(chan struct{})
	go func() {
		defer close(l.done)
		for {
			rec, err := l.sub.Next(context.Background())
			if err != nil {
				return
			}
			l.mu.Lock()
			l.tw.Add(rec)
			l.mu.Unlock()
		}
	}()
}

// StopFollowing writes what the subscription still holds and stops.
func (l *Log) StopFollowing() {
	if l == nil || l.sub == nil {
		return
	}
	drained, cancel := context.WithCancel(context.Background())
	cancel()
	for {
		// With a done context, Next returns only what is queued.
		rec, err := l.sub.Next(drained)
		if err != nil {
			break
		}
		l.mu.Lock()
		l.tw.Add(rec)
		l.mu.Unlock()
	}
	l.sub.Close()
	<-l.done
	l.sub = nil
}

// Event writes a dispatcher record.
func (l *Log) Event(msg string) {
	if l == nil {
		return
	}
	at := l.now()
	l.mu.Lock()
	l.tw.Note(at, msg)
	l.mu.Unlock()
	if l.events != nil {
		rec := sol.Record{Time: at, Dir: sol.Note, Data: []byte(msg)}
		l.events(string(rec.AppendText(nil)))
	}
}

// Close stops following the console and closes the file.
func (l *Log) Close() {
	if l == nil {
		return
	}
	l.StopFollowing()
	l.tw.Close()
	l.f.Close()
}
