//go:build !labctl_run

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

import (
	"github.com/labctl/labctl"
)

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
// The terminal answers the node's queries through the keyboard too
// (labctl.TerminalReportLen): such a report at the start of a line is sent
// without moving the start of a line, or ~. would not work at a fresh
// busybox prompt. Other escape sequences (arrow keys) are typing.
type escapeParser struct {
	lineStart  bool // the last byte typed ended a line (or nothing was typed yet)
	pending    bool // a ~ at the start of a line, waiting for the next byte
	confirming bool // ~R asked; the next byte answers
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
	for i := 0; i < len(in); i++ {
		b := in[i]
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
				p.lineStart = b == '\r' || b == '\n'
			}
		case p.lineStart && b == escapeChar:
			p.pending = true
		case p.lineStart && labctl.TerminalReportLen(in[i:]) > 0:
			n := labctl.TerminalReportLen(in[i:])
			send(in[i : i+n]...)
			i += n - 1
		default:
			send(b)
			p.lineStart = b == '\r' || b == '\n'
		}
	}
	return out
}
