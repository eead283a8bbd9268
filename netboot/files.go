package netboot

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/labctl/labctl/netboot/tftp"
)

// MaxPathLen is the longest file name the boot server accepts, in bytes.
// Real boot loaders ask for short names; anything longer is refused before
// it reaches the file system.
const MaxPathLen = 255

// errBadName marks a request for a name that can never be served: absolute,
// with "..", control characters or too long. TFTP answers it with an error
// packet (it is the TFTP server's own ErrBadName), HTTP with 400.
var errBadName = tftp.ErrBadName

// errNotFound marks a name that is well formed but has nothing behind it.
var errNotFound = tftp.ErrNotFound

// cleanPath turns a name asked for by a client into a path relative to the
// boot root. It refuses what could escape the root lexically (absolute
// names, any ".." element) and what no boot loader sends (NUL and other
// control characters, over-long names). Symbolic links are left to os.Root,
// which refuses links that point outside the root.
func cleanPath(name string) (string, error) {
	switch {
	case name == "":
		return "", fmt.Errorf("%w: empty", errBadName)
	case len(name) > MaxPathLen:
		return "", fmt.Errorf("%w: %d bytes, at most %d", errBadName, len(name), MaxPathLen)
	case strings.HasPrefix(name, "/"):
		return "", fmt.Errorf("%w: absolute", errBadName)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x20 || c == 0x7f {
			return "", fmt.Errorf("%w: control character %#02x", errBadName, c)
		}
	}
	for elem := range strings.SplitSeq(name, "/") {
		if elem == ".." {
			return "", fmt.Errorf("%w: contains ..", errBadName)
		}
	}
	p := path.Clean(name)
	if p == "." || !filepath.IsLocal(p) {
		return "", fmt.Errorf("%w: not a file below the root", errBadName)
	}
	return p, nil
}

// content is one thing the boot server can send: a regular file from the
// root or a generated pxelinux config. Both protocols serve from it (TFTP
// through tftpRead), so a name means the same over both.
type content struct {
	name    string // cleaned path relative to the root
	size    int64
	modTime time.Time
	// info is the file's FileInfo (from the open), for files from the root.
	info os.FileInfo
	// file is set for files from the root; HTTP hands it to the kernel
	// (sendfile) and TFTP reads it.
	file *os.File
	// generated is set for generated configs.
	generated []byte
	// node names the node a generated config is for, for the log.
	node string
}

// reader returns a reader over the whole content, positioned at the start.
func (c *content) reader() io.ReadSeeker {
	if c.file != nil {
		return c.file
	}
	return bytes.NewReader(c.generated)
}

// Close releases the file, if any.
func (c *content) Close() error {
	if c.file != nil {
		return c.file.Close()
	}
	return nil
}

// open resolves a client's request: a generated pxelinux config for a
// registered node, else a regular file under the root. client is the
// requester's IP (for the hex-IP config names); it may be nil.
func (s *Server) open(name string, client net.IP) (*content, error) {
	p, err := cleanPath(name)
	if err != nil {
		return nil, err
	}
	cfg, node, err := s.nodes.lookup(p, client)
	if err != nil {
		s.log.Warn("boot config refused", "file", p, "client", client, "err", err)
		return nil, fmt.Errorf("%s: %w", p, errNotFound)
	}
	if cfg != nil {
		// No modification time: configs change with every job, so HTTP
		// must not answer a conditional request with 304.
		return &content{name: p, size: int64(len(cfg)), generated: cfg, node: node}, nil
	}
	return s.openFile(p)
}

// tftpRead is the TFTP server's read handler. One leading '/' names the
// root, as in an HTTP path: GRUB asks for /grub/grub.cfg and its kernel
// as /simlab/vmlinuz.
func (s *Server) tftpRead(name string, client netip.AddrPort) (tftp.Content, error) {
	c, err := s.open(strings.TrimPrefix(name, "/"), client.Addr().AsSlice())
	if err != nil {
		return tftp.Content{}, err
	}
	if c.generated != nil {
		var log []slog.Attr
		if c.node != "" {
			log = []slog.Attr{slog.String("node", c.node)}
		}
		return tftp.Content{Data: c.generated, Log: log}, nil
	}
	return tftp.Content{File: c.file, Info: c.info}, nil
}

// openFile opens a regular file under the root. The open is non-blocking so
// that a FIFO placed in the root cannot hang a transfer; directories, devices
// and other non-regular files are refused as not found.
func (s *Server) openFile(p string) (*content, error) {
	f, err := s.root.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w", p, errNotFound)
		}
		// Escapes through symlinks, permission problems, ENOTDIR...: the
		// client learns only that there is nothing for it.
		return nil, fmt.Errorf("%s: %w: %v", p, errNotFound, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s: %w", p, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: %w: not a regular file", p, errNotFound)
	}
	return &content{name: p, size: fi.Size(), modTime: fi.ModTime(), info: fi, file: f}, nil
}
