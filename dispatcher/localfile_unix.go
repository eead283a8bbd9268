//go:build unix

package dispatcher

import (
	"errors"
	"os"
	"syscall"
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
