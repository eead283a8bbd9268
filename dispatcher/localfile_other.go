//go:build !unix

package dispatcher

import (
	"context"
	"errors"
	"os"
)

// openLocalFlags: this system cannot refuse a link when opening; OpenLocal
// checks the name with Lstat first.
const openLocalFlags = os.O_RDONLY

func isSymlinkRefusal(error) bool { return false }

// fileID: this system has no device and inode numbers in FileInfo.
func fileID(os.FileInfo) (dev, ino uint64, ok bool) { return 0, 0, false }

// lockFile: diskless roots are unpacked on the lab's (Linux) host only.
func lockFile(context.Context, string) (func(), error) {
	return nil, errors.New("unpacking a diskless root needs a unix host")
}
