package sol

import (
	"bytes"
	"testing"
)

func TestNormalize(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain", "master# ", "master# "},
		{"crlf", "a\r\nb\r\n", "a\nb\n"},
		{"cr cr lf", "a\r\r\nb", "a\nb"},
		{"lone cr redraws", "10%\r20%", "10%\n20%"},
		{"lf lf", "a\n\nb", "a\n\nb"},
		{"crlf crlf", "a\r\n\r\nb", "a\n\nb"},
		{"lf cr", "a\n\rb", "a\n\nb"},
		{"csi color", "\x1b[1;32mgreen\x1b[0m", "green"},
		{"csi private", "\x1b[?7lwrap\x1b[?25h", "wrap"},
		{"cursor query", "# \x1b[6n", "# "},
		{"seabios reset and clear", "\x1bc\x1b[2J\x1b[1;1HSeaBIOS", "SeaBIOS"},
		{"charset", "\x1b(Bx\x1b)0y", "xy"},
		{"osc bel", "\x1b]0;title\x07text", "text"},
		{"osc st", "\x1b]0;title\x1b\\text", "text"},
		{"dcs", "\x1bPq#0;2;0;0;0\x1b\\after", "after"},
		{"esc 7 8", "\x1b7a\x1b8", "a"},
		{"controls dropped", "a\x00b\x07c\x08d\x0ee\x0ff\x7fg", "abcdefg"},
		{"tab kept", "a\tb", "a\tb"},
		{"utf8 kept", "caf\xc3\xa9", "caf\xc3\xa9"},
		{"control inside csi runs", "\x1b[1\r\nm", "\n"},
		{"cr esc lf", "a\r\x1b[K\nb", "a\nb"},
		{"esc esc", "\x1b\x1b[31mx", "x"},
		{"can cancels", "\x1b[12\x18x", "x"},
		{"esc then utf8", "\x1b\xc3\xa9", "\xc3\xa9"},
		{"unterminated osc is bounded", "\x1b]" + string(bytes.Repeat([]byte("a"), maxString)) + "tail", "tail"},
		{"long csi is bounded", "\x1b[" + string(bytes.Repeat([]byte("1"), maxCSI)) + "tail", "tail"},
		{"string esc not st", "\x1b]0;t\x1b[31mx", "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(normalize([]byte(tt.in))); got != tt.want {
				t.Errorf("normalize(%q) = %q, want %q", tt.in, got, tt.want)
			}
			// Byte by byte gives the same result.
			var n normalizer
			var got []byte
			for i := 0; i < len(tt.in); i++ {
				got = n.write(got, []byte{tt.in[i]})
			}
			if string(got) != tt.want {
				t.Errorf("byte by byte: %q, want %q", got, tt.want)
			}
		})
	}
}

func TestNormalizeCursorQuery(t *testing.T) {
	tests := []struct {
		in    string
		query bool
	}{
		{"master# \x1b[6n", true},
		{"master# \x1b[6n\x1b[0m", true}, // invisible output keeps it
		{"master# \x1b[6nx", false},
		{"master# \x1b[6n\r\n", false},
		{"\x1b[16n", false},
		{"\x1b[?6n", false},
		{"\x1b[6m", false},
		{"master# ", false},
	}
	for _, tt := range tests {
		var n normalizer
		n.write(nil, []byte(tt.in))
		if n.query != tt.query {
			t.Errorf("%q: query = %v, want %v", tt.in, n.query, tt.query)
		}
	}
}

// FuzzNormalize checks, for arbitrary console bytes, that the output holds no
// escape or CR, that splitting the input anywhere changes nothing, and that
// matching runs on it.
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{
		"master# \x1b[6n", "\x1bc\x1b[2J\x1b[1;1HSeaBIOS\r\n", "a\r\r\nb\rc",
		"\x1b]0;x\x07", "\x1bP\x1b\\", "mas[   12.345678] eth0: up\r\nter# ",
		"MARKER-ab rc=0\r\n", "\xff\xfe\x1b[", "\x1b(",
	} {
		f.Add([]byte(s), uint(3))
	}
	f.Fuzz(func(t *testing.T, in []byte, cut uint) {
		out := normalize(in)
		if bytes.IndexByte(out, esc) >= 0 || bytes.IndexByte(out, '\r') >= 0 {
			t.Fatalf("normalize(%q) = %q: escape or CR left", in, out)
		}
		for _, b := range out {
			if b < 0x20 && b != '\n' && b != '\t' || b == 0x7f {
				t.Fatalf("normalize(%q) = %q: control byte %#x left", in, out, b)
			}
		}
		k := int(cut % uint(len(in)+1))
		var n normalizer
		split := n.write(nil, in[:k])
		split = n.write(split, in[k:])
		if !bytes.Equal(split, out) {
			t.Fatalf("split at %d: %q, whole: %q", k, split, out)
		}
		if len(out) > len(in) {
			t.Fatalf("output longer than input: %q -> %q", in, out)
		}
		// The match buffer takes it, keeps every byte (repair only moves
		// text) and matching does not panic.
		mb := newMatchBuffer(1 << 20)
		mb.write(out[:len(out)/2])
		mb.write(out[len(out)/2:])
		if len(mb.buf) != len(out) || !sameBytes(mb.buf, out) {
			t.Fatalf("match buffer changed the text: %q -> %q", out, mb.buf)
		}
		mb.match(fuzzPatterns)
	})
}

// sameBytes says whether a and b hold the same bytes in any order.
func sameBytes(a, b []byte) bool {
	var count [256]int
	for _, c := range a {
		count[c]++
	}
	for _, c := range b {
		count[c]--
	}
	for _, n := range count {
		if n != 0 {
			return false
		}
	}
	return true
}

// Plain: a firmware's screen mirrored to the serial port, its words
// between cursor moves and colours, reads as the words.
func TestPlain(t *testing.T) {
	raw := "\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS\r\n\x1b[0;1miPXE\x1b[0m -- \x1b7Press\x1b8 Ctrl-B\r\nmaster# \x1b[6n"
	if got, want := Plain([]byte(raw)), "SeaBIOS\niPXE -- Press Ctrl-B\nmaster# "; got != want {
		t.Errorf("Plain = %q, want %q", got, want)
	}
}
