package api

import (
	"bytes"
	"errors"
	"io"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl"
)

func TestConsoleFrames(t *testing.T) {
	big := bytes.Repeat([]byte("x"), maxFramePayload+10)
	var stream []byte
	stream = appendFrame(stream, frameOutput, []byte("hello\r\n"))
	stream = appendFrames(stream, frameOutput, big) // two frames
	stream, _ = appendMessage(stream, labctl.ConsoleMessage{Notice: &labctl.ConsoleNotice{Kind: labctl.NoticeMissed, Text: "missed 3 bytes", Missed: 3, At: time.Unix(1, 0).UTC()}})
	stream, _ = appendMessage(stream, labctl.ConsoleMessage{State: &labctl.ConsoleState{Node: "node1", State: labctl.ConsoleOpen, Writer: "job 4", Viewers: 2}})
	stream = appendFrame(stream, 'z', []byte("from a newer daemon"))
	stream = appendFrame(stream, frameHeartbeat, nil)
	stream = appendResize(stream, labctl.WindowSize{Rows: 50, Cols: 70000})

	fr := newFrameReader(bytes.NewReader(stream))
	var out []byte
	var got []string
	for {
		f, err := fr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if f.typ == frameResize {
			w, err := decodeResize(f.payload)
			if err != nil || w != (labctl.WindowSize{Rows: 50, Cols: 65535}) {
				t.Errorf("resize = %+v, %v (cols clamped to 65535)", w, err)
			}
			continue
		}
		m, ok, err := decodeMessage(f)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case !ok:
			got = append(got, "skip "+string(f.typ))
		case m.Output != nil:
			out = append(out, m.Output...)
			got = append(got, "output")
		case m.Notice != nil:
			got = append(got, "notice "+m.Notice.Text)
			if m.Notice.Missed != 3 {
				t.Errorf("notice = %+v", m.Notice)
			}
		case m.State != nil:
			got = append(got, "state "+m.State.Writer)
		}
	}
	want := "output output output notice missed 3 bytes state job 4 skip z skip h"
	if strings.Join(got, " ") != want {
		t.Errorf("frames: %q\nwant     %q", strings.Join(got, " "), want)
	}
	if !bytes.Equal(out, append([]byte("hello\r\n"), big...)) {
		t.Errorf("output: %d bytes, want %d", len(out), 7+len(big))
	}

	for _, c := range []struct {
		name string
		in   []byte
		want error
	}{
		{"type only", []byte{frameOutput}, io.ErrUnexpectedEOF},
		{"length too big", []byte{frameOutput, 0x81, 0x80, 0x08}, errFrameTooLarge},
		{"cut payload", []byte{frameOutput, 5, 'a', 'b'}, io.ErrUnexpectedEOF},
		{"cut varint", []byte{frameOutput, 0x80}, io.ErrUnexpectedEOF},
	} {
		if _, err := newFrameReader(bytes.NewReader(c.in)).next(); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if _, _, err := decodeMessage(frame{typ: frameNotice, payload: []byte("{")}); err == nil {
		t.Error("a broken notice decoded")
	}
	if _, err := decodeResize([]byte{1, 2, 3}); err == nil {
		t.Error("a 3-byte window size decoded")
	}
}

// FuzzConsoleFrames reads arbitrary bytes as a console stream: no panic,
// no payload over the limit, and the frames read, written again, read back
// the same (a length may be spelt with more varint bytes than needed, so
// the bytes themselves may differ).
func FuzzConsoleFrames(f *testing.F) {
	seed := appendFrame(nil, frameOutput, []byte("hi"))
	seed, _ = appendMessage(seed, labctl.ConsoleMessage{Notice: &labctl.ConsoleNotice{Kind: "info", Text: "x"}})
	seed = appendResize(seed, labctl.WindowSize{Rows: 24, Cols: 80})
	f.Add(seed)
	f.Add([]byte{frameState, 2, '{', '}', frameInput, 0})
	f.Add([]byte{frameOutput, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{frameNotice, 4, 'n', 'u', 'l', 'l'})
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := newFrameReader(bytes.NewReader(data))
		var again, types []byte
		var payloads [][]byte
		for {
			fm, err := fr.next()
			if err != nil {
				break
			}
			if len(fm.payload) > maxFramePayload {
				t.Fatalf("payload of %d bytes", len(fm.payload))
			}
			decodeMessage(fm)
			if fm.typ == frameResize {
				decodeResize(fm.payload)
			}
			again = appendFrame(again, fm.typ, fm.payload)
			types = append(types, fm.typ)
			payloads = append(payloads, append([]byte{}, fm.payload...))
		}
		fr = newFrameReader(bytes.NewReader(again))
		for i := range types {
			fm, err := fr.next()
			if err != nil || fm.typ != types[i] || !bytes.Equal(fm.payload, payloads[i]) {
				t.Fatalf("frame %d read back as %q %q, %v; want %q %q", i, fm.typ, fm.payload, err, types[i], payloads[i])
			}
		}
		if _, err := fr.next(); err != io.EOF {
			t.Fatalf("after the frames written again: %v, want EOF", err)
		}
	})
}

func TestConsoleOptionsFrom(t *testing.T) {
	for _, c := range []struct {
		query string
		want  labctl.ConsoleOptions
		bad   bool
	}{
		{"", labctl.ConsoleOptions{}, false},
		{"who=alice%40laptop&replay=50&force=true&rows=50&cols=200", labctl.ConsoleOptions{Who: "alice@laptop", Replay: 50, Force: true, Window: labctl.WindowSize{Rows: 50, Cols: 200}}, false},
		{"read_only=1", labctl.ConsoleOptions{ReadOnly: true}, false},
		{"force=true&read_only=true", labctl.ConsoleOptions{}, true},
		{"replay=-1", labctl.ConsoleOptions{}, true},
		{"replay=10001", labctl.ConsoleOptions{}, true},
		{"rows=65536", labctl.ConsoleOptions{}, true},
		{"force=yes", labctl.ConsoleOptions{}, true},
		{"who=" + strings.Repeat("a", 65), labctl.ConsoleOptions{}, true},
		{"who=a%0Ab", labctl.ConsoleOptions{}, true},
	} {
		q, _ := url.ParseQuery(c.query)
		got, err := consoleOptionsFrom(q)
		if c.bad {
			if !errors.Is(err, labctl.ErrInvalid) {
				t.Errorf("%q: %v, want invalid", c.query, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%q = %+v, %v; want %+v", c.query, got, err, c.want)
		}
	}
}
