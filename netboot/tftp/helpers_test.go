package tftp

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/labctl/labctl/internal/testutil"
)

// The settings the tests run with unless they change them: the boot
// server's defaults.
var testConfig = Config{
	MaxBlockSize:  1468,
	MaxWindowSize: 32,
	Timeout:       time.Second,
	Retries:       5,
	MaxTransfers:  2048,
}

// testFiles are the files a test server serves from a directory of its own.
type testFiles struct {
	dir    string
	nbp    []byte // pxelinux.0
	kernel []byte // master/vmlinuz
	initrd []byte // master/initrd.gz
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func newTestFiles(t testing.TB) *testFiles {
	t.Helper()
	f := &testFiles{
		dir:    t.TempDir(),
		nbp:    randomBytes(t, 100<<10+123), // not a multiple of any block size
		kernel: randomBytes(t, 300<<10),     // a multiple of 512: ends with an empty block
		initrd: randomBytes(t, 64<<10+7),
	}
	for name, b := range map[string][]byte{"pxelinux.0": f.nbp, "master/vmlinuz": f.kernel, "master/initrd.gz": f.initrd} {
		p := filepath.Join(f.dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// open is the test servers' read handler: files under dir.
func (f *testFiles) open(name string, _ netip.AddrPort) (Content, error) {
	file, err := os.Open(filepath.Join(f.dir, filepath.FromSlash(name)))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Content{}, fmt.Errorf("%s: %w", name, ErrNotFound)
		}
		return Content{}, err
	}
	fi, err := file.Stat()
	if err != nil {
		file.Close()
		return Content{}, err
	}
	return Content{File: file, Info: fi}, nil
}

// testServer is a running server on a free port.
type testServer struct {
	*Server
	root   *testFiles
	conn   *net.UDPConn
	logs   *testutil.SyncBuffer
	cancel context.CancelFunc
	done   chan error
}

// testOptions are what a test may change before the server starts.
type testOptions struct {
	Config
	addr string // where the server listens; 127.0.0.1:0 unless set
}

// tftpAddr is "127.0.0.1:port".
func (ts *testServer) tftpAddr() string { return ts.conn.LocalAddr().String() }

// startServer starts a server over fresh test files. mod may change the
// options first. The server is stopped when the test ends; a Serve that
// does not return within 5s fails the test.
func startServer(t *testing.T, mod func(*testOptions)) *testServer {
	t.Helper()
	return startServerHook(t, mod, nil)
}

// startServerHook is startServer with a hook that may change the server
// after NewServer and before Serve.
func startServerHook(t *testing.T, mod func(*testOptions), before func(*Server)) *testServer {
	t.Helper()
	root := newTestFiles(t)
	logs := &testutil.SyncBuffer{}
	opts := testOptions{Config: testConfig, addr: "127.0.0.1:0"}
	if mod != nil {
		mod(&opts)
	}
	s, err := NewServer(root.open, opts.Config, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", opts.addr)
	if err != nil {
		t.Fatal(err)
	}
	if before != nil {
		before(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: s, root: root, conn: pc.(*net.UDPConn), logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- s.Serve(ctx, pc) }()
	t.Cleanup(func() {
		ts.stop(t)
		pc.Close()
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

func dialRaw(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
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
