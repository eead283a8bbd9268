package sol

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// Direction says what a Record holds.
type Direction byte

const (
	// Read is console output: bytes the node sent.
	Read Direction = '<'
	// Written is console input: bytes typed to the node (a secret shows as
	// "********").
	Written Direction = '>'
	// Event is a note about the session itself: lost, reconnected, writer
	// changed, bytes a subscriber missed.
	Event Direction = '!'
)

// Record is one entry of a transcript, and what a Subscription delivers.
//
// In a transcript each record is one line:
//
//	2026-03-04T05:06:07.123456Z < master# \e[6n
//	2026-03-04T05:06:07.200311Z > uname -a\r
//	2026-03-04T05:06:07.215002Z < uname -a\r\n
//	2026-03-04T05:06:09.001000Z ! session lost: SOL session closed by BMC
//
// The time is UTC with microseconds, then the direction, then the bytes with
// everything that is not printable escaped: \\ \r \n \t \e (ESC) and \xNN.
// Raw bytes are kept (escape sequences included); only their spelling
// changes. Output is split into records at line ends, so a record holds at
// most one line.
type Record struct {
	Time time.Time
	Dir  Direction
	// Data is the raw bytes (for Event, the message). Shared between
	// subscribers: do not modify it.
	Data []byte
	// Missed, on an Event record, is the number of bytes this subscriber
	// lost because it did not keep up (the record's message says so too).
	Missed int64
}

const timeLayout = "2006-01-02T15:04:05.000000Z"

// AppendText appends the record's transcript line, without the newline.
func (r Record) AppendText(dst []byte) []byte {
	dst = r.Time.UTC().AppendFormat(dst, timeLayout)
	dst = append(dst, ' ', byte(r.Dir), ' ')
	return appendEscaped(dst, r.Data)
}

// String returns the record's transcript line, without the newline.
func (r Record) String() string { return string(r.AppendText(nil)) }

// appendEscaped writes p so that the result is printable on one line and
// unescape gives p back.
func appendEscaped(dst, p []byte) []byte {
	for len(p) > 0 {
		b := p[0]
		switch {
		case b == '\\':
			dst = append(dst, '\\', '\\')
		case b == '\r':
			dst = append(dst, '\\', 'r')
		case b == '\n':
			dst = append(dst, '\\', 'n')
		case b == '\t':
			dst = append(dst, '\\', 't')
		case b == esc:
			dst = append(dst, '\\', 'e')
		case b >= 0x20 && b < 0x7f:
			dst = append(dst, b)
		case b >= 0x80:
			r, n := utf8.DecodeRune(p)
			if r != utf8.RuneError && unicode.IsPrint(r) {
				dst = append(dst, p[:n]...)
				p = p[n:]
				continue
			}
			dst = appendHex(dst, b)
		default:
			dst = appendHex(dst, b)
		}
		p = p[1:]
	}
	return dst
}

func appendHex(dst []byte, b byte) []byte {
	const digits = "0123456789abcdef"
	return append(dst, '\\', 'x', digits[b>>4], digits[b&0xf])
}

// unescape reverses appendEscaped.
func unescape(s []byte) ([]byte, error) {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		b := s[i]
		if b != '\\' {
			out = append(out, b)
			continue
		}
		if i+1 >= len(s) {
			return nil, errors.New("trailing backslash")
		}
		i++
		switch s[i] {
		case '\\':
			out = append(out, '\\')
		case 'r':
			out = append(out, '\r')
		case 'n':
			out = append(out, '\n')
		case 't':
			out = append(out, '\t')
		case 'e':
			out = append(out, esc)
		case 'x':
			if i+2 >= len(s) {
				return nil, fmt.Errorf("short \\x escape at byte %d", i-1)
			}
			v, err := strconv.ParseUint(string(s[i+1:i+3]), 16, 8)
			if err != nil {
				return nil, fmt.Errorf("bad \\x escape at byte %d", i-1)
			}
			out = append(out, byte(v))
			i += 2
		default:
			return nil, fmt.Errorf("unknown escape \\%c at byte %d", s[i], i-1)
		}
	}
	return out, nil
}

// Joined is the data of the records of direction d in a transcript (a
// console or job log), joined up, lines that are not records skipped: a
// line typed or printed slowly spans several records (the transcript
// writes a partial line after a pause), so text is looked for here, not
// record by record.
func Joined(log []byte, d Direction) []byte {
	var out []byte
	for _, line := range bytes.Split(log, []byte("\n")) {
		if r, err := ParseRecord(line); err == nil && r.Dir == d {
			out = append(out, r.Data...)
		}
	}
	return out
}

// ParseRecord parses one transcript line (without its newline), for tools
// that read transcripts back (log viewers, replay on attach, tests).
func ParseRecord(line []byte) (Record, error) {
	if len(line) < len(timeLayout)+3 {
		return Record{}, fmt.Errorf("transcript record %q: too short", line)
	}
	t, err := time.Parse(timeLayout, string(line[:len(timeLayout)]))
	if err != nil {
		return Record{}, fmt.Errorf("transcript record %q: time: %w", line, err)
	}
	rest := line[len(timeLayout):]
	if rest[0] != ' ' || rest[2] != ' ' {
		return Record{}, fmt.Errorf("transcript record %q: want \"TIME DIR DATA\"", line)
	}
	dir := Direction(rest[1])
	switch dir {
	case Read, Written, Event, Note:
	default:
		return Record{}, fmt.Errorf("transcript record %q: unknown direction %q", line, rest[1])
	}
	data, err := unescape(rest[3:])
	if err != nil {
		return Record{}, fmt.Errorf("transcript record %q: %w", line, err)
	}
	return Record{Time: t, Dir: dir, Data: data}, nil
}

// transcript writes records to an io.Writer. Output and input are collected
// per direction into whole lines, so that a prompt echoed one character at a
// time still makes one readable record: a pending partial line is written
// when its line end arrives, when a record of another kind must be written
// after it, after flushAfter, or when it grows past flushSize. Each record
// carries the time of its first byte.
type transcript struct {
	mu      sync.Mutex
	w       io.Writer // nil: records are dropped
	pending [2]pendingLine
	timer   *time.Timer
	line    []byte
	err     error // first write error; later writes are skipped
	onError func(error)
	closed  bool
}

type pendingLine struct {
	start time.Time
	data  []byte
}

const (
	flushAfter = 200 * time.Millisecond
	flushSize  = 4096
)

func newTranscript(w io.Writer, onError func(error)) *transcript {
	return &transcript{w: w, onError: onError}
}

func dirIndex(d Direction) int {
	if d == Written {
		return 1
	}
	return 0
}

// add records bytes read or written at time t.
func (t *transcript) add(d Direction, at time.Time, p []byte) {
	if t.w == nil || len(p) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	pl := &t.pending[dirIndex(d)]
	for len(p) > 0 {
		if len(pl.data) == 0 {
			pl.start = at
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			pl.data = append(pl.data, p...)
			break
		}
		pl.data = append(pl.data, p[:i+1]...)
		p = p[i+1:]
		t.flushLocked(d)
	}
	if len(pl.data) >= flushSize {
		t.flushLocked(d)
	}
	if len(pl.data) > 0 && t.timer == nil {
		t.timer = time.AfterFunc(flushAfter, t.flushAll)
	}
}

// whole writes r as one record, after whatever is pending.
func (t *transcript) whole(r Record) {
	if t.w == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.flushBothLocked()
	t.writeLocked(r)
}

func (t *transcript) flushAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.flushBothLocked()
}

// flushBothLocked writes both pending lines, older first.
func (t *transcript) flushBothLocked() {
	r, w := &t.pending[0], &t.pending[1]
	if len(w.data) > 0 && (len(r.data) == 0 || w.start.Before(r.start)) {
		t.flushLocked(Written)
	}
	t.flushLocked(Read)
	t.flushLocked(Written)
}

// flushLocked writes d's pending line as a record. A pending line of the
// other direction that started earlier goes first, so records stay in time
// order.
func (t *transcript) flushLocked(d Direction) {
	pl := &t.pending[dirIndex(d)]
	if len(pl.data) > 0 {
		other := Read
		if d == Read {
			other = Written
		}
		if op := &t.pending[dirIndex(other)]; len(op.data) > 0 && op.start.Before(pl.start) {
			t.writeLocked(Record{Time: op.start, Dir: other, Data: op.data})
			op.data = op.data[:0]
		}
		t.writeLocked(Record{Time: pl.start, Dir: d, Data: pl.data})
		pl.data = pl.data[:0]
	}
	if len(t.pending[0].data) == 0 && len(t.pending[1].data) == 0 && t.timer != nil {
		t.timer.Stop()
		t.timer = nil
	}
}

func (t *transcript) writeLocked(r Record) {
	if t.err != nil {
		return
	}
	t.line = append(r.AppendText(t.line[:0]), '\n')
	if _, err := t.w.Write(t.line); err != nil {
		t.err = err
		if t.onError != nil {
			t.onError(err)
		}
	}
}

// close writes what is pending and stops the timer; later records are
// dropped.
func (t *transcript) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.flushBothLocked()
	t.closed = true
}
