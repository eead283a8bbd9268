package console

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/labctl/labctl"
)

func TestBoundedQueue(t *testing.T) {
	q := newBoundedQueue(10,
		func(s string) int {
			if strings.HasPrefix(s, "!") {
				return 0
			}
			return len(s)
		},
		func(n int64) string { return fmt.Sprintf("!missed %d", n) })
	for _, s := range []string{"aaaa", "bbbb", "cccc", "dd", "!note", "e"} {
		q.push(s)
	}
	// cccc did not fit (8+4 > 10), dd did, the note is kept regardless,
	// e did not fit either: its loss is told last.
	var got []string
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for {
		s, err := q.next(ctx, nil)
		if err != nil {
			break
		}
		got = append(got, s)
	}
	want := []string{"aaaa", "bbbb", "!missed 4", "dd", "!note", "!missed 1"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("queue gave %q, want %q", got, want)
	}
	if q.dropped() != 5 {
		t.Errorf("dropped %d, want 5", q.dropped())
	}
	// A gap at the end is reported by next itself.
	q.push("0123456789")
	q.push("x")
	if s, _ := q.next(ctx, nil); s != "0123456789" {
		t.Errorf("next = %q", s)
	}
	if s, _ := q.next(ctx, nil); s != "!missed 1" {
		t.Errorf("a trailing gap: next = %q, want the missed marker", s)
	}
	q.push("tail")
	q.finish(io.EOF, false)
	if s, err := q.next(ctx, nil); s != "tail" || err != nil {
		t.Errorf("after finish: %q, %v; want what was queued first", s, err)
	}
	if _, err := q.next(context.Background(), nil); err != io.EOF {
		t.Errorf("after finish and drain: %v, want io.EOF", err)
	}
}

func TestMergeMessages(t *testing.T) {
	out := func(s string) labctl.ConsoleMessage { return labctl.ConsoleMessage{Output: []byte(s)} }
	note := labctl.ConsoleMessage{Notice: &labctl.ConsoleNotice{Text: "n"}}
	m, n := mergeMessages([]labctl.ConsoleMessage{out("ab"), out("cd"), note, out("ef")})
	if string(m.Output) != "abcd" || n != 2 {
		t.Errorf("merge = %q, %d; want abcd, 2", m.Output, n)
	}
	if m, n := mergeMessages([]labctl.ConsoleMessage{note, out("x")}); m.Notice == nil || n != 1 {
		t.Errorf("a notice first: %+v, %d", m, n)
	}
	big := out(strings.Repeat("x", mergeOutput))
	if m, n := mergeMessages([]labctl.ConsoleMessage{big, out("y")}); n != 1 || len(m.Output) != mergeOutput {
		t.Errorf("over the merge limit: %d bytes in %d", len(m.Output), n)
	}
}

func TestReplayRing(t *testing.T) {
	r := replayRing{maxLines: 3, maxBytes: 1 << 10}
	r.add([]byte("one\r\ntwo\r\nthr"))
	r.add([]byte("ee\r\nfour\r\nprompt# "))
	if got := string(r.last(2)); got != "three\r\nfour\r\nprompt# " {
		t.Errorf("last(2) = %q", got)
	}
	if got := string(r.last(10)); got != "two\r\nthree\r\nfour\r\nprompt# " {
		t.Errorf("last(10) with 3 lines kept = %q", got)
	}
	if r.last(0) != nil {
		t.Error("last(0) is not empty")
	}
	small := replayRing{maxLines: 100, maxBytes: 10}
	small.add([]byte("0123456789abcdef"))
	if got := string(small.last(1)); got != "6789abcdef" {
		t.Errorf("an endless line kept as %q, want its last 10 bytes", got)
	}
	small.add([]byte("\n12345\n"))
	if got := string(small.last(5)); got != "12345\n" || small.bytes > 10 {
		t.Errorf("byte cap: %q (%d bytes)", got, small.bytes)
	}
}

func TestIpmitoolEscape(t *testing.T) {
	for _, c := range []struct {
		argv []string
		want byte
	}{
		{[]string{"ipmitool", "-I", "lanplus", "-E", "sol", "activate"}, '~'},
		{[]string{"/usr/bin/ipmitool", "-e", "&", "sol", "activate"}, '&'},
		{[]string{"ipmitool", "-e^", "sol", "activate"}, '^'},
		{[]string{"nice", "-n", "5", "ipmitool", "-e", "&", "sol", "activate"}, '&'},
		{[]string{"conserver-console", "node1"}, 0},
		{nil, 0},
	} {
		if got := ipmitoolEscape(c.argv); got != c.want {
			t.Errorf("ipmitoolEscape(%q) = %q, want %q", c.argv, got, c.want)
		}
	}
}

func TestQuoteEscapes(t *testing.T) {
	for _, c := range []struct {
		in, want  string
		lineStart bool
		endsLine  bool
	}{
		{"~.", "~~.", true, false},
		{"a~.", "a~.", true, false},
		{"ls\r~.\r", "ls\r~~.\r", true, true},
		{"~~", "~~~", true, false},
		{"x\n~B", "x\n~~B", false, false},
		{"~", "~", false, false},
		{"", "", true, true},
	} {
		got, ls := quoteEscapes(nil, []byte(c.in), '~', c.lineStart)
		if string(got) != c.want || ls != c.endsLine {
			t.Errorf("quoteEscapes(%q, lineStart %v) = %q, %v; want %q, %v", c.in, c.lineStart, got, ls, c.want, c.endsLine)
		}
	}
}

// ipmitool is ipmitool's input handling (processSolUserInput): what it
// sends to the node, and the escape commands it runs.
type ipmitool struct {
	esc        byte
	lastWasCR  bool
	pending    bool
	sent       []byte
	commands   []byte // '.', 'B', '?', ^Z, ^X
	terminated bool
}

func (m *ipmitool) input(p []byte) {
	for _, ch := range p {
		if m.terminated {
			return
		}
		if m.pending {
			m.pending = false
			switch ch {
			case '.':
				m.commands = append(m.commands, ch)
				m.terminated = true
				continue
			case 'B', '?', 'Z' - 64, 'X' - 64:
				m.commands = append(m.commands, ch)
				continue
			default:
				if ch != m.esc {
					m.sent = append(m.sent, m.esc)
				}
				m.sent = append(m.sent, ch)
			}
		} else {
			if m.lastWasCR && ch == m.esc {
				m.pending = true
				continue
			}
			m.sent = append(m.sent, ch)
		}
		m.lastWasCR = ch == '\r' || ch == '\n'
	}
}

// recorder is a console stream that records what is written to it, in at
// most limit bytes per Write.
type recorder struct {
	bytes.Buffer
	limit int
}

func (r *recorder) Read([]byte) (int, error) { return 0, io.EOF }
func (r *recorder) Close() error             { return nil }
func (r *recorder) Write(p []byte) (int, error) {
	if r.limit > 0 && len(p) > r.limit {
		r.Buffer.Write(p[:r.limit])
		return r.limit, io.ErrShortWrite
	}
	return r.Buffer.Write(p)
}

// Whatever is typed through the broker's stream reaches the node through
// ipmitool unchanged, and never runs an ipmitool escape command; the
// broker's break is ipmitool's ~B.
func TestBrokerStreamThroughIpmitool(t *testing.T) {
	rec := &recorder{}
	s := &brokerStream{ReadWriteCloser: rec, escape: '~', lineStart: true}
	typed := []string{"~.", "ls\r", "~B\r", "~~\r", "echo ~/x\r", "~?", "\r~\x1a"}
	var all []byte
	for _, p := range typed {
		if n, err := s.Write([]byte(p)); n != len(p) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", p, n, err)
		}
		all = append(all, p...)
	}
	m := &ipmitool{esc: '~', lastWasCR: true}
	m.input(rec.Bytes())
	if !bytes.Equal(m.sent, all) || len(m.commands) > 0 {
		t.Errorf("ipmitool got %q from typing %q: sent %q, commands %q", rec.Bytes(), all, m.sent, m.commands)
	}

	// A break at the start of a line is ~B; elsewhere it is refused.
	rec.Reset()
	s = &brokerStream{ReadWriteCloser: rec, escape: '~', lineStart: true}
	s.Write([]byte("abc"))
	if err := s.sendBreak(); err == nil || !strings.Contains(err.Error(), "start of a line") {
		t.Errorf("break in mid-line: %v", err)
	}
	s.Write([]byte("\r"))
	if err := s.sendBreak(); err != nil {
		t.Fatal(err)
	}
	s.Write([]byte("~x\r"))
	m = &ipmitool{esc: '~', lastWasCR: true}
	m.input(rec.Bytes())
	if string(m.commands) != "B" || string(m.sent) != "abc\r~x\r" {
		t.Errorf("ipmitool ran %q and sent %q, want one break and the text", m.commands, m.sent)
	}

	// A terminal's cursor report right after Enter (busybox asks after
	// every prompt) is held, so a break can still be sent; it reaches the
	// node after the break, or before the next typing.
	rec.Reset()
	s = &brokerStream{ReadWriteCloser: rec, escape: '~', lineStart: true}
	s.Write([]byte("ls\r"))
	s.Write([]byte("\x1b[50;15R"))
	if err := s.sendBreak(); err != nil {
		t.Fatalf("break after a cursor report at a prompt: %v", err)
	}
	s.Write([]byte("\r"))
	s.Write([]byte("\x1b[50;15R"))
	s.Write([]byte("~x\r"))
	m = &ipmitool{esc: '~', lastWasCR: true}
	m.input(rec.Bytes())
	if want := "ls\r\x1b[50;15R\r\x1b[50;15R~x\r"; string(m.commands) != "B" || string(m.sent) != want {
		t.Errorf("ipmitool ran %q and sent %q, want one break and %q", m.commands, m.sent, want)
	}
	for _, r := range []string{"\x1b[5;9R", "\x1b[?1;2c", "\x1b[0n", "\x1b[1;1R\x1b[>0;95;0c"} {
		if !isTerminalReport([]byte(r)) {
			t.Errorf("%q is a terminal report", r)
		}
	}
	for _, r := range []string{"\x1b[A", "\x1b[R", "x\x1b[5;9R", "\x1b[5;9", ""} {
		if isTerminalReport([]byte(r)) {
			t.Errorf("%q is not a terminal report", r)
		}
	}

	// A short write reports the input bytes that went.
	rec = &recorder{limit: 3}
	s = &brokerStream{ReadWriteCloser: rec, escape: '~', lineStart: true}
	n, err := s.Write([]byte("~.ab")) // "~~.ab": "~~." goes
	if n != 2 || err == nil || s.lineStart {
		t.Errorf("short write: %d, %v (lineStart %v); want 2 bytes taken, an error, mid-line", n, err, s.lineStart)
	}

	// Other consoles: no quoting, and no break unless the stream has one.
	rec = &recorder{}
	s = &brokerStream{ReadWriteCloser: rec, lineStart: true}
	s.Write([]byte("~."))
	if rec.String() != "~." {
		t.Errorf("a console that is not ipmitool got %q", rec.String())
	}
	if err := s.sendBreak(); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("break on a plain stream: %v", err)
	}
}

func FuzzIpmitoolQuoting(f *testing.F) {
	f.Add([]byte("~."), []byte("\r~B"), byte('~'))
	f.Add([]byte("ls\r~~\r~?"), []byte("~\x1a\n~."), byte('&'))
	f.Fuzz(func(t *testing.T, a, b []byte, esc byte) {
		switch esc {
		case 0:
			t.Skip("0 means the console is not ipmitool")
		case '.', 'B', '?', 'Z' - 64, 'X' - 64:
			t.Skip("ipmitool cannot send its escape character when it is one of its commands")
		}
		rec := &recorder{}
		s := &brokerStream{ReadWriteCloser: rec, escape: esc, lineStart: true}
		s.Write(a)
		s.Write(b)
		s.mu.Lock()
		s.flushHeld() // a terminal report typed last waits for the next typing
		s.mu.Unlock()
		m := &ipmitool{esc: esc, lastWasCR: true}
		m.input(rec.Bytes())
		want := append(append([]byte{}, a...), b...)
		if !bytes.Equal(m.sent, want) || len(m.commands) > 0 {
			t.Fatalf("typed %q: ipmitool sent %q and ran %q", want, m.sent, m.commands)
		}
	})
}

func TestTerminalReports(t *testing.T) {
	for _, c := range []struct{ in, kept string }{
		{"\x1b[24;1R", ""},
		{"ls\x1b[5;12R\r", "ls\r"},
		{"\x1b[?1;2c\x1b[>0;10;1c\x1b[0n", ""},
		{"\x1b[A\x1b[1;5D", "\x1b[A\x1b[1;5D"}, // arrow keys stay
		{"\x1b[c", "\x1b[c"},                   // a query, not a report
		{"\x1b[12", "\x1b[12"},
		{"plain", "plain"},
	} {
		if got := string(dropTerminalReports([]byte(c.in))); got != c.kept {
			t.Errorf("dropTerminalReports(%q) = %q, want %q", c.in, got, c.kept)
		}
	}
	for _, c := range []struct{ in, want string }{
		{"master# \x1b[6n", "master# "},
		{"\x1b[c\x1b[5nA\x1b[1mB\x1b[0m", "A\x1b[1mB\x1b[0m"},
		{"\x1b[24;1R", "\x1b[24;1R"},
		{"end\x1b", "end\x1b"},
	} {
		if got := string(stripQueries([]byte(c.in))); got != c.want {
			t.Errorf("stripQueries(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestRotatingFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "node1", "console.log")
	w := &rotatingFile{path: path, max: 100, keep: 2, log: slog.New(slog.DiscardHandler)}
	line := strings.Repeat("x", 39) + "\n" // 40 bytes: two per file
	for i := range 7 {
		w.Write([]byte(fmt.Sprintf("%d%s", i, line[1:])))
	}
	w.close()
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(dir, "node1", name))
		var firsts []byte
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if l != "" {
				firsts = append(firsts, l[0])
			}
		}
		return string(firsts)
	}
	if got := read("console.log") + "|" + read("console.log.1") + "|" + read("console.log.2"); got != "6|45|23" {
		t.Errorf("files hold lines %s (current|.1|.2), want 6|45|23", got)
	}
	if _, err := os.Stat(path + ".3"); err == nil {
		t.Error("more rotated files than kept")
	}
}
