package netboot

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Image is an open local file published for one job at an unguessable
// URL, so a node can stream it with `wget -O - URL | ... | dd`. It serves
// the file it was given, whatever its path names later. It counts the
// bytes it serves, for progress.
type Image struct {
	s       *Server
	token   string
	name    string // base name, the last URL element
	url     string
	size    int64
	modTime time.Time
	info    os.FileInfo // identity of the published file
	served  atomic.Int64

	mu     sync.RWMutex // guards file against Close while a request reopens it
	file   *os.File
	closed bool
}

// PublishImage publishes the open regular file f (the dispatcher decides
// what a job may publish, and opens it) at
// HTTPURL/images/<token>/<base name of f>, where token is 128 random bits.
// Requests are served from f itself, never from its path, so a file
// swapped under the same name later is not what the node gets. f stays the
// caller's: it must stay open until the image is closed. Remote http(s)
// images are not published: nodes fetch those directly.
func (s *Server) PublishImage(f *os.File) (*Image, error) {
	if s.httpURL == "" {
		return nil, fmt.Errorf("publish image %s: the boot server has no HTTP", f.Name())
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("publish image: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("publish image %s: not a regular file", f.Name())
	}
	name := filepath.Base(f.Name())
	im := &Image{
		s:       s,
		token:   rand.Text(),
		name:    name,
		size:    fi.Size(),
		modTime: fi.ModTime(),
		info:    fi,
		file:    f,
	}
	im.url = s.httpURL + imagesPrefix + im.token + "/" + escapePath(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("publish image %s: boot server closed", f.Name())
	}
	s.images[im.token] = im
	s.log.Debug("image published", "path", f.Name(), "size", im.size)
	return im, nil
}

// URL is where nodes fetch the image.
func (im *Image) URL() string { return im.url }

// Size is the size of the file when it was published.
func (im *Image) Size() int64 { return im.size }

// BytesServed counts the body bytes sent for this image so far, over every
// request (ranges and retries included).
func (im *Image) BytesServed() int64 { return im.served.Load() }

// Close unpublishes the image: later requests get 404. Requests in flight
// run to their end on descriptors of their own; once Close returns the
// image no longer uses the published file, which its owner may close.
// Idempotent.
func (im *Image) Close() error {
	im.s.mu.Lock()
	delete(im.s.images, im.token)
	im.s.mu.Unlock()
	im.mu.Lock()
	im.closed = true
	im.mu.Unlock()
	return nil
}

// errClosed means the image was closed while a request was starting;
// errChanged that the published file was written to since.
var (
	errClosed  = errors.New("image closed")
	errChanged = errors.New("file modified since it was published")
)

// open gives one request its own reader of the published file, after
// checking that the file was not written to since it was published. Each
// request needs its own file offset; an *os.File of its own also lets the
// kernel send it (sendfile). On Linux /proc/self/fd/N opens the very file
// the descriptor refers to, not whatever its path names now; where that is
// not available, the request reads the shared descriptor at explicit
// offsets.
func (im *Image) open() (io.ReadSeeker, func(), error) {
	im.mu.RLock()
	defer im.mu.RUnlock()
	if im.closed {
		return nil, nil, errClosed
	}
	fi, err := im.file.Stat()
	if err != nil {
		return nil, nil, err
	}
	if !im.unchanged(fi) {
		return nil, nil, errChanged
	}
	if f, err := os.Open("/proc/self/fd/" + strconv.Itoa(int(im.file.Fd()))); err == nil {
		if fi, err := f.Stat(); err == nil && os.SameFile(fi, im.info) {
			return f, func() { f.Close() }, nil
		}
		f.Close()
	}
	return io.NewSectionReader(lockedReaderAt{im}, 0, im.size), func() {}, nil
}

// lockedReaderAt reads the published descriptor while the image is open.
type lockedReaderAt struct{ im *Image }

func (l lockedReaderAt) ReadAt(p []byte, off int64) (int, error) {
	l.im.mu.RLock()
	defer l.im.mu.RUnlock()
	if l.im.closed {
		return 0, errClosed
	}
	return l.im.file.ReadAt(p, off)
}

// unchanged reports whether fi, of the published file, still has the size
// and modification time it had when published.
func (im *Image) unchanged(fi os.FileInfo) bool {
	return os.SameFile(fi, im.info) && fi.Size() == im.size && fi.ModTime().Equal(im.modTime)
}

// serveImage serves GET/HEAD /images/<token>/<name>.
func (s *Server) serveImage(w *countingWriter, r *http.Request, rest string) []slog.Attr {
	token, name, _ := strings.Cut(rest, "/")
	s.mu.Lock()
	im := s.images[token]
	s.mu.Unlock()
	if im == nil || name != im.name {
		http.NotFound(w, r)
		return []slog.Attr{slog.String("err", "no such image")}
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return nil
	}
	rs, done, err := im.open()
	switch {
	case errors.Is(err, errClosed):
		http.NotFound(w, r)
		return []slog.Attr{slog.String("err", err.Error())}
	case errors.Is(err, errChanged):
		http.Error(w, "image changed since it was published", http.StatusGone)
		return []slog.Attr{slog.String("err", err.Error())}
	case err != nil:
		http.Error(w, "image unavailable", http.StatusInternalServerError)
		return []slog.Attr{slog.String("err", err.Error())}
	}
	defer done()
	w.also = &im.served
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", im.modTime, rs)
	return []slog.Attr{slog.String("image", im.file.Name())}
}
