//go:build unix

package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// openLocalFlags open a local file without following a symbolic link in
// its last component and without blocking on a FIFO.
const openLocalFlags = os.O_RDONLY | syscall.O_NOFOLLOW | syscall.O_NONBLOCK

// isSymlinkRefusal reports whether err is an open refused because the
// last component is a symbolic link.
func isSymlinkRefusal(err error) bool { return errors.Is(err, syscall.ELOOP) }

// fileID is the device and inode of an open file, where the system has them.
func fileID(fi os.FileInfo) (dev, ino uint64, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return uint64(st.Dev), uint64(st.Ino), true
}

// lockFile takes an exclusive lock on the file at path (made if missing),
// waiting for whoever holds it until ctx ends; unlock releases it.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for the lock %s: %w", path, context.Cause(ctx))
		case <-tick.C:
		}
	}
}
