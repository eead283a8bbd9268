//go:build unix

package sol

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"github.com/creack/pty"
	"golang.org/x/term"
)

// errNoPty is nil where console commands can run in a pty.
var errNoPty error

// ownProcessGroup runs cmd in a process group of its own and makes its
// context's cancel kill the whole group, helpers included.
func ownProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}

// killProcessGroup kills the process group p leads (StartRaw's session).
func killProcessGroup(p *os.Process) {
	_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
}

// StartRaw starts cmd on a new pseudo-terminal (80x24) that is in raw mode
// from the start, in its own session with the terminal as its controlling
// terminal, and returns the master side. Tests that run ipmitool as a
// person would use it too.
//
// Raw from the start: a console client such as ipmitool switches its
// terminal to raw mode itself, but only after printing "SOL Session
// operational"; in between, the pty's line discipline would echo typed
// characters locally (echo pacing would take that for the node's echo),
// hold them until a line end, and turn ^C into a SIGINT for the client. A
// program that never touches its terminal (socat, telnet in character
// mode) gets the same byte-for-byte path.
func StartRaw(cmd *exec.Cmd) (*os.File, error) {
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

// pollable returns a non-blocking, close-on-exec duplicate of f that the Go
// runtime poller manages, so that Close interrupts a blocked Read.
func pollable(f *os.File) (*os.File, error) {
	fd, _, errno := syscall.Syscall(syscall.SYS_FCNTL, f.Fd(), syscall.F_DUPFD_CLOEXEC, 0)
	if errno != 0 {
		return nil, fmt.Errorf("dup pty: %w", errno)
	}
	if err := syscall.SetNonblock(int(fd), true); err != nil {
		_ = syscall.Close(int(fd))
		return nil, fmt.Errorf("pty non-blocking: %w", err)
	}
	return os.NewFile(fd, f.Name()), nil
}
