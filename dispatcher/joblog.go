package dispatcher

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/labctl/labctl/sol"
)

// jobLog is a job's log file: the console transcript and the dispatcher's
// events (sol.Note records), one timestamped record per line, in the order
// they happened. Console records come from a subscription to the node's
// session, so the job log holds what the job saw while other viewers of the
// same console see it too.
type jobLog struct {
	f      *os.File
	tw     *sol.TranscriptWriter
	now    func() time.Time
	events func(string)

	mu   sync.Mutex // orders events against the pump's records
	sub  *sol.Subscription
	done chan struct{}
}

func openJobLog(path string, now func() time.Time, events func(string)) (*jobLog, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("job log: %w", err)
	}
	return &jobLog{f: f, tw: sol.NewTranscriptWriter(f, nil), now: now, events: events}, nil
}

// follow records the session's console records until stopFollowing.
func (l *jobLog) follow(s *sol.Session) {
	// A large queue: the file keeps up with any console, and a job log
	// must not miss bytes.
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

// stopFollowing writes what the subscription still holds and stops.
func (l *jobLog) stopFollowing() {
	if l.sub == nil {
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

// event writes a dispatcher record.
func (l *jobLog) event(msg string) {
	at := l.now()
	l.mu.Lock()
	l.tw.Note(at, msg)
	l.mu.Unlock()
	if l.events != nil {
		rec := sol.Record{Time: at, Dir: sol.Note, Data: []byte(msg)}
		l.events(string(rec.AppendText(nil)))
	}
}

func (l *jobLog) close() {
	if l == nil {
		return
	}
	l.stopFollowing()
	l.tw.Close()
	l.f.Close()
}
