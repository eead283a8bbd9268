package netboot

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/labctl/labctl/internal/testutil"
)

// bootRoot is a boot root for tests, with a secret beside it (outside) that
// no request may reach.
type bootRoot struct {
	dir     string
	secret  string // absolute path of the file outside the root
	nbp     []byte // pxelinux.0
	kernel  []byte // master/vmlinuz
	initrd  []byte // master/initrd.gz
	dfault  []byte // pxelinux.cfg/default
	inLink  string // name of a symlink inside the root to pxelinux.0
	outRel  string // name of a relative symlink out of the root
	outAbs  string // name of an absolute symlink out of the root
	fifo    string // name of a FIFO in the root
	subdir  string // name of a directory
	secretB []byte
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func newBootRoot(t testing.TB) *bootRoot {
	t.Helper()
	base := t.TempDir()
	r := &bootRoot{
		dir:     filepath.Join(base, "root"),
		secret:  filepath.Join(base, "outside", "secret"),
		nbp:     randomBytes(t, 100<<10+123), // not a multiple of any block size
		kernel:  randomBytes(t, 300<<10),     // a multiple of 512: ends with an empty block
		initrd:  randomBytes(t, 64<<10+7),
		dfault:  []byte("DEFAULT fallback\nLABEL fallback\n  LOCALBOOT 0\n"),
		inLink:  "nbp-link",
		outRel:  "escape-rel",
		outAbs:  "escape-abs",
		fifo:    "fifo",
		subdir:  "master",
		secretB: []byte("SECRET outside the boot root\n"),
	}
	write := func(name string, b []byte) {
		p := filepath.Join(r.dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("pxelinux.0", r.nbp)
	write("master/vmlinuz", r.kernel)
	write("master/initrd.gz", r.initrd)
	write("pxelinux.cfg/default", r.dfault)
	if err := os.MkdirAll(filepath.Dir(r.secret), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.secret, r.secretB, 0o644); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink("pxelinux.0", filepath.Join(r.dir, r.inLink)))
	must(os.Symlink("../outside/secret", filepath.Join(r.dir, r.outRel)))
	must(os.Symlink(r.secret, filepath.Join(r.dir, r.outAbs)))
	must(syscall.Mkfifo(filepath.Join(r.dir, r.fifo), 0o644))
	return r
}

// testServer is a running boot server on 127.0.0.1 with free ports.
type testServer struct {
	*Server
	root   *bootRoot
	logs   *testutil.SyncBuffer
	cancel context.CancelFunc
	done   chan error
}

// tftpAddr is "127.0.0.1:port".
func (ts *testServer) tftpAddr() string { return ts.TFTPAddr().String() }

// startServer starts a boot server over a fresh boot root. mod may change
// the config first. The server is stopped when the test ends; a Serve that
// does not return within 5s fails the test.
func startServer(t *testing.T, mod func(*Config)) *testServer {
	t.Helper()
	return startServerHook(t, mod, nil)
}

// startServerHook is startServer with a hook that may change the server
// after New and before Serve.
func startServerHook(t *testing.T, mod func(*Config), before func(*Server)) *testServer {
	t.Helper()
	root := newBootRoot(t)
	logs := &testutil.SyncBuffer{}
	cfg := Config{Root: root.dir, TFTPAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", ShutdownGrace: time.Second}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	if before != nil {
		before(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: s, root: root, logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		ts.stop(t)
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return ts
}

// stop cancels Serve and waits for it; idempotent.
func (ts *testServer) stop(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	ts.cancel()
	select {
	case err, ok := <-ts.done:
		if ok {
			close(ts.done)
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("Serve did not return 5s after its context ended")
	}
	return time.Since(start)
}

// rawHTTP sends a request line exactly as given (no client-side cleaning)
// and returns the status code.
func rawHTTP(t *testing.T, addr, method, target string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n", method, target)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s %q: %v", method, target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if bytes.Contains(body, []byte("SECRET")) {
		t.Fatalf("%s %q leaked the secret outside the root", method, target)
	}
	return resp.StatusCode
}

// httpGet fetches url with Go's client and returns status and body.
func httpGet(t *testing.T, url string, header ...string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
