package console

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/sol"
)

// brokerDialer wraps a node's console dialer for the broker. It remembers
// the stream in use, so that a person can send a break on it, and for an
// ipmitool console it keeps ipmitool's own escapes out of what is typed.
//
// ipmitool reads its escape character (~, or -e's) at the start of a line
// as a command: "~." ends ipmitool (and so the session), "~B" sends a
// break, "~^Z" suspends it, "~~" sends one "~". Whatever the job or a
// person types goes through ipmitool, so a "~" at the start of a line is
// doubled on its way in: the node gets exactly what was typed, and nothing
// typed can end the session by accident. Only the broker's own break sends
// an escape on purpose.
type brokerDialer struct {
	sol.Dialer
	escape byte // ipmitool's escape character; 0: not ipmitool
	// native says the console is a stream (native SOL), not a command.
	native bool

	mu  sync.Mutex
	cur *brokerStream
}

// wrapDialer wraps d (see brokerDialer).
func wrapDialer(d sol.Dialer) *brokerDialer {
	bd := &brokerDialer{Dialer: d, native: true}
	if cd, ok := d.(*sol.CommandDialer); ok {
		bd.native = false
		bd.escape = ipmitoolEscape(cd.Argv)
	}
	return bd
}

// ipmitoolEscape is the escape character of an ipmitool command line
// (~ unless -e says otherwise), or 0 if argv does not run ipmitool
// (behind a wrapper such as nice, too).
func ipmitoolEscape(argv []string) byte {
	name, args := sol.Program(argv)
	if name != "ipmitool" {
		return 0
	}
	esc := byte('~')
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-e" && i+1 < len(args) && args[i+1] != "":
			esc = args[i+1][0]
			i++
		case strings.HasPrefix(a, "-e") && len(a) > 2:
			esc = a[2]
		}
	}
	return esc
}

// Dial implements sol.Dialer.
func (d *brokerDialer) Dial(ctx context.Context) (io.ReadWriteCloser, error) {
	s, err := d.Dialer.Dial(ctx)
	if err != nil {
		return nil, err
	}
	bs := &brokerStream{ReadWriteCloser: s, escape: d.escape, lineStart: true}
	d.mu.Lock()
	d.cur = bs
	d.mu.Unlock()
	return bs, nil
}

// errNotConnected: a break asked for while the console is down.
var errNotConnected = errors.New("the console is not connected")

// sendBreak sends a serial break on the stream in use.
func (d *brokerDialer) sendBreak() error {
	d.mu.Lock()
	cur := d.cur
	d.mu.Unlock()
	if cur == nil {
		return errNotConnected
	}
	err := cur.sendBreak()
	if errors.Is(err, errors.ErrUnsupported) {
		if d.native {
			return errors.New("native SOL in labctl cannot send a break yet (go-ipmi's SOL stream has no break bit); " +
				"a device type with the ipmitool console (driver = \"command\") can")
		}
		return errors.New("labctl knows no break for this console's connection command (it knows ipmitool's ~B)")
	}
	return err
}

// brokerStream is one console stream as the broker hands it to a session.
type brokerStream struct {
	io.ReadWriteCloser
	escape byte

	mu        sync.Mutex
	lineStart bool // what ipmitool thinks: the last byte it got ended a line
	held      []byte
	buf       []byte
}

// Write implements io.Writer, doubling ipmitool's escape character at the
// start of a line.
func (s *brokerStream) Write(p []byte) (int, error) {
	if s.escape == 0 {
		return s.ReadWriteCloser.Write(p)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lineStart && isTerminalReport(p) {
		s.held = append(s.held, p...)
		return len(p), nil
	}
	if err := s.flushHeld(); err != nil {
		return 0, err
	}
	var ls bool
	s.buf, ls = quoteEscapes(s.buf[:0], p, s.escape, s.lineStart)
	n, err := s.ReadWriteCloser.Write(s.buf)
	if n == len(s.buf) {
		s.lineStart = ls
		return len(p), err
	}
	// Part of it went: count the input bytes that did, and what ipmitool
	// has seen of them.
	done := 0
	for used := 0; done < len(p); done++ {
		w := 1
		if s.lineStart && p[done] == s.escape {
			w = 2
		}
		if used+w > n {
			break
		}
		used += w
		s.lineStart = p[done] == '\r' || p[done] == '\n'
	}
	if err == nil {
		err = io.ErrShortWrite
	}
	return done, err
}

// flushHeld sends the terminal reports held at the start of a line.
// The caller holds s.mu.
func (s *brokerStream) flushHeld() error {
	if len(s.held) == 0 {
		return nil
	}
	held := s.held
	s.held = nil
	_, err := s.ReadWriteCloser.Write(held) // reports hold no escape character
	s.lineStart = false
	return err
}

// isTerminalReport says whether p is nothing but terminal reports
// (labctl.TerminalReportLen). Sent at once after Enter, such an answer would
// leave ipmitool mid-line, where it takes no ~B: a break could never be
// sent at a shell prompt. So the broker holds them at the start of a line
// until the next typing or break, and sends them then (busybox reads them
// whenever they come).
func isTerminalReport(p []byte) bool {
	if len(p) == 0 {
		return false
	}
	for len(p) > 0 {
		n := labctl.TerminalReportLen(p)
		if n == 0 {
			return false
		}
		p = p[n:]
	}
	return true
}

// quoteEscapes appends p to dst with esc doubled where it starts a line
// (lineStart: the byte before p ended one). It returns whether the last
// byte leaves ipmitool at the start of a line.
func quoteEscapes(dst, p []byte, esc byte, lineStart bool) ([]byte, bool) {
	for _, b := range p {
		if lineStart && b == esc {
			dst = append(dst, b)
		}
		dst = append(dst, b)
		// As ipmitool has it, also after an escaped escape character.
		lineStart = b == '\r' || b == '\n'
	}
	return dst, lineStart
}

// check asks the stream in use to prove that it still works (see
// checker): errors.ErrUnsupported when it cannot say (a connection
// command such as ipmitool), errNotConnected without a stream.
func (d *brokerDialer) check(ctx context.Context) error {
	d.mu.Lock()
	cur := d.cur
	d.mu.Unlock()
	if cur == nil {
		return errNotConnected
	}
	if c, ok := cur.ReadWriteCloser.(checker); ok {
		return c.Check(ctx)
	}
	return errors.ErrUnsupported
}

// checker is a console stream that can ask its far end whether it still
// works (bmc's native SOL asks the BMC whether its payload is active).
type checker interface {
	Check(ctx context.Context) error
}

// breaker is a console stream that can send a serial break itself.
type breaker interface{ Break() error }

// sendBreak sends a break: ipmitool's "~B", or the stream's own Break.
func (s *brokerStream) sendBreak() error {
	if s.escape == 0 {
		if b, ok := s.ReadWriteCloser.(breaker); ok {
			return b.Break()
		}
		return errors.ErrUnsupported
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.lineStart {
		return errors.New("ipmitool sends a break only at the start of a line: press Enter, then try again")
	}
	// ipmitool stays at the start of a line after an escape command.
	if _, err := s.ReadWriteCloser.Write([]byte{s.escape, 'B'}); err != nil {
		return err
	}
	return s.flushHeld()
}
