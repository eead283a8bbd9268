//go:build unix

package sol

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

// errNoPty is nil where console commands can run in a pty.
var errNoPty error

// ownProcessGroup runs cmd in a process group of its own and makes its
// context's cancel kill the whole group, helpers included.
func ownProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}

// killProcessGroup kills the process group p leads (the console command's session).
func killProcessGroup(p *os.Process) {
	_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
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
