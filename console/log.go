package console

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/labctl/labctl/internal/statedir"
	"github.com/labctl/labctl/sol"
)

// consoleLog is a node's console log: everything the node printed, the
// session's events (lost, reconnected) and the broker's notes (who
// attached, took write, sent a break), one timestamped transcript record
// per line (see sol.Record), whether or not anybody watches. Input is not
// logged: what the node echoes shows it, and a password typed at a prompt
// that does not echo stays out of the log. Records reach the file through
// a bounded queue and a goroutine of its own, so a slow disk never slows
// the console; what the queue had to drop is noted in the log.
type consoleLog struct {
	path string
	q    *boundedQueue[sol.Record]
	done chan struct{}
}

// consoleLogQueue bounds the records waiting for the disk.
const consoleLogQueue = 8 << 20

// openConsoleLog starts writing the log at path, rotated at maxBytes with
// keep older files (path.1 is the newest of them).
func openConsoleLog(path string, maxBytes int64, keep int, log *slog.Logger) *consoleLog {
	l := &consoleLog{
		path: path,
		q: newBoundedQueue(consoleLogQueue,
			func(r sol.Record) int {
				if r.Dir == sol.Read {
					return len(r.Data)
				}
				return 0
			},
			func(n int64) sol.Record {
				return sol.Record{Time: time.Now(), Dir: sol.Note,
					Data: fmt.Appendf(nil, "console log: missed %d bytes of output (the disk did not keep up)", n)}
			}),
		done: make(chan struct{}),
	}
	f := &rotatingFile{path: path, max: maxBytes, keep: keep, log: log}
	go func() {
		defer close(l.done)
		tw := sol.NewTranscriptWriter(f, nil)
		for {
			r, err := l.q.next(context.Background(), nil)
			if err != nil {
				tw.Close()
				f.close()
				return
			}
			tw.Add(r)
		}
	}()
	return l
}

// add queues a record for the log.
func (l *consoleLog) add(r sol.Record) {
	if l != nil {
		l.q.push(r)
	}
}

// note queues a broker note (a '#' record).
func (l *consoleLog) note(msg string) {
	if l != nil {
		l.q.push(sol.Record{Time: time.Now(), Dir: sol.Note, Data: []byte(msg)})
	}
}

// close writes what is queued and closes the file.
func (l *consoleLog) close() {
	if l == nil {
		return
	}
	l.q.finish(sol.ErrClosed, false)
	<-l.done
}

// rotatingFile is an append-only file that is renamed to path.1 (path.1
// to path.2, ...; the oldest is dropped) when a write would take it past
// max bytes. Writes come whole transcript lines at a time, so every file
// starts at a record. A write that fails is logged (once a minute) and
// dropped; the file is opened again on the next write: a full disk costs
// log lines, never the console.
type rotatingFile struct {
	path string
	max  int64
	keep int
	log  *slog.Logger

	f      *os.File
	size   int64
	warned time.Time
}

func (w *rotatingFile) Write(p []byte) (int, error) {
	if w.f == nil {
		if err := w.open(); err != nil {
			w.warn("open console log", err)
			return len(p), nil
		}
	}
	if w.size > 0 && w.size+int64(len(p)) > w.max {
		w.rotate()
		if w.f == nil {
			return len(p), nil
		}
	}
	n, err := w.f.Write(p)
	w.size += int64(n)
	if err != nil {
		w.warn("write console log", err)
		w.f.Close()
		w.f = nil
	}
	return len(p), nil
}

func (w *rotatingFile) open() error {
	if err := os.MkdirAll(filepath.Dir(w.path), statedir.DirMode); err != nil {
		return err
	}
	f, err := os.OpenFile(w.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, statedir.FileMode)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	w.f, w.size = f, st.Size()
	return nil
}

// rotate moves the files one place down and opens a new one.
func (w *rotatingFile) rotate() {
	w.f.Close()
	w.f = nil
	for i := w.keep; i >= 1; i-- {
		from := w.path
		if i > 1 {
			from = fmt.Sprintf("%s.%d", w.path, i-1)
		}
		if err := os.Rename(from, fmt.Sprintf("%s.%d", w.path, i)); err != nil && !os.IsNotExist(err) {
			w.warn("rotate console log", err)
		}
	}
	if w.keep < 1 {
		os.Remove(w.path)
	}
	if err := w.open(); err != nil {
		w.warn("open console log", err)
	}
}

func (w *rotatingFile) warn(what string, err error) {
	if time.Since(w.warned) < time.Minute {
		return
	}
	w.warned = time.Now()
	w.log.Warn(what+"; console output is dropped from the log meanwhile", "path", w.path, "err", err)
}

func (w *rotatingFile) close() {
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
}
