package dispatcher

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/labctl/labctl/sol"
)

// Dispatcher is the direction mark of the dispatcher's own records in the
// job log, beside the console's < (read), > (typed) and ! (session events).
const Dispatcher sol.Direction = '#'

// jobLog is a job's log file: the console transcript and the dispatcher's
// events, one timestamped record per line, in the order they happened.
type jobLog struct {
	mu     sync.Mutex
	f      *os.File
	now    func() time.Time
	events func(string)
}

func openJobLog(path string, now func() time.Time, events func(string)) (*jobLog, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("job log: %w", err)
	}
	return &jobLog{f: f, now: now, events: events}, nil
}

// Write takes whole transcript records from the console session.
func (l *jobLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return len(p), nil
	}
	return l.f.Write(p)
}

// event writes a dispatcher record.
func (l *jobLog) event(msg string) {
	rec := sol.Record{Time: l.now(), Dir: Dispatcher, Data: []byte(msg)}
	line := string(rec.AppendText(nil))
	l.Write([]byte(line + "\n"))
	if l.events != nil {
		l.events(line)
	}
}

func (l *jobLog) close() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
}
