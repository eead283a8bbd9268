package dispatcher

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// imageServer serves body at every path on 127.0.0.1 and counts requests.
func imageServer(t *testing.T, body *atomic.Pointer[[]byte]) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write(*body.Load())
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

var loopback = ImagePolicy{AllowNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}

func noNote(string, ...any) {}

// A download from a loopback address is refused unless the lab allows its
// network.
func TestDownloadRefusesLoopback(t *testing.T) {
	data := []byte("disk image bytes")
	var body atomic.Pointer[[]byte]
	body.Store(&data)
	srv, hits := imageServer(t, &body)
	cache := t.TempDir()
	_, _, err := download(context.Background(), srv.URL+"/disk.img", digestOf(data), cache, ImagePolicy{}, noNote)
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1 is a loopback address") || !strings.Contains(err.Error(), "allow_networks") {
		t.Fatalf("download from loopback = %v, want refused naming the address and the setting", err)
	}
	if hits.Load() != 0 {
		t.Fatalf("the server was reached %d times", hits.Load())
	}
	path, raw, err := download(context.Background(), srv.URL+"/disk.img", digestOf(data), cache, loopback, noNote)
	if err != nil {
		t.Fatalf("download with loopback allowed: %v", err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, data) || raw != int64(len(data)) {
		t.Fatalf("downloaded %q (%d raw bytes)", got, raw)
	}
}

// A redirect to a refused address is refused: the check is on each
// connection, not on the URL.
func TestDownloadRefusesRedirectToLoopback(t *testing.T) {
	data := []byte("internal service answer")
	var body atomic.Pointer[[]byte]
	body.Store(&data)
	internal, hits := imageServer(t, &body)
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skip(err)
	}
	redirector := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.RedirectHandler(internal.URL+"/secret", http.StatusFound)}}
	redirector.Start()
	defer redirector.Close()
	pol := ImagePolicy{AllowNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}}
	_, _, err = download(context.Background(), redirector.URL+"/disk.img", digestOf(data), t.TempDir(), pol, noNote)
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1 is a loopback address") {
		t.Fatalf("redirect to loopback = %v, want refused", err)
	}
	if hits.Load() != 0 {
		t.Fatalf("the internal server was reached %d times", hits.Load())
	}
}

// Bytes whose sha256 is not the job's digest never enter the cache: the
// next job with the right digest downloads again.
func TestDownloadWrongDigestNotCached(t *testing.T) {
	good := []byte("the real image")
	evil := []byte("an attacker's image")
	var body atomic.Pointer[[]byte]
	body.Store(&evil)
	srv, hits := imageServer(t, &body)
	cache := t.TempDir()
	_, _, err := download(context.Background(), srv.URL+"/disk.img", digestOf(good), cache, loopback, noNote)
	if err == nil || !strings.Contains(err.Error(), "not cached") {
		t.Fatalf("wrong bytes = %v, want refused", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(cache, "downloads", digestOf(good))); len(entries) != 0 {
		t.Fatalf("the cache holds %v after a mismatch", entries)
	}
	body.Store(&good)
	path, _, err := download(context.Background(), srv.URL+"/disk.img", digestOf(good), cache, loopback, noNote)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, good) || hits.Load() != 2 {
		t.Fatalf("second download: %q after %d requests, want the real image downloaded again", got, hits.Load())
	}
	// Now it is cached.
	if _, raw, err := download(context.Background(), srv.URL+"/disk.img", digestOf(good), cache, loopback, noNote); err != nil || raw != -1 || hits.Load() != 2 {
		t.Fatalf("third download: raw %d, %v, %d requests; want the cache", raw, err, hits.Load())
	}
}

// A compressed image is checked against the digest of its uncompressed
// bytes, which it also counts.
func TestDownloadCompressed(t *testing.T) {
	raw := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(raw)
	zw.Close()
	packed := buf.Bytes()
	var body atomic.Pointer[[]byte]
	body.Store(&packed)
	srv, _ := imageServer(t, &body)
	cache := t.TempDir()
	path, n, err := download(context.Background(), srv.URL+"/disk.img.gz", digestOf(raw), cache, loopback, noNote)
	if err != nil || n != int64(len(raw)) {
		t.Fatalf("download = %d, %v; want %d raw bytes", n, err, len(raw))
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, packed) {
		t.Fatal("the cache does not hold the packed bytes")
	}
	if _, _, err := download(context.Background(), srv.URL+"/other.img.gz", digestOf(packed), cache, loopback, noNote); err == nil {
		t.Fatal("the digest of the packed bytes was taken for the image's")
	}
}

// A download larger than the limit is refused, with or without a length
// announced, and nothing is cached.
func TestDownloadSizeLimit(t *testing.T) {
	data := bytes.Repeat([]byte{7}, 5000)
	pol := loopback
	pol.MaxDownload = 4096
	for _, announce := range []bool{true, false} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if announce {
				w.Header().Set("Content-Length", "5000")
			}
			w.Write(data[:2000])
			w.(http.Flusher).Flush()
			w.Write(data[2000:])
		}))
		cache := t.TempDir()
		_, _, err := download(context.Background(), srv.URL+"/disk.img", digestOf(data), cache, pol, noNote)
		srv.Close()
		if err == nil || !strings.Contains(err.Error(), "larger than the limit of 4096 bytes") || !strings.Contains(err.Error(), "max_download_gib") {
			t.Fatalf("announce %v: download = %v, want refused naming the limit", announce, err)
		}
		if entries, _ := os.ReadDir(filepath.Join(cache, "downloads", digestOf(data))); len(entries) != 0 {
			t.Fatalf("the cache holds %v", entries)
		}
	}
}

func TestCheckAddress(t *testing.T) {
	pol := ImagePolicy{AllowNetworks: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}
	for addr, want := range map[string]string{
		"127.0.0.1":        "loopback",
		"::1":              "loopback",
		"::ffff:127.0.0.1": "loopback",
		"169.254.169.254":  "link-local",
		"fe80::1":          "link-local",
		"192.168.1.1":      "private",
		"10.2.0.1":         "private",
		"fd00::1":          "private",
		"0.0.0.0":          "unspecified",
		"0.1.2.3":          "unspecified",
		"::":               "unspecified",
		"10.1.2.3":         "", // allowed by the lab
		"93.184.216.34":    "",
		"2001:db8::1":      "",
	} {
		err := pol.checkAddress(netip.MustParseAddr(addr))
		switch {
		case want == "" && err != nil:
			t.Errorf("%s: %v, want allowed", addr, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), " "+want+" address")):
			t.Errorf("%s: %v, want refused as %s", addr, err, want)
		}
	}
}

// xz and zstd images are counted from the open file and checked while
// they download with the host's xz and zstd; a cut download is refused.
func TestXZZstd(t *testing.T) {
	raw := bytes.Repeat([]byte("xyz0123456789"), 100000)
	for _, c := range []struct {
		comp Compression
		pack []string
	}{{XZ, []string{"xz", "-c"}}, {Zstd, []string{"zstd", "-c", "-q"}}} {
		cmd := exec.Command(c.pack[0], c.pack[1:]...)
		cmd.Stdin = bytes.NewReader(raw)
		packed, err := cmd.Output()
		if err != nil {
			t.Skipf("%s: %v", c.pack[0], err)
		}
		p := filepath.Join(t.TempDir(), "disk.img")
		if err := os.WriteFile(p, packed, 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		n, err := countUncompressed(f, int64(len(packed)), c.comp)
		f.Close()
		if err != nil || n != int64(len(raw)) {
			t.Fatalf("%s: count = %d, %v; want %d", c.comp, n, err, len(raw))
		}
		for _, body := range [][]byte{packed, packed[:len(packed)/2]} {
			var b atomic.Pointer[[]byte]
			b.Store(&body)
			srv, _ := imageServer(t, &b)
			_, n, err := download(context.Background(), srv.URL+"/disk.img", digestOf(raw), t.TempDir(), loopback, noNote)
			switch {
			case len(body) == len(packed) && (err != nil || n != int64(len(raw))):
				t.Fatalf("%s: download = %d, %v", c.comp, n, err)
			case len(body) < len(packed) && err == nil:
				t.Fatalf("%s: a cut download was taken", c.comp)
			}
		}
	}
}
