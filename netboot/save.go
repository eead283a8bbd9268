package netboot

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// savesPrefix is where nodes send saved disk images.
const savesPrefix = "/saves/"

// Save is a single-use URL where a node sends one saved disk: a zstd
// stream of the disk's raw bytes, in the body of one PUT or POST
// request to URL()+Token() (HTTP/1.1 chunked or with a Content-Length).
//
// The token is secret: it is never logged (access log lines show
// /saves/[token]) and the first request that names it uses it up, so a
// second request, or one with any other token, gets 404. The body goes
// to a temporary file in the save's directory while the server unpacks
// it with the zstd program (Debian package zstd) and hashes the raw
// bytes; the request is refused, and nothing kept, when the stream is
// not one whole zstd stream, unpacks to other bytes than the disk's (its
// size and sha256, hashed on the node before it sent them), is larger as
// sent than a zstd stream of the disk can be, stalls for
// HTTPSettings.StallTimeout or ends early (a cut connection). A stored
// save stays a hidden temporary file until Commit links it to its name.
type Save struct {
	s      *Server
	token  string
	dir    string
	maxRaw int64
	sha256 string // the raw bytes' digest, lower-case hex

	received atomic.Int64 // bytes of the body so far
	raw      atomic.Int64 // raw (unpacked) bytes so far

	done    chan struct{} // closed when the request ended
	closing chan struct{} // closed by Close

	mu        sync.Mutex
	res       SaveResult
	err       error
	tmp       string // the stored temporary file, once done without error
	committed bool
	closed    bool
}

// SaveResult is what a node sent, as the server received it.
type SaveResult struct {
	Size      int64  // bytes stored (the zstd file)
	RawSize   int64  // bytes the stream unpacks to: the disk's size
	RawSHA256 string // sha256 of the raw bytes, lower-case hex
}

// maxSaveSize bounds a zstd stream of raw bytes as sent: a stored
// (incompressible) block adds 3 bytes per 128 KiB, the frame its header
// and checksum; the rest is slack.
func maxSaveSize(raw int64) int64 { return raw + raw/(128<<10)*3 + 1<<20 }

// AcceptSave opens a save URL: the node's disk, rawSize bytes with the
// sha256 rawSHA256 (hex) once unpacked, is stored into dir (created if
// needed; it must be on the file system where the image is committed).
// The caller ends it with Close.
func (s *Server) AcceptSave(dir string, rawSize int64, rawSHA256 string) (*Save, error) {
	maxRaw := rawSize
	if b, err := hex.DecodeString(rawSHA256); err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("accept a save into %s: sha256 %q: want 64 hex digits", dir, rawSHA256)
	}
	if s.httpURL == "" {
		return nil, fmt.Errorf("accept a save into %s: the boot server has no HTTP", dir)
	}
	if maxRaw <= 0 {
		return nil, fmt.Errorf("accept a save into %s: disk size %d: want a positive byte count", dir, maxRaw)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("accept a save: %w", err)
	}
	sv := &Save{s: s, token: rand.Text(), dir: dir, maxRaw: maxRaw, sha256: strings.ToLower(rawSHA256), done: make(chan struct{}), closing: make(chan struct{})}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("accept a save into %s: boot server closed", dir)
	}
	s.saves[sv.token] = sv
	return sv, nil
}

// URL is the base URL; the node appends the token.
func (sv *Save) URL() string { return sv.s.httpURL + savesPrefix }

// Token is the save's secret: the last element of its URL.
func (sv *Save) Token() string { return sv.token }

// Received is how many bytes of the body have arrived.
func (sv *Save) Received() int64 { return sv.received.Load() }

// RawReceived is how many raw bytes of the disk the arrived body unpacked
// to: the progress of a save in disk bytes.
func (sv *Save) RawReceived() int64 { return sv.raw.Load() }

// Wait waits for the node's request to end and returns what it stored, or
// why nothing was stored.
func (sv *Save) Wait(ctx context.Context) (SaveResult, error) {
	select {
	case <-sv.done:
	case <-ctx.Done():
		return SaveResult{}, fmt.Errorf("the node's upload did not end: %w", context.Cause(ctx))
	}
	sv.mu.Lock()
	defer sv.mu.Unlock()
	return sv.res, sv.err
}

// Commit gives the stored image its name, path (in the save's
// directory), atomically and without replacing a file that is there.
func (sv *Save) Commit(path string) error {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	switch {
	case sv.closed:
		return errors.New("commit a save: closed")
	case sv.tmp == "":
		return errors.New("commit a save: nothing stored")
	case sv.committed:
		return errors.New("commit a save: already committed")
	case filepath.Dir(path) != filepath.Clean(sv.dir):
		return fmt.Errorf("commit a save: %s is not in %s", path, sv.dir)
	}
	if err := os.Link(sv.tmp, path); err != nil {
		return fmt.Errorf("store the saved image: %w", err)
	}
	os.Remove(sv.tmp)
	sv.committed = true
	return nil
}

// Close withdraws the URL (a later request gets 404), stops a request in
// flight and removes what was stored unless it was committed.
// Idempotent.
func (sv *Save) Close() error {
	sv.s.mu.Lock()
	delete(sv.s.saves, sv.token)
	sv.s.mu.Unlock()
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if !sv.closed {
		sv.closed = true
		close(sv.closing)
	}
	if sv.tmp != "" && !sv.committed {
		os.Remove(sv.tmp)
		sv.tmp = ""
	}
	return nil
}

// errSaveClosed stops a request whose save was closed meanwhile.
var errSaveClosed = errors.New("the save was closed (the job gave up on it)")

// serveSave receives PUT/POST /saves/<token>.
func (s *Server) serveSave(w *countingWriter, r *http.Request, token string) []slog.Attr {
	s.mu.Lock()
	sv := s.saves[token]
	used := sv != nil && (r.Method == http.MethodPut || r.Method == http.MethodPost)
	if used {
		// Single use: the first request takes it, whatever it brings.
		delete(s.saves, token)
	}
	s.mu.Unlock()
	if sv == nil {
		http.Error(w, "no such save (unknown or used token)", http.StatusNotFound)
		return []slog.Attr{slog.String("err", "unknown or used save token")}
	}
	if !used {
		w.Header().Set("Allow", "PUT, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return nil
	}
	res, status, err := sv.receive(w, r)
	sv.mu.Lock()
	sv.res, sv.err = res, err
	sv.mu.Unlock()
	close(sv.done)
	attrs := []slog.Attr{slog.String("save", sv.dir), slog.Int64("received", res.Size), slog.Int64("raw", res.RawSize)}
	if err != nil {
		s.log.Warn("save refused", "save", sv.dir, "err", err)
		w.Header().Set("Connection", "close")
		http.Error(w, err.Error(), status)
		return append(attrs, slog.String("err", err.Error()))
	}
	w.Header().Set("Connection", "close")
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, "saved %d bytes, raw %d bytes, sha256 %s\n", res.Size, res.RawSize, res.RawSHA256)
	return append(attrs, slog.String("sha256", res.RawSHA256))
}

// saveReader is the request body as the save reads it (a stallReader):
// the body may not pass its bound, and a Close of the save stops it.
type saveReader struct {
	sv  *Save
	r   *stallReader
	max int64
}

func (s *saveReader) Read(p []byte) (int, error) {
	select {
	case <-s.sv.closing:
		return 0, errSaveClosed
	default:
	}
	n, err := s.r.Read(p)
	if s.sv.received.Add(int64(n)) > s.max {
		return n, errSaveTooLarge
	}
	return n, err
}

var (
	errSaveTooLarge = errors.New("too large")
	errRawTooLarge  = errors.New("raw too large")
)

// rawWriter hashes and counts the unpacked bytes, up to the save's bound.
type rawWriter struct {
	sv *Save
	h  io.Writer
}

func (w *rawWriter) Write(p []byte) (int, error) {
	if w.sv.raw.Add(int64(len(p))) > w.sv.maxRaw {
		return 0, errRawTooLarge
	}
	return w.h.Write(p)
}

// errUnpackStopped is a write to zstd that failed: zstd ended early.
var errUnpackStopped = errors.New("zstd stopped reading")

// unpackWriter is zstd's input; its errors say that zstd stopped.
type unpackWriter struct{ w io.Writer }

func (u *unpackWriter) Write(p []byte) (int, error) {
	n, err := u.w.Write(p)
	if err != nil {
		err = fmt.Errorf("%w: %v", errUnpackStopped, err)
	}
	return n, err
}

// tailBuffer keeps the last bytes written to it (a program's stderr).
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 1024 {
		t.buf = t.buf[len(t.buf)-1024:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(bytes.ToValidUTF8(t.buf, nil)))
}

// receive stores the body into a temporary file while zstd unpacks it
// for the raw hash; it returns what was stored, or an HTTP status and why
// not. On success the temporary file is sv.tmp.
func (sv *Save) receive(w http.ResponseWriter, r *http.Request) (SaveResult, int, error) {
	limit := maxSaveSize(sv.maxRaw)
	if r.ContentLength > limit {
		return SaveResult{}, http.StatusRequestEntityTooLarge,
			fmt.Errorf("%d bytes: a zstd stream of this %d-byte disk is at most %d", r.ContentLength, sv.maxRaw, limit)
	}
	f, err := os.CreateTemp(sv.dir, ".save-*.tmp")
	if err != nil {
		return SaveResult{}, http.StatusInternalServerError, fmt.Errorf("%w", err)
	}
	kept := false
	defer func() {
		if !kept {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	// A saved image is served to nodes again: readable by every user, as
	// deploy requires of a local image.
	if err := f.Chmod(0o644); err != nil {
		return SaveResult{}, http.StatusInternalServerError, fmt.Errorf("%w", err)
	}

	unpack := exec.Command("zstd", "-dcq")
	var stderr tailBuffer
	unpack.Stderr = &stderr
	stdin, err := unpack.StdinPipe()
	if err != nil {
		return SaveResult{}, http.StatusInternalServerError, fmt.Errorf("%w", err)
	}
	stdout, err := unpack.StdoutPipe()
	if err != nil {
		return SaveResult{}, http.StatusInternalServerError, fmt.Errorf("%w", err)
	}
	if err := unpack.Start(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			err = errors.New("zstd is needed on the boot server's host to check saved images (Debian package zstd)")
		}
		return SaveResult{}, http.StatusInternalServerError, fmt.Errorf("%w", err)
	}
	h := sha256.New()
	hashed := make(chan error, 1)
	go func() {
		_, err := io.Copy(&rawWriter{sv: sv, h: h}, stdout)
		if err != nil {
			// Stop zstd: its output is no longer read.
			unpack.Process.Kill()
		}
		hashed <- err
	}()

	body := &saveReader{sv: sv, r: &stallReader{r: r.Body, rc: http.NewResponseController(w), stall: sv.s.cfg.HTTP.StallTimeout}, max: limit}
	_, copyErr := io.Copy(io.MultiWriter(f, &unpackWriter{stdin}), body)
	stdin.Close()
	if copyErr != nil {
		unpack.Process.Kill()
	}
	hashErr := <-hashed
	waitErr := unpack.Wait()
	res := SaveResult{Size: sv.received.Load(), RawSize: sv.raw.Load()}
	switch {
	case errors.Is(copyErr, errSaveTooLarge):
		return res, http.StatusRequestEntityTooLarge, fmt.Errorf("more than %d bytes sent: a zstd stream of this %d-byte disk is smaller", limit, sv.maxRaw)
	case errors.Is(hashErr, errRawTooLarge):
		return res, http.StatusRequestEntityTooLarge, fmt.Errorf("the stream unpacks to more than the disk's %d bytes", sv.maxRaw)
	case errors.Is(copyErr, errSaveClosed):
		return res, http.StatusGone, copyErr
	case errors.Is(copyErr, os.ErrDeadlineExceeded):
		return res, http.StatusRequestTimeout, fmt.Errorf("nothing arrived for %v after %d bytes", sv.s.cfg.HTTP.StallTimeout, res.Size)
	case errors.Is(copyErr, errUnpackStopped) && waitErr != nil:
		return res, http.StatusBadRequest, fmt.Errorf("the bytes received are not a zstd stream: %v: %s", waitErr, stderr.String())
	case errors.Is(copyErr, io.ErrUnexpectedEOF) || errors.Is(copyErr, syscall.ECONNRESET) || errors.Is(copyErr, syscall.ECONNABORTED):
		return res, http.StatusBadRequest, fmt.Errorf("the upload was cut after %d bytes (the connection ended before the stream did: %v)", res.Size, copyErr)
	case copyErr != nil:
		return res, http.StatusBadRequest, fmt.Errorf("receiving after %d bytes: %w", res.Size, copyErr)
	case hashErr != nil:
		return res, http.StatusInternalServerError, fmt.Errorf("reading the unpacked stream: %w", hashErr)
	case waitErr != nil:
		return res, http.StatusBadRequest, fmt.Errorf("the %d bytes received are not a whole zstd stream: %v: %s", res.Size, waitErr, stderr.String())
	}
	if err := f.Sync(); err != nil {
		return res, http.StatusInternalServerError, fmt.Errorf("%w", err)
	}
	if err := f.Close(); err != nil {
		return res, http.StatusInternalServerError, fmt.Errorf("%w", err)
	}
	res.RawSHA256 = hex.EncodeToString(h.Sum(nil))
	if res.RawSize != sv.maxRaw {
		return res, http.StatusBadRequest, fmt.Errorf("the stream unpacks to %d bytes, the disk has %d", res.RawSize, sv.maxRaw)
	}
	if res.RawSHA256 != sv.sha256 {
		return res, http.StatusBadRequest, fmt.Errorf("sha256 mismatch: the node hashed its disk as %s, the bytes received unpack to %s", sv.sha256, res.RawSHA256)
	}
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if sv.closed {
		return res, http.StatusGone, errSaveClosed
	}
	sv.tmp = f.Name()
	kept = true
	return res, 0, nil
}
