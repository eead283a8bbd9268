//go:build unix

package netboot

import "syscall"

// RaiseOpenFileLimit raises the process's soft limit on open files to its
// hard limit, so that the boot server's connections, TFTP sockets and
// files do not run out at a limit meant for programs that use select(2).
// The Go runtime raises it at start too (to one below the hard limit);
// this makes sure, and reports the limits for the log. labctl serve and
// labctl run call it before they start the boot server.
func RaiseOpenFileLimit() (soft, hard uint64, err error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, 0, err
	}
	// Within one of the hard limit is what the runtime sets: leave it, so
	// that programs labctl starts get the limit labctl was started with.
	if lim.Cur >= lim.Max || lim.Cur+1 == lim.Max {
		return uint64(lim.Cur), uint64(lim.Max), nil
	}
	want := lim
	want.Cur = want.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		return uint64(lim.Cur), uint64(lim.Max), err
	}
	return uint64(want.Cur), uint64(want.Max), nil
}

// openFileLimit is the soft limit on open files, 0 if unknown.
func openFileLimit() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	return uint64(lim.Cur)
}
