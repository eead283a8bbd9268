package netboot

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dialFrom opens a TCP connection to addr from the local IP from
// (127.0.0.x: every loopback address works on Linux), with a small
// receive buffer when rcvbuf > 0.
func dialFrom(t *testing.T, from, addr string, rcvbuf int) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	if rcvbuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// getOn sends GET path on c and returns the response's status and body.
func getOn(t *testing.T, c net.Conn, path string) (int, string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s from %s: %v", path, c.LocalAddr(), err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestHTTPStalledDownloadCut: a client that asks for a large file and
// stops reading has its connection closed once no write made progress for
// StallTimeout; its place is given back and the server logs why.
func TestHTTPStalledDownloadCut(t *testing.T) {
	const stall = 300 * time.Millisecond
	ts := startServer(t, func(c *Config) { c.HTTP.StallTimeout = stall })
	const size = 64 << 20 // far more than the socket buffers hold
	if err := os.Truncate(filepath.Join(ts.root.dir, "pxelinux.0"), size); err != nil {
		t.Fatal(err)
	}
	c := dialFrom(t, "127.0.0.1", ts.HTTPAddr().String(), 4096)
	fmt.Fprintf(c, "GET /pxelinux.0 HTTP/1.1\r\nHost: test\r\n\r\n")
	waitFor(t, "the stalled download to be cut", 10*time.Second, func() bool {
		return strings.Contains(ts.logs.String(), "client stopped reading") && ts.conns.Open() == 0
	})
	// What the client gets now ends short of the file.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := io.Copy(io.Discard, c)
	if n >= size {
		t.Fatalf("the client still received the whole file (%d bytes, %v)", n, err)
	}
	if errors := strings.Count(ts.logs.String(), "client stopped reading"); errors != 1 {
		t.Fatalf("%d log lines for the stalled client", errors)
	}
	// A reading client is served as before.
	if status, body := httpGet(t, ts.HTTPURL()+"/master/vmlinuz"); status != http.StatusOK || !bytes.Equal([]byte(body), ts.root.kernel) {
		t.Fatalf("GET after the cut: status %d", status)
	}
}

// TestHTTPStalledUploadCut: an upload whose body stops arriving is ended
// after StallTimeout with 408, and nothing is stored.
func TestHTTPStalledUploadCut(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.HTTP.StallTimeout = 300 * time.Millisecond })
	dest := t.TempDir()
	up, err := ts.AcceptUpload(dest)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	c := dialFrom(t, "127.0.0.1", ts.HTTPAddr().String(), 0)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	path := strings.TrimPrefix(up.URL(), ts.HTTPURL())
	fmt.Fprintf(c, "PUT %sresults.txt HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\nfirst ten.", path)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled upload: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("status %d, want 408", resp.StatusCode)
	}
	if entries, _ := os.ReadDir(dest); len(entries) != 0 || len(up.Files()) != 0 {
		t.Fatalf("left behind: %v %v", entries, up.Files())
	}
	waitFor(t, "the connection to close", 30*time.Second, func() bool { return ts.conns.Open() == 0 })
}

// TestHTTPConnectionCaps: beyond the per-client cap a client's next
// connection is answered 503 while other clients are served; beyond the
// total cap everyone's is; a freed place is taken again.
func TestHTTPConnectionCaps(t *testing.T) {
	ts := startServerHook(t, func(c *Config) {
		c.HTTP.MaxConns = 4
		c.HTTP.MaxConnsPerClient = 2
	}, func(s *Server) { s.conns.exempt = nil }) // the test's clients are all loopback
	addr := ts.HTTPAddr().String()
	idle := func(from string) net.Conn { return dialFrom(t, from, addr, 0) }

	a1, _ := idle("127.0.0.1"), idle("127.0.0.1")
	waitFor(t, "two connections", 30*time.Second, func() bool { return ts.conns.Open() == 2 })
	status, body := getOn(t, idle("127.0.0.1"), "/pxelinux.cfg/default")
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "too many connections from 127.0.0.1") {
		t.Fatalf("third connection from one client: %d %q, want 503", status, body)
	}
	if status, _ := getOn(t, idle("127.0.0.2"), "/pxelinux.cfg/default"); status != http.StatusOK {
		t.Fatalf("another client: status %d, want 200", status)
	}
	waitFor(t, "the other client's connection to close", 30*time.Second, func() bool { return ts.conns.Open() == 2 })

	idle("127.0.0.2")
	idle("127.0.0.2")
	waitFor(t, "four connections", 30*time.Second, func() bool { return ts.conns.Open() == 4 })
	status, body = getOn(t, idle("127.0.0.3"), "/pxelinux.cfg/default")
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "too many connections,") {
		t.Fatalf("over the total cap: %d %q, want 503", status, body)
	}
	a1.Close()
	waitFor(t, "a place to free", 30*time.Second, func() bool { return ts.conns.Open() == 3 })
	if status, _ := getOn(t, idle("127.0.0.3"), "/pxelinux.cfg/default"); status != http.StatusOK {
		t.Fatalf("after a place freed: status %d, want 200", status)
	}
	if !strings.Contains(ts.logs.String(), "connection refused: 503") {
		t.Errorf("no log line for the refusals")
	}
	waitFor(t, "refused connections to close", 30*time.Second, func() bool { return ts.conns.refusing.Load() == 0 })
}

// TestHTTPLoopbackNotCappedPerClient: loopback clients (a single-host lab,
// simlab's user-mode network, where every node is 127.0.0.1) only count
// against the total cap.
func TestHTTPLoopbackNotCappedPerClient(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.HTTP.MaxConnsPerClient = 1 })
	addr := ts.HTTPAddr().String()
	dialFrom(t, "127.0.0.1", addr, 0)
	waitFor(t, "one connection", 30*time.Second, func() bool { return ts.conns.Open() == 1 })
	if status, _ := getOn(t, dialFrom(t, "127.0.0.1", addr, 0), "/pxelinux.0"); status != http.StatusOK {
		t.Fatalf("second loopback connection: status %d, want 200", status)
	}
}

// TestHTTPEmptySuffixRange: "bytes=-0" asks for the last zero bytes,
// which no representation has: 416 with the size, for root files and
// images alike; a satisfiable range beside it is served.
func TestHTTPEmptySuffixRange(t *testing.T) {
	ts := startServer(t, nil)
	path := filepath.Join(t.TempDir(), "disk.img")
	data := randomBytes(t, 4096)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	im := publishFile(t, ts, path)
	for url, size := range map[string]int{ts.HTTPURL() + "/master/initrd.gz": len(ts.root.initrd), im.URL(): len(data)} {
		for _, rng := range []string{"bytes=-0", "bytes=-000", "bytes= -0 , -0", "bytes=- 0", "bytes=-\t0", "bytes=-+0"} {
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.Header.Set("Range", rng)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if want := fmt.Sprintf("bytes */%d", size); resp.StatusCode != http.StatusRequestedRangeNotSatisfiable || resp.Header.Get("Content-Range") != want {
				t.Errorf("%s Range %q: %d %q, want 416 %q", url, rng, resp.StatusCode, resp.Header.Get("Content-Range"), want)
			}
		}
		status, body := httpGet(t, url, "Range", "bytes=-0,0-9")
		if status != http.StatusPartialContent || len(body) != 10 {
			t.Errorf("%s bytes=-0,0-9: %d, %d bytes; want 206 with 10", url, status, len(body))
		}
		status, body = httpGet(t, url, "Range", "bytes=-10")
		if status != http.StatusPartialContent || len(body) != 10 {
			t.Errorf("%s bytes=-10: %d, %d bytes; want 206 with 10", url, status, len(body))
		}
	}
}

// TestUploadCapsPerURL: one upload URL (one job) stores at most
// MaxUploadTotalBytes and MaxUploadFiles in all, however the bytes are
// split over requests; what is refused is answered 413 with the reason
// and leaves nothing behind.
func TestUploadCapsPerURL(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.MaxUploadTotalBytes = 1000
		c.MaxUploadFiles = 3
	})
	dest := t.TempDir()
	up, err := ts.AcceptUpload(dest)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	put := func(name string, n int, hideLength bool) (int, string) {
		t.Helper()
		var body io.Reader = bytes.NewReader(bytes.Repeat([]byte("x"), n))
		if hideLength {
			body = struct{ io.Reader }{body} // chunked: the cap holds while reading
		}
		req, _ := http.NewRequest(http.MethodPut, up.URL()+name, body)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		msg, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(msg)
	}
	steps := []struct {
		name   string
		n      int
		hide   bool
		status int
		msg    string
	}{
		{"a", 600, false, http.StatusCreated, ""},
		{"b", 600, false, http.StatusRequestEntityTooLarge, "at most 1000 bytes in all"},
		{"c", 600, true, http.StatusRequestEntityTooLarge, "at most 1000 bytes in all"},
		{"d", 300, true, http.StatusCreated, ""},
		{"e", 100, false, http.StatusCreated, ""},
		{"f", 0, false, http.StatusRequestEntityTooLarge, "at most 3 files"},
	}
	for _, s := range steps {
		status, msg := put(s.name, s.n, s.hide)
		if status != s.status || !strings.Contains(msg, s.msg) {
			t.Fatalf("%s (%d bytes): %d %q, want %d %q", s.name, s.n, status, msg, s.status, s.msg)
		}
	}
	var names []string
	for _, f := range up.Files() {
		names = append(names, f.Name)
	}
	entries, _ := os.ReadDir(dest)
	if got := strings.Join(names, ","); got != "a,d,e" || len(entries) != 3 {
		t.Fatalf("stored %s, directory %v", got, entries)
	}
	if !strings.Contains(ts.logs.String(), "upload refused") {
		t.Errorf("no log line for the refusals")
	}
	// What a node sees: busybox wget fails and says 413.
	file := filepath.Join(t.TempDir(), "log.txt")
	if err := os.WriteFile(file, []byte("one more\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := nodeUpload(t, file, up.URL(), "log.txt", false)
	if err == nil || !strings.Contains(out, "413") {
		t.Fatalf("busybox wget over the cap: %v %q, want a failure naming 413", err, out)
	}
}
