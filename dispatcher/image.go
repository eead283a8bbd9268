package dispatcher

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// Compression is how an image's bytes are packed; the node unpacks them
// while they stream to its disk.
type Compression string

const (
	None  Compression = "none"
	Gzip  Compression = "gzip"
	XZ    Compression = "xz"
	Zstd  Compression = "zstd"
	Bzip2 Compression = "bzip2"
)

var magics = []struct {
	c     Compression
	magic []byte
}{
	{Gzip, []byte{0x1f, 0x8b}},
	{XZ, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}},
	{Zstd, []byte{0x28, 0xb5, 0x2f, 0xfd}},
	{Bzip2, []byte("BZh")},
}

// DetectCompression tells the compression from the first bytes of an image.
func DetectCompression(head []byte) Compression {
	for _, m := range magics {
		if bytes.HasPrefix(head, m.magic) {
			return m.c
		}
	}
	return None
}

// Decompressor is the node-side command that unpacks c from stdin to
// stdout, or "" when the bytes go to the disk as they are.
func (c Compression) Decompressor() string {
	switch c {
	case Gzip:
		return "gunzip -c"
	case XZ:
		return "xzcat"
	case Zstd:
		return "zstdcat"
	case Bzip2:
		return "bunzip2 -c"
	}
	return ""
}

// sniffImage reads the first bytes of an open image file and tells its
// compression.
func sniffImage(f *os.File) (Compression, error) {
	head := make([]byte, 16)
	n, err := f.ReadAt(head, 0)
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("image %s: %w", f.Name(), err)
	}
	return DetectCompression(head[:n]), nil
}
