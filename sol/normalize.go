package sol

// normalizer turns raw console bytes into the text that Expect matches and
// echo pacing compares against. It is streaming: an escape sequence or a CR LF
// pair split across two reads gives the same text as if it came in one read.
//
// What it does:
//   - removes ANSI/VT100 escape sequences: CSI (ESC [ ... final), OSC
//     (ESC ] ... BEL or ESC \), DCS/SOS/PM/APC strings (ESC P|X|^|_ ... ESC \),
//     and two-byte or charset sequences (ESC c, ESC 7, ESC ( B, ...);
//   - turns line ends into "\n": CR LF, CR CR LF and a lone CR (a carriage
//     return that redraws the line) all become one "\n";
//   - drops the other C0 control bytes (NUL, BEL, BS, SO/SI, ...) and DEL;
//     TAB and bytes >= 0x80 (UTF-8) are kept.
//
// Sequences are bounded: a CSI longer than maxCSI bytes or a string longer than
// maxString bytes is abandoned, so a stray ESC ] cannot swallow the rest of a
// boot log. Text that was inside an abandoned sequence is lost to matching (it
// is still in the transcript).
type normalizer struct {
	state   normState
	seqLen  int  // bytes in the current sequence, for the bounds
	param6  bool // CSI so far is exactly "6" (for the cursor query ESC[6n)
	afterCR bool // the last line-end byte emitted came from a CR
	// query is true when the most recent thing in the output was a cursor
	// position query (ESC [ 6 n) with no visible text after it: a busybox
	// shell sends one right after its prompt, once it is reading input.
	query bool
}

type normState uint8

const (
	stGround    normState = iota
	stEsc                 // after ESC
	stEscInter            // ESC followed by intermediates (0x20-0x2f), e.g. ESC ( B
	stCSI                 // after ESC [
	stString              // OSC/DCS/SOS/PM/APC body
	stStringEsc           // ESC inside a string: ST is ESC \
)

const (
	maxCSI    = 64
	maxString = 512
)

const (
	esc = 0x1b
	can = 0x18 // cancels a sequence
	sub = 0x1a // cancels a sequence
	bel = 0x07
)

// Plain is console output as Expect sees it: escape sequences removed,
// line ends as "\n", other control bytes dropped. For tools and tests
// that look for text in a log's output (see Joined).
func Plain(raw []byte) string {
	var n normalizer
	return string(n.write(nil, raw))
}

// write appends the normalised form of p to dst and returns it.
func (n *normalizer) write(dst, p []byte) []byte {
	for i := 0; i < len(p); i++ {
		b := p[i]
		switch n.state {
		case stGround:
			dst = n.ground(dst, b)
		case stEsc:
			n.seqLen++
			switch {
			case b == '[':
				n.state, n.param6 = stCSI, false
				n.seqLen = 0
			case b == ']' || b == 'P' || b == 'X' || b == '^' || b == '_':
				n.state = stString
				n.seqLen = 0
			case b >= 0x20 && b <= 0x2f:
				n.state = stEscInter
			case b >= 0x30 && b <= 0x7e:
				n.state = stGround
			case b == esc:
				// ESC ESC: the first one is abandoned, the second starts anew.
			case b == can || b == sub:
				n.state = stGround
			default:
				// A control byte or a non-ASCII byte ends the attempt; the byte
				// itself is ordinary output.
				n.state = stGround
				dst = n.ground(dst, b)
			}
		case stEscInter:
			n.seqLen++
			switch {
			case b >= 0x20 && b <= 0x2f && n.seqLen < maxCSI:
			case b >= 0x30 && b <= 0x7e:
				n.state = stGround
			case b == esc:
				n.state = stEsc
				n.seqLen = 0
			default:
				n.state = stGround
				dst = n.ground(dst, b)
			}
		case stCSI:
			n.seqLen++
			switch {
			case b >= 0x40 && b <= 0x7e: // final byte
				n.state = stGround
				if b == 'n' && n.param6 && n.seqLen == 2 {
					n.query = true
				}
			case b >= 0x20 && b <= 0x3f: // parameter and intermediate bytes
				n.param6 = n.seqLen == 1 && b == '6'
				if n.seqLen >= maxCSI {
					n.state = stGround
				}
			case b == esc:
				n.state = stEsc
				n.seqLen = 0
			case b == can || b == sub:
				n.state = stGround
			case b < 0x20:
				// VT100: C0 controls inside a CSI are executed as usual.
				dst = n.ground(dst, b)
			default:
				n.state = stGround
				dst = n.ground(dst, b)
			}
		case stString:
			n.seqLen++
			switch {
			case b == bel: // OSC may end with BEL (xterm)
				n.state = stGround
			case b == esc:
				n.state = stStringEsc
			case b == can || b == sub:
				n.state = stGround
			case n.seqLen >= maxString:
				n.state = stGround
			}
		case stStringEsc:
			if b == '\\' {
				n.state = stGround
			} else {
				// Not ST: the string was unterminated; treat this ESC as the
				// start of a new sequence and re-read b in that state.
				n.state = stEsc
				n.seqLen = 0
				i--
			}
		}
	}
	return dst
}

// ground handles b outside any escape sequence.
func (n *normalizer) ground(dst []byte, b byte) []byte {
	switch {
	case b == esc:
		n.state = stEsc
		n.seqLen = 0
	case b == '\r':
		if !n.afterCR {
			dst = append(dst, '\n')
			n.afterCR = true
			n.query = false
		}
	case b == '\n':
		if n.afterCR {
			n.afterCR = false // the LF of a CR LF: already emitted
		} else {
			dst = append(dst, '\n')
			n.query = false
		}
	case b == '\t' || b >= 0x20 && b != 0x7f:
		dst = append(dst, b)
		n.afterCR = false
		n.query = false
	default:
		// Other C0 controls and DEL: dropped; they do not end a CR LF pair.
	}
	return dst
}

// normalize is the one-shot form of normalizer.write, for tests and callers
// that have all the bytes.
func normalize(p []byte) []byte {
	var n normalizer
	return n.write(nil, p)
}
