package netboot

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labctl/labctl/internal/statedir"
)

// Upload is a per-job URL where a node sends job artifacts back. The node
// POSTs or PUTs each file's bytes to URL()+name; the file is stored under
// the upload's directory by its sanitised name. Multipart forms are not
// decoded. Two query parameters make busybox wget safe to use:
//
//   - encoding=base64: the body is base64 (line breaks allowed) and is
//     decoded before it is stored.
//   - size=N: the stored file must be N bytes, else nothing is stored and
//     the request fails.
//
// They exist because busybox wget (checked with 1.35) sends --post-file
// contents up to the first NUL byte only: a binary file arrives truncated
// and wget still exits 0. The node-side command that works for any file:
//
//	base64 FILE > /tmp/up.b64 &&
//	  wget -q -O - --post-file=/tmp/up.b64 "${URL}NAME?encoding=base64&size=$(wc -c < FILE)"
//
// For text files `wget -q -O - --post-file=FILE "${URL}NAME?size=$(wc -c < FILE)"`
// is enough. wget exits 0 once the file is stored and non-zero otherwise
// (size mismatch or bad base64: 400; too large, or the upload URL's
// bytes or files used up: 413; name taken: 409).
// "-O -" prints the one-line receipt instead of saving it as a file on the
// node. With curl: curl -fsS -T FILE "${URL}NAME".
type Upload struct {
	s     *Server
	token string
	dir   string
	url   string

	mu      sync.Mutex
	files   []UploadedFile
	pending int // requests storing a file now

	// used counts the bytes stored and being stored, against
	// Config.MaxUploadTotalBytes.
	used atomic.Int64
}

// UploadedFile is one artifact stored by an Upload.
type UploadedFile struct {
	Name string // sanitised name, relative to the upload directory
	Size int64
}

// AcceptUpload creates dir if needed and opens an upload URL,
// HTTPURL/uploads/<token>/, that stores files there. Each request body is
// capped at Config.MaxUploadBytes (as sent, base64 included), the URL as a
// whole at Config.MaxUploadTotalBytes (as stored) and MaxUploadFiles;
// existing files are never overwritten.
func (s *Server) AcceptUpload(dir string) (*Upload, error) {
	if s.httpURL == "" {
		return nil, fmt.Errorf("accept uploads into %s: the boot server has no HTTP", dir)
	}
	if err := os.MkdirAll(dir, statedir.DirMode); err != nil {
		return nil, fmt.Errorf("accept uploads: %w", err)
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("accept uploads: %w", err)
	}
	r.Close()
	u := &Upload{s: s, token: rand.Text(), dir: dir}
	u.url = s.httpURL + uploadsPrefix + u.token + "/"
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("accept uploads into %s: boot server closed", dir)
	}
	s.uploads[u.token] = u
	return u, nil
}

// URL is the base URL, ending in "/"; the node appends the file name.
func (u *Upload) URL() string { return u.url }

// Files lists the files stored so far, in the order they arrived.
func (u *Upload) Files() []UploadedFile {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]UploadedFile(nil), u.files...)
}

// Close stops accepting files: later requests get 404. Uploads in flight
// run to their end. Idempotent.
func (u *Upload) Close() error {
	u.s.mu.Lock()
	delete(u.s.uploads, u.token)
	u.s.mu.Unlock()
	return nil
}

// maxUploadName bounds a stored file name, in bytes.
const maxUploadName = 100

// sanitizeUploadName keeps the last path element of name, replaces every
// byte outside [A-Za-z0-9._+-] with '_', drops leading dots (no hidden
// files, no "." or "..") and caps the length.
func sanitizeUploadName(name string) (string, error) {
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	b := []byte(name)
	for i, c := range b {
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '.' || c == '_' || c == '-' || c == '+'
		if !ok {
			b[i] = '_'
		}
	}
	out := strings.TrimLeft(string(b), ".")
	if len(out) > maxUploadName {
		out = out[:maxUploadName]
	}
	if out == "" {
		return "", fmt.Errorf("upload name %q: nothing left after sanitising", name)
	}
	return out, nil
}

// serveUpload stores POST/PUT /uploads/<token>/<name>.
func (s *Server) serveUpload(w *countingWriter, r *http.Request, rest string) []slog.Attr {
	token, rawName, _ := strings.Cut(rest, "/")
	s.mu.Lock()
	u := s.uploads[token]
	s.mu.Unlock()
	if u == nil {
		http.NotFound(w, r)
		return []slog.Attr{slog.String("err", "no such upload")}
	}
	if r.Method != http.MethodPost && r.Method != http.MethodPut {
		w.Header().Set("Allow", "POST, PUT")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return nil
	}
	name, err := sanitizeUploadName(rawName)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return []slog.Attr{slog.String("err", err.Error())}
	}
	attrs := []slog.Attr{slog.String("upload", u.dir), slog.String("name", name)}
	if err := u.reserveFile(name); err != nil {
		http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
		return append(attrs, slog.String("err", err.Error()))
	}
	size, status, err := u.store(name, r, w)
	attrs = append(attrs, slog.Int64("received", size))
	u.mu.Lock()
	u.pending--
	if err == nil {
		u.files = append(u.files, UploadedFile{Name: name, Size: size})
	}
	u.mu.Unlock()
	if err != nil {
		if status == http.StatusRequestEntityTooLarge {
			s.log.Warn("upload refused", "upload", u.dir, "name", name, "err", err)
		}
		http.Error(w, err.Error(), status)
		return append(attrs, slog.String("err", err.Error()))
	}
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, "stored %s (%d bytes)\n", name, size)
	return attrs
}

// reserveFile takes one of the upload's MaxUploadFiles for a request, or
// says why there is none left.
func (u *Upload) reserveFile(name string) error {
	max := u.s.cfg.MaxUploadFiles
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.files)+u.pending >= max {
		return fmt.Errorf("%s: upload refused: this job may store at most %d files (%d stored)", name, max, len(u.files))
	}
	u.pending++
	return nil
}

// errUploadFull is what a write past Config.MaxUploadTotalBytes fails with.
var errUploadFull = errors.New("upload URL full")

// quotaWriter writes to a file while counting the bytes against the
// upload's MaxUploadTotalBytes; the bytes it counted are given back
// (release) when the file is not kept.
type quotaWriter struct {
	f       io.Writer
	u       *Upload
	max     int64
	counted int64
}

func (q *quotaWriter) Write(p []byte) (int, error) {
	n := int64(len(p))
	if q.u.used.Add(n) > q.max {
		q.u.used.Add(-n)
		return 0, errUploadFull
	}
	q.counted += n
	return q.f.Write(p)
}

func (q *quotaWriter) release() { q.u.used.Add(-q.counted) }

// stallReader is a request body that must keep arriving: each read gets
// StallTimeout from its start, so a client that stops sending gives its
// connection back instead of holding it.
type stallReader struct {
	r     io.Reader
	rc    *http.ResponseController
	stall time.Duration
}

func (s *stallReader) Read(p []byte) (int, error) {
	s.rc.SetReadDeadline(time.Now().Add(s.stall))
	return s.r.Read(p)
}

// store writes the request body to a temporary file in the upload
// directory and links it to its name, so a half-received file never
// appears under the real name and an existing file is never replaced.
// It returns the bytes stored, or an HTTP status and an error.
func (u *Upload) store(name string, r *http.Request, w http.ResponseWriter) (int64, int, error) {
	limit, total := u.s.cfg.MaxUploadBytes, u.s.cfg.MaxUploadTotalBytes
	if r.ContentLength > limit {
		return 0, http.StatusRequestEntityTooLarge, fmt.Errorf("%s: %d bytes, at most %d", name, r.ContentLength, limit)
	}
	full := func(stored int64) error {
		return fmt.Errorf("%s: upload refused: this job may store at most %d bytes in all (%d stored or arriving)", name, total, stored)
	}
	q := r.URL.Query()
	if used := u.used.Load(); q.Get("encoding") == "" && used+r.ContentLength > total {
		return 0, http.StatusRequestEntityTooLarge, full(used)
	}
	wantSize := int64(-1)
	if v := q.Get("size"); v != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || n < 0 {
			return 0, http.StatusBadRequest, fmt.Errorf("%s: size %q: want a byte count", name, v)
		}
		wantSize = n
	}
	// The last read deadline stays: the server may read what is left of
	// a refused body before answering, and that too must keep moving.
	rc := http.NewResponseController(w)
	var body io.Reader = &stallReader{r: http.MaxBytesReader(w, r.Body, limit), rc: rc, stall: u.s.cfg.HTTP.StallTimeout}
	switch enc := q.Get("encoding"); enc {
	case "":
	case "base64":
		body = base64.NewDecoder(base64.StdEncoding, body) // skips line breaks
	default:
		return 0, http.StatusBadRequest, fmt.Errorf("%s: encoding %q: want base64 or none", name, enc)
	}

	root, err := os.OpenRoot(u.dir)
	if err != nil {
		return 0, http.StatusInternalServerError, fmt.Errorf("open upload directory: %w", err)
	}
	defer root.Close()
	if _, err := root.Lstat(name); err == nil {
		return 0, http.StatusConflict, fmt.Errorf("%s: already stored", name)
	}
	tmp := ".upload-" + rand.Text()
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, statedir.FileMode)
	if err != nil {
		return 0, http.StatusInternalServerError, fmt.Errorf("create %s: %w", name, err)
	}
	defer root.Remove(tmp)
	qw := &quotaWriter{f: f, u: u, max: total}
	kept := false
	defer func() {
		if !kept {
			qw.release()
		}
	}()
	n, err := io.Copy(qw, body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			return n, http.StatusRequestEntityTooLarge, fmt.Errorf("%s: more than %d bytes", name, limit)
		}
		if errors.Is(err, errUploadFull) {
			return n, http.StatusRequestEntityTooLarge, full(u.used.Load())
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return n, http.StatusRequestTimeout, fmt.Errorf("receive %s: nothing arrived for %v", name, u.s.cfg.HTTP.StallTimeout)
		}
		return n, http.StatusBadRequest, fmt.Errorf("receive %s: %w", name, err)
	}
	if wantSize >= 0 && n != wantSize {
		return n, http.StatusBadRequest, fmt.Errorf("%s: received %d bytes, the sender said %d (busybox wget stops at the first NUL byte: send binary files with encoding=base64)", name, n, wantSize)
	}
	if err := root.Link(tmp, name); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return n, http.StatusConflict, fmt.Errorf("%s: already stored", name)
		}
		return n, http.StatusInternalServerError, fmt.Errorf("store %s: %w", name, err)
	}
	kept = true
	return n, 0, nil
}
