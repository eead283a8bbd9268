package netboot

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// Image is a local file published for one job at an unguessable URL, so a
// node can stream it with `wget -O - URL | ... | dd`. It counts the bytes
// it serves, for progress.
type Image struct {
	s       *Server
	token   string
	path    string
	name    string // base name, the last URL element
	url     string
	size    int64
	modTime time.Time
	info    os.FileInfo // identity of the published file
	served  atomic.Int64
}

// PublishImage publishes the regular file at path (anywhere on the host:
// the dispatcher decides what a job may publish) at
// HTTPURL/images/<token>/<base name>, where token is 128 random bits.
// Remote http(s) images are not published: nodes fetch those directly.
func (s *Server) PublishImage(path string) (*Image, error) {
	if s.httpURL == "" {
		return nil, fmt.Errorf("publish image %s: the boot server has no HTTP", path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("publish image: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("publish image %s: not a regular file", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("publish image %s: %w", path, err)
	}
	name := filepath.Base(abs)
	im := &Image{
		s:       s,
		token:   rand.Text(),
		path:    abs,
		name:    name,
		size:    fi.Size(),
		modTime: fi.ModTime(),
		info:    fi,
	}
	im.url = s.httpURL + imagesPrefix + im.token + "/" + escapePath(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("publish image %s: boot server closed", path)
	}
	s.images[im.token] = im
	s.log.Debug("image published", "path", abs, "size", im.size)
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
// run to their end. Idempotent.
func (im *Image) Close() error {
	im.s.mu.Lock()
	delete(im.s.images, im.token)
	im.s.mu.Unlock()
	return nil
}

// unchanged reports whether fi is still the file that was published: same
// file (device and inode, which a file system may reuse after a delete),
// same size, same modification time.
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
	// Each request opens the file afresh: an *os.File of its own keeps
	// its own offset and lets the kernel send it (sendfile).
	f, err := os.Open(im.path)
	if err != nil {
		http.Error(w, "image unavailable", http.StatusInternalServerError)
		return []slog.Attr{slog.String("err", err.Error())}
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !im.unchanged(fi) {
		if err == nil {
			err = errors.New("file replaced or modified since it was published")
		}
		http.Error(w, "image changed since it was published", http.StatusGone)
		return []slog.Attr{slog.String("err", err.Error())}
	}
	w.also = &im.served
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", im.modTime, f)
	return []slog.Attr{slog.String("image", im.path)}
}
