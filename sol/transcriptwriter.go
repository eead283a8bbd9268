package sol

import (
	"io"
	"time"
)

// Note is the direction of records that the program owning a session adds
// to a transcript about its own work, such as the dispatcher's events in a
// job log (#), beside console output (<), input (>) and session events (!).
const Note Direction = '#'

// TranscriptWriter writes records to w as transcript lines (see Record),
// joining console output and input into whole lines the way a Session's own
// transcript does. It turns a Subscription's record stream into a log file:
// a job's log, a node's console log.
type TranscriptWriter struct{ t *transcript }

// NewTranscriptWriter writes to w; onError, if set, hears about the first
// write error (later records are dropped).
func NewTranscriptWriter(w io.Writer, onError func(error)) *TranscriptWriter {
	return &TranscriptWriter{t: newTranscript(w, onError)}
}

// Add writes r. Output and input are collected into lines; other records
// are written whole, after what is pending.
func (tw *TranscriptWriter) Add(r Record) {
	if r.Dir == Read || r.Dir == Written {
		tw.t.add(r.Dir, r.Time, r.Data)
		return
	}
	tw.t.whole(r)
}

// Note writes a Note record.
func (tw *TranscriptWriter) Note(at time.Time, msg string) {
	tw.t.whole(Record{Time: at, Dir: Note, Data: []byte(msg)})
}

// Close flushes and stops writing.
func (tw *TranscriptWriter) Close() { tw.t.close() }
