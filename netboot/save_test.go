package netboot

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// zstdOf compresses data with the zstd program, as the master does.
func zstdOf(t *testing.T, data []byte) []byte {
	t.Helper()
	if _, err := exec.LookPath("zstd"); err != nil {
		t.Skip("SKIP: zstd not installed (apt-get install zstd)")
	}
	cmd := exec.Command("zstd", "-q", "-c", "-3")
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sparseDisk is a disk of size bytes, zero but for some random blocks.
func sparseDisk(t *testing.T, size int) []byte {
	d := make([]byte, size)
	copy(d[4096:], randomBytes(t, 64<<10))
	copy(d[size/2:], randomBytes(t, 32<<10))
	return d
}

// sum is data's sha256 in hex.
func sum(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// putChunked sends body to url as a chunked PUT (no Content-Length), as
// the master's nc pipeline does, and returns the status and answer.
func putChunked(t *testing.T, url string, body []byte) (int, string) {
	t.Helper()
	// A reader without a known length makes the client send chunks.
	req, err := http.NewRequest(http.MethodPut, url, io.MultiReader(bytes.NewReader(body)))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// dirNames lists dir, hidden files included.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestSaveStoresAndCommits(t *testing.T) {
	ts := startServer(t, nil)
	dir := filepath.Join(t.TempDir(), "saved")
	disk := sparseDisk(t, 4<<20)
	sv, err := ts.AcceptSave(dir, int64(len(disk)), sum(disk))
	if err != nil {
		t.Fatal(err)
	}
	defer sv.Close()
	body := zstdOf(t, disk)
	status, answer := putChunked(t, sv.URL()+sv.Token(), body)
	want := sha256.Sum256(disk)
	if status != http.StatusCreated || !strings.Contains(answer, hex.EncodeToString(want[:])) {
		t.Fatalf("status %d %q", status, answer)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := sv.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.RawSHA256 != hex.EncodeToString(want[:]) || res.RawSize != int64(len(disk)) || res.Size != int64(len(body)) {
		t.Fatalf("result %+v, want raw %d bytes sha256 %x, %d bytes stored", res, len(disk), want, len(body))
	}
	if sv.RawReceived() != int64(len(disk)) || sv.Received() != int64(len(body)) {
		t.Errorf("counters: raw %d received %d", sv.RawReceived(), sv.Received())
	}
	// Stored, but not under any name until committed.
	if names := dirNames(t, dir); len(names) != 1 || !strings.HasPrefix(names[0], ".save-") {
		t.Fatalf("before commit: %v", names)
	}
	final := filepath.Join(dir, "node.img.zst")
	if err := sv.Commit(final); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(final)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("committed file: %d bytes, %v", len(got), err)
	}
	if st, _ := os.Stat(final); st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v: a saved image must be readable by every user (deploy serves it)", st.Mode())
	}
	if names := dirNames(t, dir); len(names) != 1 || names[0] != "node.img.zst" {
		t.Fatalf("after commit: %v", names)
	}
	// Single use: the same token again, or any other, is refused.
	if status, _ := putChunked(t, sv.URL()+sv.Token(), body); status != http.StatusNotFound {
		t.Errorf("second use of the token: status %d, want 404", status)
	}
	if status, _ := putChunked(t, sv.URL()+"nosuchtoken", body); status != http.StatusNotFound {
		t.Errorf("unknown token: status %d, want 404", status)
	}
	// The secret never reaches the log.
	if logs := ts.logs.String(); strings.Contains(logs, sv.Token()) || !strings.Contains(logs, "/saves/[token]") {
		t.Errorf("log shows the token, or no save line:\n%s", logs)
	}
}

func TestSaveCommitDoesNotReplace(t *testing.T) {
	ts := startServer(t, nil)
	dir := t.TempDir()
	disk := sparseDisk(t, 1<<20)
	sv, err := ts.AcceptSave(dir, int64(len(disk)), sum(disk))
	if err != nil {
		t.Fatal(err)
	}
	if status, answer := putChunked(t, sv.URL()+sv.Token(), zstdOf(t, disk)); status != http.StatusCreated {
		t.Fatalf("status %d %q", status, answer)
	}
	final := filepath.Join(dir, "taken.img.zst")
	os.WriteFile(final, []byte("someone else's"), 0o644)
	if err := sv.Commit(final); err == nil {
		t.Fatal("commit replaced an existing file")
	}
	sv.Close()
	if got, _ := os.ReadFile(final); string(got) != "someone else's" {
		t.Fatalf("existing file changed: %q", got)
	}
	if names := dirNames(t, dir); len(names) != 1 {
		t.Fatalf("temporary file left after Close: %v", names)
	}
}

func TestSaveRefusals(t *testing.T) {
	ts := startServer(t, nil)
	disk := sparseDisk(t, 1<<20)
	packed := zstdOf(t, disk)
	other := append([]byte(nil), disk...)
	other[12345] ^= 1
	cases := []struct {
		name   string
		maxRaw int64
		sha    string
		body   []byte
		status int
		err    string
	}{
		{"raw larger than the disk", int64(len(disk)) - 1, sum(disk), packed, http.StatusRequestEntityTooLarge, "unpacks to more than the disk's"},
		{"larger than the disk", 4096, sum(disk), zstdOf(t, randomBytes(t, 2<<20)), http.StatusRequestEntityTooLarge, "more than"},
		{"raw smaller than the disk", int64(len(disk)) + 1, sum(disk), packed, http.StatusBadRequest, "the disk has"},
		{"sha256 mismatch", int64(len(disk)), sum(disk), zstdOf(t, other), http.StatusBadRequest, "sha256 mismatch"},
		{"not zstd", int64(len(disk)), sum(disk), []byte("this is not a zstd stream at all\n"), http.StatusBadRequest, "not a whole zstd stream"},
		{"random bytes", int64(len(disk)), sum(disk), randomBytes(t, 2<<20), http.StatusBadRequest, "not a zstd stream"},
		{"truncated zstd", int64(len(disk)), sum(disk), packed[:len(packed)/2], http.StatusBadRequest, "not a whole zstd stream"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			sv, err := ts.AcceptSave(dir, c.maxRaw, c.sha)
			if err != nil {
				t.Fatal(err)
			}
			defer sv.Close()
			status, answer := putChunked(t, sv.URL()+sv.Token(), c.body)
			if status != c.status || !strings.Contains(answer, c.err) {
				t.Errorf("status %d %q, want %d and %q", status, answer, c.status, c.err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := sv.Wait(ctx); err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("Wait: %v, want %q", err, c.err)
			}
			if err := sv.Commit(filepath.Join(dir, "x.img.zst")); err == nil {
				t.Error("commit of a refused save succeeded")
			}
			if names := dirNames(t, dir); len(names) != 0 {
				t.Errorf("left behind: %v", names)
			}
		})
	}
}

// TestSaveCutMidStream cuts the connection in the middle of a chunked
// body: the save ends with an error that says so and nothing is kept.
func TestSaveCutMidStream(t *testing.T) {
	ts := startServer(t, nil)
	dir := t.TempDir()
	disk := make([]byte, 8<<20)
	copy(disk, randomBytes(t, 4<<20))
	packed := zstdOf(t, disk)
	sv, err := ts.AcceptSave(dir, int64(len(disk)), sum(disk))
	if err != nil {
		t.Fatal(err)
	}
	defer sv.Close()
	c, err := net.Dial("tcp", ts.HTTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "PUT /saves/%s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", sv.Token())
	half := packed[:len(packed)/2]
	fmt.Fprintf(c, "%x\r\n", len(half))
	c.Write(half)
	c.Write([]byte("\r\n"))
	waitFor(t, "the first half to arrive", 10*time.Second, func() bool { return sv.Received() == int64(len(half)) })
	c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = sv.Wait(ctx)
	if err == nil || !strings.Contains(err.Error(), "cut after") {
		t.Fatalf("Wait: %v, want the cut named", err)
	}
	if names := dirNames(t, dir); len(names) != 0 {
		t.Errorf("left behind: %v", names)
	}
}

// TestSaveStalled: a node that stops sending mid-stream is answered 408
// after StallTimeout, and nothing is kept.
func TestSaveStalled(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.HTTP.StallTimeout = 300 * time.Millisecond })
	dir := t.TempDir()
	disk := sparseDisk(t, 4<<20)
	packed := zstdOf(t, disk)
	sv, err := ts.AcceptSave(dir, int64(len(disk)), sum(disk))
	if err != nil {
		t.Fatal(err)
	}
	defer sv.Close()
	c, err := net.Dial("tcp", ts.HTTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "PUT /saves/%s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", sv.Token())
	half := packed[:len(packed)/2]
	fmt.Fprintf(c, "%x\r\n%s\r\n", len(half), half)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = sv.Wait(ctx)
	if err == nil || !strings.Contains(err.Error(), "nothing arrived for 300ms") {
		t.Fatalf("Wait: %v, want the stall named", err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Errorf("status %d, want 408", resp.StatusCode)
	}
	if names := dirNames(t, dir); len(names) != 0 {
		t.Errorf("left behind: %v", names)
	}
}

// TestSaveCloseStopsRequest: a save the job gives up on stops the
// request in flight and keeps nothing.
func TestSaveCloseStopsRequest(t *testing.T) {
	ts := startServer(t, nil)
	dir := t.TempDir()
	sv, err := ts.AcceptSave(dir, 1<<30, strings.Repeat("0", 64))
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	defer pw.Close()
	req, _ := http.NewRequest(http.MethodPut, sv.URL()+sv.Token(), pr)
	done := make(chan int, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	pw.Write(zstdOf(t, make([]byte, 1<<20))[:8])
	waitFor(t, "bytes to arrive", 10*time.Second, func() bool { return sv.Received() > 0 })
	sv.Close()
	pw.Write(make([]byte, 4096)) // the next read sees the close
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := sv.Wait(ctx); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("Wait: %v", err)
	}
	pw.Close()
	<-done
	if names := dirNames(t, dir); len(names) != 0 {
		t.Errorf("left behind: %v", names)
	}
}
