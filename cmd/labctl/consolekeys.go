package main

// The keyboard side of labctl console: escapes at the start of a line, as
// ssh and ipmitool have them.
//
//	~.  detach          ~B  send a break     ~R  power-cycle (asks first)
//	~?  help            ~~  a literal ~
//
// "At the start of a line" means at attach, or after Enter (CR or LF) was
// typed. A ~ followed by anything else is typed as it is (both bytes), as
// ssh does. Nothing the parser sends is an escape for the console behind
// the daemon: the broker quotes ipmitool's own escapes (a ~ at the start
// of a line reaches the node as ~, never as an ipmitool command).

// escAction is what a piece of keyboard input asks for.
type escAction int

const (
	escSend     escAction = iota // type data on the console
	escDetach                    // ~.
	escHelp                      // ~?
	escBreak                     // ~B
	escPowerAsk                  // ~R: ask the person to confirm
	escPowerYes                  // the answer was y
	escPowerNo                   // any other answer
)

func (a escAction) String() string {
	return [...]string{"send", "detach", "help", "break", "power?", "power-yes", "power-no"}[a]
}

// escEvent is one action; Data is set for escSend.
type escEvent struct {
	Action escAction
	Data   []byte
}

// escapeChar is labctl console's escape character.
const escapeChar = '~'

// escapeParser turns keyboard bytes into actions. The zero value is not
// ready: use newEscapeParser.
//
// The terminal answers the node's queries through the keyboard too: busybox
// asks for the cursor position after every prompt, and the answer (ESC [
// 24 ; 15 R) arrives as if typed, right after Enter. Such reports pass
// through without moving the start of a line, or ~. would not work at a
// fresh prompt. Other escape sequences (arrow keys) are typing.
type escapeParser struct {
	lineStart  bool // the last byte typed ended a line (or nothing was typed yet)
	pending    bool // a ~ at the start of a line, waiting for the next byte
	confirming bool // ~R asked; the next byte answers

	seq       int  // 0, or 1 after ESC, 2 inside ESC [ ...
	seqDigits bool // the sequence has a digit (a report has)
	seqStart  bool // lineStart before the sequence began
}

func newEscapeParser() *escapeParser { return &escapeParser{lineStart: true} }

// feed parses in and returns the actions, bytes to send coalesced. After
// escDetach the rest of in is ignored (and feed should not be called
// again). The parser carries state across calls: a ~ at the end of one
// read pairs with the first byte of the next.
func (p *escapeParser) feed(in []byte) []escEvent {
	var out []escEvent
	send := func(b ...byte) {
		if n := len(out); n > 0 && out[n-1].Action == escSend {
			out[n-1].Data = append(out[n-1].Data, b...)
			return
		}
		out = append(out, escEvent{Action: escSend, Data: append([]byte(nil), b...)})
	}
	for _, b := range in {
		switch {
		case p.confirming:
			p.confirming = false
			if b == 'y' || b == 'Y' {
				out = append(out, escEvent{Action: escPowerYes})
			} else {
				out = append(out, escEvent{Action: escPowerNo})
			}
		case p.pending:
			p.pending = false
			switch b {
			case '.':
				return append(out, escEvent{Action: escDetach})
			case '?':
				out = append(out, escEvent{Action: escHelp})
			case 'B':
				out = append(out, escEvent{Action: escBreak})
			case 'R':
				p.confirming = true
				out = append(out, escEvent{Action: escPowerAsk})
			case escapeChar:
				send(escapeChar)
				p.lineStart = false
			default:
				send(escapeChar, b)
				p.track(b)
			}
		case p.lineStart && b == escapeChar:
			p.pending = true
		default:
			send(b)
			p.track(b)
		}
	}
	return out
}

// track follows a sent byte: the start of a line, and escape sequences
// (a terminal report leaves the start of a line where it was).
func (p *escapeParser) track(b byte) {
	switch {
	case p.seq == 1 && b == '[':
		p.seq = 2
		return
	case p.seq == 2 && (b >= '0' && b <= '9' || b == ';' || b == '?' || b == '>'):
		p.seqDigits = p.seqDigits || b >= '0' && b <= '9'
		return
	case p.seq == 2 && p.seqDigits && (b == 'R' || b == 'c' || b == 'n'):
		p.seq = 0
		p.lineStart = p.seqStart
		return
	case b == 0x1b:
		if p.seq == 0 {
			p.seqStart = p.lineStart
		}
		p.seq, p.seqDigits = 1, false
		p.lineStart = false
		return
	}
	p.seq = 0
	p.lineStart = b == '\r' || b == '\n'
}
