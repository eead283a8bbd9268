package sol

import (
	"regexp"
	"strings"
	"testing"
)

var fuzzPatterns = []*regexp.Regexp{
	regexp.MustCompile(`master# `),
	regexp.MustCompile(`MARKER-(\w+) rc=(\d+)\n`),
	regexp.MustCompile(`(?s)begin(.*?)end`),
}

func TestMatchBufferKernelRepair(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string
		want   string
	}{
		{
			name:   "prompt split by a printk line",
			chunks: []string{"mas", "[   12.345678] eth0: link up\n", "ter# "},
			want:   "[   12.345678] eth0: link up\nmaster# ",
		},
		{
			name:   "printk after a prompt",
			chunks: []string{"master# ", "[    5.000001] random: crng init done\n"},
			want:   "[    5.000001] random: crng init done\nmaster# ",
		},
		{
			name:   "marker split twice",
			chunks: []string{"MARKER-ab", "[    1.000000] a\n", " rc=", "[    2.000000] b\n", "0\n"},
			want:   "[    1.000000] a\n[    2.000000] b\nMARKER-ab rc=0\n",
		},
		{
			name:   "printk at a line start is left alone",
			chunks: []string{"x\n[    1.000000] a\ny\n"},
			want:   "x\n[    1.000000] a\ny\n",
		},
		{
			name:   "kernel line arriving in pieces",
			chunks: []string{"ab", "[  ", " 1.0000", "00] hello", " world\n", "cd\n"},
			want:   "[   1.000000] hello world\nabcd\n",
		},
		{
			name:   "not a timestamp (5 decimals)",
			chunks: []string{"ab[ 1.00000] x\n"},
			want:   "ab[ 1.00000] x\n",
		},
		{
			name:   "not a timestamp (no space after)",
			chunks: []string{"ab[1.000000]x\n"},
			want:   "ab[1.000000]x\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mb := newMatchBuffer(1 << 20)
			for _, c := range tt.chunks {
				mb.write([]byte(c))
			}
			if got := string(mb.buf); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestMatchBufferRepairRespectsConsumed(t *testing.T) {
	mb := newMatchBuffer(1 << 20)
	mb.write([]byte("login: "))
	if _, ok := mb.match([]*regexp.Regexp{regexp.MustCompile(`login: `)}); !ok {
		t.Fatal("no match")
	}
	mb.write([]byte("[    3.000000] late\nroot\n"))
	// The kernel line starts right at the consumed position: nothing
	// unconsumed was interrupted, nothing moves.
	if got, want := string(mb.buf), "login: [    3.000000] late\nroot\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestMatchBufferMatch(t *testing.T) {
	mb := newMatchBuffer(1 << 20)
	mb.write([]byte("boot...\nMARKER-x1 rc=3\nsha: 0123abcd  -\nmaster# "))
	m, ok := mb.match([]*regexp.Regexp{
		regexp.MustCompile(`master# `),
		regexp.MustCompile(`MARKER-(\w+) rc=(\d+)\n`),
	})
	if !ok {
		t.Fatal("no match")
	}
	if m.Pattern != 1 || m.Text() != "MARKER-x1 rc=3\n" || m.Groups[1] != "x1" || m.Groups[2] != "3" || m.Before != "boot...\n" {
		t.Errorf("got %+v", m)
	}
	// Consumed: the marker cannot match again; the prompt can.
	if _, ok := mb.match([]*regexp.Regexp{regexp.MustCompile(`MARKER`)}); ok {
		t.Error("consumed text matched again")
	}
	m, ok = mb.match([]*regexp.Regexp{regexp.MustCompile(`(?s)sha: ([0-9a-f]+)\s+-\n(.*)# `)})
	if !ok || m.Groups[1] != "0123abcd" || m.Groups[2] != "master" {
		t.Errorf("spanning match: %+v %v", m, ok)
	}
	// Optional group that did not take part.
	mb.write([]byte("x=1\n"))
	m, ok = mb.match([]*regexp.Regexp{regexp.MustCompile(`x=(\d)(y)?\n`)})
	if !ok || len(m.Groups) != 3 || m.Groups[2] != "" {
		t.Errorf("optional group: %+v", m)
	}
}

func TestMatchBufferTieGoesToFirstPattern(t *testing.T) {
	mb := newMatchBuffer(1 << 20)
	mb.write([]byte("abc"))
	m, ok := mb.match([]*regexp.Regexp{regexp.MustCompile(`ab`), regexp.MustCompile(`abc`)})
	if !ok || m.Pattern != 0 {
		t.Errorf("got %+v", m)
	}
}

func TestMatchBufferBounded(t *testing.T) {
	mb := newMatchBuffer(1000)
	line := strings.Repeat("x", 99) + "\n"
	for range 50 {
		mb.write([]byte(line))
	}
	if len(mb.buf) > 1000 {
		t.Fatalf("buffer holds %d bytes, limit 1000", len(mb.buf))
	}
	if mb.lost == 0 {
		t.Error("dropping unconsumed output was not counted")
	}
	mb.write([]byte("end# "))
	if _, ok := mb.match([]*regexp.Regexp{regexp.MustCompile(`end# `)}); !ok {
		t.Error("newest output not matched after trimming")
	}
	if got := mb.tail(5); got != "end# " {
		t.Errorf("tail = %q", got)
	}
}

func TestMatchBufferDiscard(t *testing.T) {
	mb := newMatchBuffer(1 << 20)
	mb.write([]byte("old# "))
	mb.discard()
	if _, ok := mb.match([]*regexp.Regexp{regexp.MustCompile(`old# `)}); ok {
		t.Error("discarded output matched")
	}
}

// FuzzMatchBuffer writes arbitrary text in two pieces: repair must keep the
// same bytes, and the consumed position must stay inside the buffer.
func FuzzMatchBuffer(f *testing.F) {
	f.Add([]byte("mas[   12.345678] eth0: link up\nter# "), uint(3), uint(5))
	f.Add([]byte("a[ 1.000000] b[ 2.000000] c\nd\n"), uint(1), uint(0))
	f.Fuzz(func(t *testing.T, in []byte, cut, max uint) {
		text := normalize(in)
		mb := newMatchBuffer(int(max%256) + 16)
		k := int(cut % uint(len(text)+1))
		mb.write(text[:k])
		mb.match(fuzzPatterns)
		mb.write(text[k:])
		if mb.consumed < 0 || mb.consumed > len(mb.buf) {
			t.Fatalf("consumed %d outside buffer of %d", mb.consumed, len(mb.buf))
		}
		if len(mb.buf) > mb.max {
			t.Fatalf("buffer %d over max %d", len(mb.buf), mb.max)
		}
		mb.match(fuzzPatterns)
	})
}
