package dispatcher

import (
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
// too. The methods of a nil *Log do nothing.
type Log struct {
	f      io.Closer
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
	return &Log{f: f, tw: sol.NewTranscriptWriter(f, nil), now: now, events: events}
}

func openJobLog(path string, now func() time.Time, events func(string)) (*Log, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, statedir.FileMode)
	if err != nil {
		return nil, fmt.Errorf("job log: %w", err)
	}
	return NewLog(f, now, events), nil
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
