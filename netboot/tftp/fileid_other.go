//go:build !unix

package tftp

import "os"

// fileID reports no identity where the FileInfo carries no device and
// inode: such files are not cached, but read block by block.
func fileID(os.FileInfo) (dev, ino uint64, ok bool) { return 0, 0, false }
