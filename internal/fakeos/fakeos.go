// Package fakeos is the test OS that labctl's fake nodes play on their
// serial consoles (dispatchertest's in-process node, simlab/farm's nodes):
// the firmware's check that a disk is bootable, and the getty and login
// exchange that precede the test shell. Each node keeps its own shells
// and console plumbing; what the test OS says and accepts is here once.
package fakeos

import (
	"context"
	"io"
	"os"
	"sync"
	"time"
)

// signatureAt is where a disk's MBR boot signature (0x55 0xaa) stands.
const signatureAt = 510

// MarkBootable writes an MBR boot signature into img, which must be at
// least 512 bytes: a fake node boots a disk that starts with it.
func MarkBootable(img []byte) {
	img[signatureAt], img[signatureAt+1] = 0x55, 0xaa
}

// Bootable reports whether the disk image at path starts with an MBR boot
// signature, as a firmware checks before booting a disk; a disk that is
// missing, unreadable or shorter than a sector is not bootable.
func Bootable(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	mbr := make([]byte, 512)
	if _, err := io.ReadFull(f, mbr); err != nil {
		return false
	}
	return mbr[signatureAt] == 0x55 && mbr[signatureAt+1] == 0xaa
}

// LoginConfig is what a Login says and accepts.
type LoginConfig struct {
	// Hostname starts the login prompt: "HOSTNAME login: ".
	Hostname string
	// Username and Password are the only credentials it accepts.
	Username, Password string
	// Say writes to the console. It may be called with the Login's lock
	// held, so it must not call Input.
	Say func([]byte)
	// LateEnter, if set, is how late the first Enter typed at the login
	// prompt echoes; the line is taken only then, as on a busy node. Its
	// echo may come after Run returned: Say must drop output once the
	// boot that ran the Login ended.
	LateEnter time.Duration
}

// Login plays getty and login on a console, with the line editing of a
// tty in canonical mode: input echoes except at the password prompt, ^U
// kills the line (the dispatcher's echo pacing retypes a line after ^U
// when an echo came late), DEL and ^H erase a character.
type Login struct {
	c     LoginConfig
	lines chan string

	mu   sync.Mutex
	echo bool
	line []byte
	late time.Duration
}

// NewLogin makes a Login; route the console's input to its Input, then
// Run it.
func NewLogin(c LoginConfig) *Login {
	return &Login{c: c, lines: make(chan string, 4), echo: true, late: c.LateEnter}
}

// Input takes console input.
func (l *Login) Input(p []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, b := range p {
		switch b {
		case 0x15: // ^U
			l.line = l.line[:0]
			if l.echo {
				l.c.Say([]byte("^U\r\n"))
			}
		case 0x7f, 0x08: // erase
			if len(l.line) > 0 {
				l.line = l.line[:len(l.line)-1]
				if l.echo {
					l.c.Say([]byte("\b \b"))
				}
			}
		case '\r', '\n':
			line := string(l.line)
			l.line = l.line[:0]
			if l.echo && l.late > 0 {
				time.AfterFunc(l.late, func() {
					l.mu.Lock()
					l.c.Say([]byte("\r\n"))
					l.mu.Unlock()
					l.take(line)
				})
				l.late = 0
				continue
			}
			if l.echo {
				l.c.Say([]byte("\r\n"))
			}
			l.take(line)
		default:
			l.line = append(l.line, b)
			if l.echo {
				l.c.Say([]byte{b})
			}
		}
	}
}

// take hands a typed line to Run; lines typed faster than the prompts
// come are dropped past a few, as nobody reads them.
func (l *Login) take(line string) {
	select {
	case l.lines <- line:
	default:
	}
}

func (l *Login) setEcho(on bool) {
	l.mu.Lock()
	l.echo = on
	l.mu.Unlock()
}

// Run prompts for a user name and a password until they are the
// configured ones (true: the caller starts the test shell) or ctx ends
// (false). A wrong pair is answered "Login incorrect" after a short
// pause, as login(1) does.
func (l *Login) Run(ctx context.Context) bool {
	next := func() (string, bool) {
		select {
		case s := <-l.lines:
			return s, true
		case <-ctx.Done():
			return "", false
		}
	}
	for ctx.Err() == nil {
		l.c.Say([]byte("\r\n" + l.c.Hostname + " login: "))
		user, ok := next()
		if !ok {
			return false
		}
		l.setEcho(false)
		l.c.Say([]byte("Password: "))
		pass, ok := next()
		l.setEcho(true)
		if !ok {
			return false
		}
		l.c.Say([]byte("\r\n"))
		if user == l.c.Username && pass == l.c.Password {
			return true
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return false
		}
		l.c.Say([]byte("Login incorrect\r\n"))
	}
	return false
}
