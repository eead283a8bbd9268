//go:build unix

package nfs

import "syscall"

// alive reports whether process pid exists.
func alive(pid int) error { return syscall.Kill(pid, 0) }

// hangUp sends SIGHUP (ganesha: reread the exports) to process pid.
func hangUp(pid int) error { return syscall.Kill(pid, syscall.SIGHUP) }
