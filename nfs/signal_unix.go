//go:build unix

package nfs

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// alive reports whether process pid exists.
func alive(pid int) error { return syscall.Kill(pid, 0) }

// hangUp sends SIGHUP (ganesha: reread the exports) to process pid.
func hangUp(pid int) error { return syscall.Kill(pid, syscall.SIGHUP) }

// lockDir takes the exports directory for this process: an exclusive,
// non-blocking flock on dir/labctl.lock, held until the file is closed.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "labctl.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("another labctl manages the exports in %s (%v)", dir, err)
	}
	return f, nil
}
