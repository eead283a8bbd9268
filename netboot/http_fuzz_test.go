package netboot

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// fuzzServer is a boot server that is never started: the fuzz targets
// call its ServeHTTP. Its root holds f (1000 bytes), sub/g, a link to f,
// links out of the root to a secret file, and a FIFO.
type fuzzServer struct {
	*Server
	files  map[string][]byte // root files by clean name, links resolved
	secret []byte
}

func newFuzzServer(f *testing.F) *fuzzServer {
	f.Helper()
	base := f.TempDir()
	root := filepath.Join(base, "root")
	fs := &fuzzServer{files: map[string][]byte{}, secret: []byte("SECRET outside the boot root")}
	body := make([]byte, 1000)
	for i := range body {
		body[i] = byte(i % 251)
	}
	fs.files["f"], fs.files["in"], fs.files["sub/g"] = body, body, []byte("g\n")
	must := func(err error) {
		if err != nil {
			f.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "sub"), 0o755))
	must(os.WriteFile(filepath.Join(root, "f"), body, 0o644))
	must(os.WriteFile(filepath.Join(root, "sub/g"), fs.files["sub/g"], 0o644))
	must(os.WriteFile(filepath.Join(base, "secret"), fs.secret, 0o644))
	must(os.Symlink("f", filepath.Join(root, "in")))
	must(os.Symlink("../secret", filepath.Join(root, "out")))
	must(os.Symlink(filepath.Join(base, "secret"), filepath.Join(root, "abs")))
	must(syscall.Mkfifo(filepath.Join(root, "fifo"), 0o644))
	s, err := New(Config{Root: root, HTTPAddr: "127.0.0.1:0", MaxUploadBytes: 4096}, nil)
	must(err)
	f.Cleanup(func() { s.Close() })
	fs.Server = s
	return fs
}

// FuzzHTTPRoot requests any path of the boot root with any Range header:
// nothing outside the root is ever served, decoding a request never fails
// the server (no 5xx), and what it sends is the file or the ranges of it
// that its Content-Range headers say.
func FuzzHTTPRoot(f *testing.F) {
	for _, s := range []struct{ path, rng string }{
		{"/f", ""}, {"/f", "bytes=0-99"}, {"/in", "bytes=990-"}, {"/f", "bytes=-10"}, {"/f", "bytes=0-0,5-9"},
		{"/f", "bytes=1000-"}, {"/f", "bytes=5-2"}, {"/sub/g", "bytes=0-999999"}, {"/f", "bytes=0-1,0-1,0-1"},
		{"/out", ""}, {"/abs", "bytes=0-3"}, {"/fifo", ""}, {"/../secret", ""}, {"/sub/../../secret", ""},
		{"/sub", ""}, {"/", ""}, {"/f\x00", ""}, {"/pxelinux.cfg/01-52-54-00-00-00-01", "bytes=0-3"}, {"/f", "items=0-1"},
	} {
		f.Add(s.path, s.rng)
	}
	s := newFuzzServer(f)
	f.Fuzz(func(t *testing.T, path, rng string) {
		if strings.HasPrefix(path, imagesPrefix) || strings.HasPrefix(path, uploadsPrefix) {
			return
		}
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.URL.Path = path
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		body := w.Body.Bytes()
		if bytes.Contains(body, s.secret) {
			t.Fatalf("GET %q: served the file outside the root", path)
		}
		want, known := s.files[strings.TrimPrefix(path, "/")]
		switch w.Code {
		case http.StatusOK:
			if known && !bytes.Equal(body, want) {
				t.Fatalf("GET %q: %d bytes, want the file's %d", path, len(body), len(want))
			}
		case http.StatusPartialContent:
			checkRanges(t, w.Result(), body, want, known)
		case http.StatusRequestedRangeNotSatisfiable:
			// A Range that does not parse gets no Content-Range.
			if cr := w.Header().Get("Content-Range"); cr != "" && !strings.HasPrefix(cr, "bytes */") {
				t.Fatalf("GET %q Range %q: 416 with Content-Range %q", path, rng, w.Header().Get("Content-Range"))
			}
		case http.StatusBadRequest, http.StatusNotFound:
		default:
			t.Fatalf("GET %q Range %q: status %d %q", path, rng, w.Code, body)
		}
	})
}

// checkRanges checks a 206 answer: each part (one, or the parts of a
// multipart/byteranges body) holds exactly the bytes its Content-Range
// names, at least one, of the file (want, when known).
func checkRanges(t *testing.T, resp *http.Response, body, want []byte, known bool) {
	t.Helper()
	mt, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt != "multipart/byteranges" {
		checkRange(t, resp.Header.Get("Content-Range"), body, want, known)
		return
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	parts := 0
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("multipart body: %v", err)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatalf("multipart part: %v", err)
		}
		checkRange(t, p.Header.Get("Content-Range"), b, want, known)
		parts++
	}
	if parts == 0 {
		t.Fatal("multipart/byteranges without parts")
	}
}

func checkRange(t *testing.T, contentRange string, got, want []byte, known bool) {
	t.Helper()
	var first, last, size int64
	if _, err := fmt.Sscanf(contentRange, "bytes %d-%d/%d", &first, &last, &size); err != nil ||
		contentRange != fmt.Sprintf("bytes %d-%d/%d", first, last, size) {
		t.Fatalf("Content-Range %q", contentRange)
	}
	if first < 0 || last < first || last >= size || int64(len(got)) != last-first+1 {
		t.Fatalf("Content-Range %q with %d bytes", contentRange, len(got))
	}
	if known && (size != int64(len(want)) || !bytes.Equal(got, want[first:last+1])) {
		t.Fatalf("Content-Range %q: not those bytes of the file", contentRange)
	}
}

// FuzzUpload sends any name, query and body to an upload URL: the server
// answers with a status it means (no 5xx), and a file is stored exactly
// when it answers 201: under the sanitised name, with the bytes sent
// (decoded for encoding=base64), as many as size= said, and nothing else
// is left in the directory.
func FuzzUpload(f *testing.F) {
	for _, s := range []struct {
		name, query string
		body        []byte
	}{
		{"results.txt", "", []byte("ok\n")},
		{"r.bin", "encoding=base64&size=4", []byte("AAEC\r\nAw==\n")},
		{"r.bin", "encoding=base64", []byte("!!not base64")},
		{"a", "size=3", []byte("abc")},
		{"a", "size=4", []byte("abc")},
		{"a", "size=-1", nil},
		{"a", "size=%20%2B3%20", []byte("abc")},
		{"a", "encoding=gzip", nil},
		{"../../x", "", []byte("x")},
		{"...", "", []byte("x")},
		{"big", "", bytes.Repeat([]byte("x"), 5000)},
		{"big", "encoding=base64", []byte(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("x"), 3100)))},
	} {
		f.Add(s.name, s.query, s.body, false)
	}
	s := newFuzzServer(f)
	dirs := f.TempDir()
	n := 0
	f.Fuzz(func(t *testing.T, name, query string, body []byte, put bool) {
		n++
		dir := filepath.Join(dirs, strconv.Itoa(n))
		up, err := s.AcceptUpload(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		defer up.Close()
		method := http.MethodPost
		if put {
			method = http.MethodPut
		}
		req := httptest.NewRequest(method, "/", bytes.NewReader(body))
		req.URL.Path = strings.TrimPrefix(up.URL(), s.httpURL) + name
		req.URL.RawQuery = query
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)

		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if w.Code != http.StatusCreated {
			switch w.Code {
			case http.StatusBadRequest, http.StatusNotFound, http.StatusConflict, http.StatusRequestEntityTooLarge:
			default:
				t.Fatalf("%s %q?%q: status %d %q", method, name, query, w.Code, w.Body)
			}
			if len(entries) != 0 || len(up.Files()) != 0 {
				t.Fatalf("%s %q?%q: status %d, but %v left in the directory", method, name, query, w.Code, entries)
			}
			return
		}
		stored, err := sanitizeUploadName(name)
		if err != nil {
			t.Fatalf("%q stored though its name sanitises to nothing", name)
		}
		if len(entries) != 1 || entries[0].Name() != stored {
			t.Fatalf("%q stored, directory holds %v, want [%s]", name, entries, stored)
		}
		got, err := os.ReadFile(filepath.Join(dir, stored))
		if err != nil {
			t.Fatal(err)
		}
		q, _ := url.ParseQuery(query)
		want := body
		if q.Get("encoding") == "base64" {
			want, err = base64.StdEncoding.DecodeString(strings.NewReplacer("\r", "", "\n", "").Replace(string(body)))
			if err != nil {
				t.Fatalf("stored %q from base64 that does not decode: %v", body, err)
			}
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("stored %q, sent %q", got, want)
		}
		if size := q.Get("size"); size != "" && !sizeIs(size, len(got)) {
			t.Fatalf("stored %d bytes, size=%q", len(got), size)
		}
		if files := up.Files(); len(files) != 1 || files[0] != (UploadedFile{Name: stored, Size: int64(len(got))}) {
			t.Fatalf("Files() = %v", files)
		}
	})
}

func sizeIs(param string, n int) bool {
	v, err := strconv.ParseInt(strings.TrimSpace(param), 10, 64)
	return err == nil && v == int64(n)
}
