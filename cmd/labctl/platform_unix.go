//go:build unix

package main

import (
	"os"
	"os/signal"
	"syscall"
)

// errServeUnsupported and errDirectUnsupported are nil where labctl serve
// and console --direct can run: they need file locks and ptys.
var (
	errServeUnsupported  error
	errDirectUnsupported error
)

// tryLock takes an advisory lock on f, shared or exclusive, without
// waiting; it goes with the process, also on kill -9.
func tryLock(f *os.File, exclusive bool) error {
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	return syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
}

// notifyResize delivers a signal on ch whenever the terminal's size
// changes.
func notifyResize(ch chan<- os.Signal) { signal.Notify(ch, syscall.SIGWINCH) }

// execBinary replaces this process with the program path.
func execBinary(path string, argv, env []string) error { return syscall.Exec(path, argv, env) }
