package sol

import (
	"bytes"
	"regexp"
)

// matchBuffer holds normalised console output for Expect: the text since the
// last consumed match, plus some already consumed text (for error messages),
// bounded in size.
//
// Kernel messages: the kernel writes printk lines straight to the UART, so
// one can land in the middle of a line a program is printing: "mas" +
// "[   12.345678] eth0: link up\n" + "ter# ". When the kernel prints
// timestamps (printk.time=y, the default on Debian kernels), the buffer
// recognises such a message — "[", optional spaces, digits, ".", six digits,
// "] " — starting after the beginning of a line, and once its line end has
// arrived moves the whole kernel line in front of the interrupted line. The
// text then reads "[   12.345678] eth0: link up\nmaster# ": the prompt (or a
// marker line) is whole again and the kernel message is still there to be
// matched. Not repaired: kernel messages without timestamps; an interruption
// inside an escape sequence (the sequence may eat a byte or two); an
// interrupted line longer than maxRepairLine; a line whose start was already
// consumed by a match; text that merely looks like a timestamp mid-line is
// moved the same way.
type matchBuffer struct {
	buf      []byte
	consumed int // buf[consumed:] is what Expect searches
	max      int
	// lost counts unconsumed bytes dropped because the buffer was full.
	lost int64
}

const maxRepairLine = 4096

func newMatchBuffer(max int) *matchBuffer {
	return &matchBuffer{max: max}
}

// write appends normalised text.
func (m *matchBuffer) write(p []byte) {
	if len(p) == 0 {
		return
	}
	old := len(m.buf)
	m.buf = append(m.buf, p...)
	m.repair(old)
	if len(m.buf) > m.max {
		m.trim(len(m.buf) - m.max*3/4)
	}
}

// trim drops the oldest n bytes.
func (m *matchBuffer) trim(n int) {
	if n > m.consumed {
		m.lost += int64(n - m.consumed)
		m.consumed = 0
	} else {
		m.consumed -= n
	}
	m.buf = append(m.buf[:0], m.buf[n:]...)
}

// repair moves kernel messages that interrupted a line in front of it; old
// is the buffer length before the last write (nothing before the start of
// the line containing old can need repair, it was checked before).
func (m *matchBuffer) repair(old int) {
	ls := bytes.LastIndexByte(m.buf[:old], '\n') + 1
	if ls < old-maxRepairLine {
		ls = old - maxRepairLine
	}
	for {
		if ls < m.consumed {
			ls = m.consumed
		}
		nl := bytes.IndexByte(m.buf[ls:], '\n')
		if nl < 0 {
			return // the line is not complete yet
		}
		end := ls + nl + 1 // just past the '\n'
		k := kernelStampIndex(m.buf[ls+1 : end])
		if k < 0 {
			ls = end
			continue
		}
		k += ls + 1
		// buf[ls:k] is the interrupted text, buf[k:end] the kernel line.
		rotate(m.buf[ls:end], k-ls)
		// The interrupted text now starts at ls+(end-k) and continues after
		// it; look at that line again (another message may split it).
		ls += end - k
	}
}

// rotate moves p[:n] to the end of p in place.
func rotate(p []byte, n int) {
	reverse(p[:n])
	reverse(p[n:])
	reverse(p)
}

func reverse(p []byte) {
	for i, j := 0, len(p)-1; i < j; i, j = i+1, j-1 {
		p[i], p[j] = p[j], p[i]
	}
}

// kernelStampIndex returns the index of the first printk timestamp
// "[ <digits>.<6 digits>] " in p, or -1.
func kernelStampIndex(p []byte) int {
	for i := 0; i < len(p); i++ {
		if p[i] != '[' {
			continue
		}
		j := i + 1
		for j < len(p) && p[j] == ' ' {
			j++
		}
		d := j
		for j < len(p) && p[j] >= '0' && p[j] <= '9' {
			j++
		}
		if j == d || j >= len(p) || p[j] != '.' {
			continue
		}
		j++
		f := j
		for j < len(p) && p[j] >= '0' && p[j] <= '9' {
			j++
		}
		if j-f != 6 || j+1 >= len(p) || p[j] != ']' || p[j+1] != ' ' {
			continue
		}
		return i
	}
	return -1
}

// Match is what Expect found.
type Match struct {
	// Pattern is the index of the pattern that matched (the earliest match
	// in the output wins; on a tie, the first pattern given).
	Pattern int
	// Groups are the matched text (Groups[0]) and the pattern's capture
	// groups (Groups[1:]; "" for a group that did not take part).
	Groups []string
	// Before is the output between the previous match and this one.
	Before string
}

// Text is the matched text, Groups[0].
func (m Match) Text() string { return m.Groups[0] }

// match looks for the earliest match of any pattern in the unconsumed text
// and, if there is one, consumes up to its end.
func (m *matchBuffer) match(patterns []*regexp.Regexp) (Match, bool) {
	text := m.buf[m.consumed:]
	best, bestStart := -1, 0
	var bestLoc []int
	for i, re := range patterns {
		loc := re.FindSubmatchIndex(text)
		if loc == nil {
			continue
		}
		if best < 0 || loc[0] < bestStart {
			best, bestStart, bestLoc = i, loc[0], loc
		}
	}
	if best < 0 {
		return Match{}, false
	}
	mt := Match{Pattern: best, Before: string(text[:bestLoc[0]])}
	mt.Groups = make([]string, len(bestLoc)/2)
	for g := range mt.Groups {
		if s, e := bestLoc[2*g], bestLoc[2*g+1]; s >= 0 {
			mt.Groups[g] = string(text[s:e])
		}
	}
	m.consumed += bestLoc[1]
	return mt, true
}

// discard consumes everything received so far.
func (m *matchBuffer) discard() { m.consumed = len(m.buf) }

// tail returns up to n bytes of the most recent text, consumed or not.
func (m *matchBuffer) tail(n int) string {
	if len(m.buf) <= n {
		return string(m.buf)
	}
	return string(m.buf[len(m.buf)-n:])
}
