//go:build !unix

package netboot

// RaiseOpenFileLimit does nothing where there is no RLIMIT_NOFILE.
func RaiseOpenFileLimit() (soft, hard uint64, err error) { return 0, 0, nil }

// openFileLimit is 0: unknown.
func openFileLimit() uint64 { return 0 }
