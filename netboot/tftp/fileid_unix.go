//go:build unix

package tftp

import (
	"os"
	"syscall"
)

// fileID returns the device and inode of the file fi describes: with size
// and modification time, the cache's key for it.
func fileID(fi os.FileInfo) (dev, ino uint64, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return uint64(st.Dev), uint64(st.Ino), true
}
