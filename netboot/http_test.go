package netboot

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestHTTPServesRoot(t *testing.T) {
	ts := startServer(t, nil)
	base := ts.HTTPURL()
	status, body := httpGet(t, base+"/master/vmlinuz")
	if status != http.StatusOK || !bytes.Equal(body, ts.root.kernel) {
		t.Fatalf("kernel: status %d, %d bytes", status, len(body))
	}
	status, body = httpGet(t, base+"/"+ts.root.inLink)
	if status != http.StatusOK || !bytes.Equal(body, ts.root.nbp) {
		t.Fatalf("symlink inside root: status %d, %d bytes", status, len(body))
	}
	status, body = httpGet(t, base+"/master/initrd.gz", "Range", "bytes=1000-1999")
	if status != http.StatusPartialContent || !bytes.Equal(body, ts.root.initrd[1000:2000]) {
		t.Fatalf("range: status %d, %d bytes", status, len(body))
	}
	resp, err := http.Head(base + "/pxelinux.0")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len(ts.root.nbp)) {
		t.Fatalf("HEAD: status %d length %d", resp.StatusCode, resp.ContentLength)
	}
	resp, err = http.Post(base+"/pxelinux.0", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST to the root: status %d", resp.StatusCode)
	}
	// Generated configs change with every job: no Last-Modified, no 304.
	if err := ts.SetNode(mustMAC(t, testMAC), nil, testLocalEntry); err != nil {
		t.Fatal(err)
	}
	cfgURL := base + "/pxelinux.cfg/01-52-54-00-00-00-01"
	status, _ = httpGet(t, cfgURL, "If-Modified-Since", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat))
	if status != http.StatusOK {
		t.Fatalf("conditional GET of a generated config: status %d, want 200", status)
	}
	want := fmt.Sprintf("proto=http client=127.0.0.1 method=GET file=/master/vmlinuz status=200 bytes=%d duration=", len(ts.root.kernel))
	waitFor(t, "http log line", 30*time.Second, func() bool { return strings.Contains(ts.logs.String(), want) })
}

func TestHTTPRefusesEscapes(t *testing.T) {
	ts := startServer(t, nil)
	addr := ts.HTTPAddr().String()
	rel, _ := filepath.Rel(ts.root.dir, ts.root.secret)
	tests := map[string]struct {
		target string
		status int
	}{
		"dot dot":               {"/" + rel, http.StatusBadRequest},
		"dot dot deep":          {"/pxelinux.cfg/../../outside/secret", http.StatusBadRequest},
		"encoded dot dot":       {"/%2e%2e/outside/secret", http.StatusBadRequest},
		"encoded slash dot dot": {"/master%2f..%2f..%2foutside/secret", http.StatusBadRequest},
		"absolute":              {"/" + ts.root.secret, http.StatusBadRequest},
		"relative symlink out":  {"/" + ts.root.outRel, http.StatusNotFound},
		"absolute symlink out":  {"/" + ts.root.outAbs, http.StatusNotFound},
		"nul":                   {"/pxelinux.0%00.txt", http.StatusBadRequest},
		"very long":             {"/" + strings.Repeat("a/", 200) + "x", http.StatusBadRequest},
		"fifo":                  {"/" + ts.root.fifo, http.StatusNotFound},
		"directory":             {"/master", http.StatusNotFound},
		"root directory":        {"/", http.StatusBadRequest},
		"images without token":  {"/images/", http.StatusNotFound},
		"unknown mac":           {"/pxelinux.cfg/01-52-54-00-99-99-99", http.StatusNotFound},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := rawHTTP(t, addr, "GET", tt.target); got != tt.status {
				t.Fatalf("GET %s: status %d, want %d", tt.target, got, tt.status)
			}
		})
	}
}

func TestImages(t *testing.T) {
	ts := startServer(t, nil)
	dir := t.TempDir()
	path := filepath.Join(dir, "disk image.img.gz")
	data := randomBytes(t, 10<<20+17) // more than two progress chunks
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	im := publishFile(t, ts, path)
	if im.Size() != int64(len(data)) {
		t.Fatalf("Size %d", im.Size())
	}
	prefix := ts.HTTPURL() + "/images/"
	if !strings.HasPrefix(im.URL(), prefix) || !strings.HasSuffix(im.URL(), "/disk%20image.img.gz") {
		t.Fatalf("URL %s", im.URL())
	}
	token := strings.TrimPrefix(im.URL(), prefix)
	token = token[:strings.IndexByte(token, '/')]
	if len(token) < 26 {
		t.Fatalf("token %q is too short to be unguessable", token)
	}
	other := publishFile(t, ts, path)
	defer other.Close()
	if other.URL() == im.URL() {
		t.Fatal("two publications share a URL")
	}

	status, body := httpGet(t, im.URL())
	if status != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("GET: status %d, %d bytes", status, len(body))
	}
	if got := im.BytesServed(); got != int64(len(data)) {
		t.Fatalf("BytesServed after a full GET: %d, want %d", got, len(data))
	}
	status, body = httpGet(t, im.URL(), "Range", "bytes=100-199")
	if status != http.StatusPartialContent || !bytes.Equal(body, data[100:200]) {
		t.Fatalf("range: status %d, %d bytes", status, len(body))
	}
	if got := im.BytesServed(); got != int64(len(data))+100 {
		t.Fatalf("BytesServed after a range: %d, want %d", got, len(data)+100)
	}
	if other.BytesServed() != 0 {
		t.Fatalf("the other publication counted %d bytes", other.BytesServed())
	}
	resp, err := http.Head(im.URL())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ContentLength != int64(len(data)) || im.BytesServed() != int64(len(data))+100 {
		t.Fatalf("HEAD: length %d, counter %d", resp.ContentLength, im.BytesServed())
	}

	// Progress moves while a transfer runs, not only at its end. The
	// count is read before the request: a fast server may have counted
	// much of the body by the time the response's headers are read.
	before := im.BytesServed()
	resp, err = http.Get(im.URL())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, resp.Body, 6<<20); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "progress during a transfer", 30*time.Second, func() bool { return im.BytesServed()-before >= progressChunk })
	resp.Body.Close()

	// Wrong tokens and names.
	for _, u := range []string{
		prefix + "AAAAAAAAAAAAAAAAAAAAAAAAAA/disk%20image.img.gz",
		prefix + token + "/other.img",
		prefix + token,
		prefix + token + "/",
	} {
		if status, _ := httpGet(t, u); status != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", u, status)
		}
	}
	// Closed: 404.
	im.Close()
	if status, _ := httpGet(t, im.URL()); status != http.StatusNotFound {
		t.Fatalf("after Close: status %d", status)
	}
	// A file written in place after publishing is not served under the
	// old URL.
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("changed"), 0)
	f.Close()
	if status, _ := httpGet(t, other.URL()); status != http.StatusGone {
		t.Fatalf("modified file: status %d, want 410", status)
	}
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := ts.PublishImage(d); err == nil {
		t.Fatal("published a directory")
	}
}
