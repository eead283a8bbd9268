package netboot

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// URL layout of the HTTP server:
//
//	/images/<token>/<name>   a published job image (GET, HEAD; Range)
//	/uploads/<token>/<name>  an artifact upload (POST, PUT)
//	/saves/<token>           a saved disk image (PUT, POST; single use)
//	/<path>                  the boot root and generated pxelinux configs (GET, HEAD)
//
// Files in the root under images/ and uploads/ are therefore not reachable
// over HTTP (they still are over TFTP).
const (
	imagesPrefix  = "/images/"
	uploadsPrefix = "/uploads/"
)

// ServeHTTP routes a request and logs it once it is done. A request on a
// connection over a cap is answered 503 and the connection closed.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	conn := requestConn(r)
	if conn != nil && conn.refused != "" {
		w.Header().Set("Connection", "close")
		http.Error(w, "boot server busy: "+conn.refused+", try again later", http.StatusServiceUnavailable)
		s.httpStats.count(http.StatusServiceUnavailable, 0)
		s.refused.log(s.log, s.conns, conn.client, conn.refused)
		return
	}
	fixEmptySuffixRanges(r.Header)
	cw := &countingWriter{ResponseWriter: w}
	client, _, _ := net.SplitHostPort(r.RemoteAddr)
	var attrs []slog.Attr
	switch p := r.URL.Path; {
	case strings.HasPrefix(p, imagesPrefix):
		attrs = s.serveImage(cw, r, strings.TrimPrefix(p, imagesPrefix))
	case strings.HasPrefix(p, uploadsPrefix):
		attrs = s.serveUpload(cw, r, strings.TrimPrefix(p, uploadsPrefix))
	case strings.HasPrefix(p, savesPrefix):
		attrs = s.serveSave(cw, r, strings.TrimPrefix(p, savesPrefix))
	default:
		attrs = s.serveRoot(cw, r, net.ParseIP(client))
	}
	status := cw.status
	if status == 0 {
		status = http.StatusOK
	}
	s.httpStats.count(status, cw.written.Load())
	level := slog.LevelInfo
	switch {
	case status == http.StatusBadRequest:
		level = slog.LevelWarn // a name that tries to leave the root, a bad upload
	case status >= 400:
		level = slog.LevelDebug // misses are routine
	}
	if conn != nil && conn.stalled.Load() {
		level = slog.LevelWarn
		attrs = append(attrs, slog.String("err", "client stopped reading: no progress for "+conn.stall.String()+", connection closed"))
	}
	file := r.URL.Path
	if strings.HasPrefix(file, savesPrefix) {
		file = savesPrefix + "[token]" // a save's token is its secret
	}
	attrs = append(attrs,
		slog.String("proto", "http"), slog.String("client", client),
		slog.String("method", r.Method), slog.String("file", file),
		slog.Int("status", status), slog.Int64("bytes", cw.written.Load()),
		slog.Duration("duration", time.Since(start).Round(time.Millisecond)))
	s.log.LogAttrs(r.Context(), level, "transfer done", attrs...)
}

// unsatisfiableRange is a byte range that starts past the end of any file.
const unsatisfiableRange = "9223372036854775807-"

// fixEmptySuffixRanges makes suffix ranges of zero bytes ("bytes=-0")
// unsatisfiable, as RFC 9110 has them: http.ServeContent would answer one
// with 206 and no bytes. A request whose ranges are all such gets 416
// (with the size in Content-Range); others in the same header are served.
// A range is read as net/http reads it (white space trimmed, the number
// parsed with strconv, so "- 0" and "-+0" are zero too).
func fixEmptySuffixRanges(h http.Header) {
	v := h.Get("Range")
	if !strings.HasPrefix(v, "bytes=") {
		return
	}
	parts := strings.Split(v[len("bytes="):], ",")
	changed := false
	for i, p := range parts {
		start, end, ok := strings.Cut(strings.Trim(p, " \t\r\n"), "-")
		if !ok || strings.Trim(start, " \t\r\n") != "" {
			continue
		}
		end = strings.Trim(end, " \t\r\n")
		if n, err := strconv.ParseInt(end, 10, 64); err == nil && n == 0 && end != "" && end[0] != '-' {
			parts[i], changed = unsatisfiableRange, true
		}
	}
	if changed {
		h.Set("Range", "bytes="+strings.Join(parts, ","))
	}
}

// serveRoot serves a file from the boot root or a generated config.
func (s *Server) serveRoot(w http.ResponseWriter, r *http.Request, client net.IP) []slog.Attr {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return nil
	}
	c, err := s.open(strings.TrimPrefix(r.URL.Path, "/"), client)
	if err != nil {
		if errors.Is(err, errBadName) {
			http.Error(w, "invalid file name", http.StatusBadRequest)
		} else {
			http.NotFound(w, r)
		}
		return []slog.Attr{slog.String("err", err.Error())}
	}
	defer c.Close()
	if c.generated != nil {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store") // changes with every job
	} else {
		w.Header().Set("Content-Type", "application/octet-stream")
	}
	http.ServeContent(w, r, "", c.modTime, c.reader())
	if c.node != "" {
		return []slog.Attr{slog.String("node", c.node)}
	}
	return nil
}

// progressChunk is how much the kernel sends (sendfile) between two
// updates of a byte counter.
const progressChunk = 4 << 20

// countingWriter records the status and counts the body bytes written, and
// optionally adds them to a shared counter (an image's BytesServed). Its
// ReadFrom keeps http.ServeContent on the zero-copy path (sendfile from the
// *os.File) while still updating the counter every progressChunk bytes.
type countingWriter struct {
	http.ResponseWriter
	status  int
	written atomic.Int64
	also    *atomic.Int64 // may be nil
}

func (w *countingWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.add(int64(n))
	return n, err
}

func (w *countingWriter) add(n int64) {
	w.written.Add(n)
	if w.also != nil {
		w.also.Add(n)
	}
}

// ReadFrom passes the copy to the connection in chunks. http.ServeContent
// hands it an *io.LimitedReader over the file; re-slicing that into
// LimitedReaders of progressChunk keeps the file visible to the kernel's
// sendfile while the counter moves during a long transfer.
func (w *countingWriter) ReadFrom(src io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	rf, ok := w.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.Copy(writerOnly{w}, src)
	}
	lr, ok := src.(*io.LimitedReader)
	if !ok {
		n, err := rf.ReadFrom(src)
		w.add(n)
		return n, err
	}
	var total int64
	for lr.N > 0 {
		chunk := &io.LimitedReader{R: lr.R, N: min(lr.N, progressChunk)}
		want := chunk.N
		n, err := rf.ReadFrom(chunk)
		lr.N -= n
		total += n
		w.add(n)
		if err != nil {
			return total, err
		}
		if n < want { // source ended early
			break
		}
	}
	return total, nil
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// writerOnly hides ReadFrom so io.Copy does not recurse into it.
type writerOnly struct{ io.Writer }
