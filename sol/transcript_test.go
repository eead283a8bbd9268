package sol

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl/internal/testutil"
)

func TestRecordText(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 123456789, time.UTC)
	tests := []struct {
		rec  Record
		want string
	}{
		{Record{at, Read, []byte("master# \x1b[6n"), 0}, "2026-03-04T05:06:07.123456Z < master# \\e[6n"},
		{Record{at, Written, []byte("uname -a\r"), 0}, "2026-03-04T05:06:07.123456Z > uname -a\\r"},
		{Record{at, Read, []byte("a\\b\tc\r\n"), 0}, "2026-03-04T05:06:07.123456Z < a\\\\b\\tc\\r\\n"},
		{Record{at, Read, []byte{0, 0x7f, 0xff, 0xc3}, 0}, "2026-03-04T05:06:07.123456Z < \\x00\\x7f\\xff\\xc3"},
		{Record{at, Read, []byte("café ✓"), 0}, "2026-03-04T05:06:07.123456Z < café ✓"},
		{Record{at, Event, []byte("session lost: SOL session closed by BMC"), 0}, "2026-03-04T05:06:07.123456Z ! session lost: SOL session closed by BMC"},
	}
	for _, tt := range tests {
		got := tt.rec.String()
		if got != tt.want {
			t.Errorf("got  %s\nwant %s", got, tt.want)
		}
		back, err := ParseRecord([]byte(got))
		if err != nil {
			t.Fatalf("ParseRecord(%q): %v", got, err)
		}
		if !back.Time.Equal(tt.rec.Time.Truncate(time.Microsecond)) || back.Dir != tt.rec.Dir || !bytes.Equal(back.Data, tt.rec.Data) {
			t.Errorf("round trip of %q: %+v", got, back)
		}
	}
}

func TestParseRecordErrors(t *testing.T) {
	for _, line := range []string{
		"",
		"2026-03-04T05:06:07.123456Z <",
		"2026-03-04T05:06:07.123456Z ? x",
		"2026-03-04 05:06:07.123456Z < x",
		"2026-03-04T05:06:07.123456Z < x\\",
		"2026-03-04T05:06:07.123456Z < \\q",
		"2026-03-04T05:06:07.123456Z < \\x4",
		"2026-03-04T05:06:07.123456Z < \\xzz",
		"2026-03-04T05:06:07.123456Z<x x",
	} {
		if _, err := ParseRecord([]byte(line)); err == nil {
			t.Errorf("ParseRecord(%q): no error", line)
		}
	}
}

func TestTranscriptCoalescesLines(t *testing.T) {
	var out bytes.Buffer
	tr := newTranscript(&out, nil)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tr.add(Read, t0, []byte("master# "))
	for i, c := range "ls\r" {
		tr.add(Written, t0.Add(time.Duration(i+1)*time.Millisecond), []byte(string(c)))
		tr.add(Read, t0.Add(time.Duration(i+1)*time.Millisecond+time.Microsecond), []byte(string(c)))
	}
	tr.add(Read, t0.Add(5*time.Millisecond), []byte("\nbin etc\r\nmaster# "))
	tr.whole(Record{Time: t0.Add(6 * time.Millisecond), Dir: Event, Data: []byte("session lost: x")})
	tr.close()
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	wantLines := []string{
		"2026-01-01T00:00:00.000000Z < master# ls\\r\\n",
		"2026-01-01T00:00:00.001000Z > ls\\r",
		"2026-01-01T00:00:00.005000Z < bin etc\\r\\n",
		"2026-01-01T00:00:00.005000Z < master# ",
		"2026-01-01T00:00:00.006000Z ! session lost: x",
	}
	if strings.Join(lines, "\n") != strings.Join(wantLines, "\n") {
		t.Errorf("transcript:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(wantLines, "\n"))
	}
	for _, l := range lines {
		if _, err := ParseRecord([]byte(l)); err != nil {
			t.Errorf("unparsable line %q: %v", l, err)
		}
	}
}

// A secret's placeholder is a record of its own even when the echo of the
// line typed before it was stamped first (the order under a busy scheduler).
func TestTranscriptWholeRecordStandsAlone(t *testing.T) {
	var out bytes.Buffer
	tr := newTranscript(&out, nil)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tr.add(Read, t0, []byte("passwd\r\n"))
	tr.add(Written, t0.Add(time.Microsecond), []byte("passwd\r"))
	tr.whole(Record{Time: t0.Add(2 * time.Microsecond), Dir: Written, Data: []byte("********")})
	tr.close()
	want := "2026-01-01T00:00:00.000000Z < passwd\\r\\n\n" +
		"2026-01-01T00:00:00.000001Z > passwd\\r\n" +
		"2026-01-01T00:00:00.000002Z > ********\n"
	if out.String() != want {
		t.Errorf("transcript:\n%s\nwant:\n%s", out.String(), want)
	}
}

func TestTranscriptFlushesPartialLineAfterAWhile(t *testing.T) {
	var out testutil.SyncBuffer
	tr := newTranscript(&out, nil)
	tr.add(Read, time.Now(), []byte("login: "))
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), "< login: ") {
		if time.Now().After(deadline) {
			t.Fatal("partial line never written")
		}
		time.Sleep(10 * time.Millisecond)
	}
	tr.close()
	tr.add(Read, time.Now(), []byte("after close\n"))
	if strings.Contains(out.String(), "after close") {
		t.Error("record written after close")
	}
}

func TestTranscriptWriteErrorReportedOnce(t *testing.T) {
	var calls int
	tr := newTranscript(failWriter{}, func(error) { calls++ })
	tr.add(Read, time.Now(), []byte("a\nb\nc\n"))
	tr.whole(Record{Time: time.Now(), Dir: Event, Data: []byte("x")})
	tr.close()
	if calls != 1 {
		t.Errorf("onError called %d times, want 1", calls)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// FuzzRecordRoundTrip: any bytes survive escaping and parsing, on one line.
func FuzzRecordRoundTrip(f *testing.F) {
	f.Add([]byte("master# \x1b[6n\r\n"))
	f.Add([]byte{0, 0xff, '\\', 'x'})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := Record{Time: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC), Dir: Read, Data: data}
		line := r.AppendText(nil)
		if bytes.IndexByte(line, '\n') >= 0 || bytes.IndexByte(line, '\r') >= 0 {
			t.Fatalf("line break in %q", line)
		}
		back, err := ParseRecord(line)
		if err != nil {
			t.Fatalf("ParseRecord(%q): %v", line, err)
		}
		if !bytes.Equal(back.Data, data) {
			t.Fatalf("round trip: %q -> %q", data, back.Data)
		}
	})
}

// FuzzParseRecord: arbitrary lines never panic.
func FuzzParseRecord(f *testing.F) {
	f.Add([]byte("2026-03-04T05:06:07.123456Z < a\\x41"))
	f.Fuzz(func(t *testing.T, line []byte) {
		_, _ = ParseRecord(line)
	})
}

// Joined: the records of one direction, joined up, whatever else the log
// holds (other directions, lines that are not records).
func TestJoined(t *testing.T) {
	log := "2026-01-01T00:00:00.000000Z < Booting PXEL\n" +
		"not a record\n" +
		"2026-01-01T00:00:00.100000Z > root\\r\n" +
		"2026-01-01T00:00:00.300000Z < INUX\\r\\n\n"
	if got := string(Joined([]byte(log), Read)); got != "Booting PXELINUX\r\n" {
		t.Errorf("Joined(Read) = %q", got)
	}
	if got := string(Joined([]byte(log), Written)); got != "root\r" {
		t.Errorf("Joined(Written) = %q", got)
	}
}
