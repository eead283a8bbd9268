//go:build unix

package rawpty

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"github.com/creack/pty"
	"golang.org/x/term"
)

// Start starts cmd on a new pseudo-terminal (80x24) that is in raw mode
// from the start, in its own session with the terminal as its controlling
// terminal, and returns the master side.
//
// Raw from the start: a console client such as ipmitool switches its
// terminal to raw mode itself, but only after printing "SOL Session
// operational"; in between, the pty's line discipline would echo typed
// characters locally (echo pacing would take that for the node's echo),
// hold them until a line end, and turn ^C into a SIGINT for the client. A
// program that never touches its terminal (socat, telnet in character
// mode) gets the same byte-for-byte path.
func Start(cmd *exec.Cmd) (*os.File, error) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		return nil, err
	}
	defer tty.Close()
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 24, Cols: 80}); err != nil {
		_ = ptmx.Close()
		return nil, fmt.Errorf("set pty size: %w", err)
	}
	if _, err := term.MakeRaw(int(tty.Fd())); err != nil {
		_ = ptmx.Close()
		return nil, fmt.Errorf("pty raw mode: %w", err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		_ = ptmx.Close()
		return nil, err
	}
	return ptmx, nil
}
