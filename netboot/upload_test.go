package netboot

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSanitizeUploadName(t *testing.T) {
	tests := map[string]string{
		"results.txt":            "results.txt",
		"../../etc/passwd":       "passwd",
		"/tmp/results.txt":       "results.txt",
		"evil name;rm -rf":       "evil_name_rm_-rf",
		".hidden":                "hidden",
		"...":                    "", // nothing left
		"..":                     "",
		"":                       "",
		"a\x00b":                 "a_b",
		"résumé.log":             "r__sum__.log",
		strings.Repeat("x", 300): strings.Repeat("x", maxUploadName),
	}
	for in, want := range tests {
		got, err := sanitizeUploadName(in)
		if want == "" {
			if err == nil {
				t.Errorf("sanitizeUploadName(%q) = %q, want error", in, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("sanitizeUploadName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// nodeUpload runs the node-side upload command documented on Upload, with
// busybox's own sh, base64, wc and wget, as a master image would. With
// asBase64 false it runs the text-file form.
func nodeUpload(t *testing.T, file, url, name string, asBase64 bool) (string, error) {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("SKIP: busybox not installed (apt-get install busybox-static); it is the node-side upload client")
	}
	script := `wget -q -O - --post-file="$F" "${URL}${NAME}?size=$(wc -c < "$F")"`
	if asBase64 {
		script = `base64 "$F" > "$F.b64" && wget -q -O - --post-file="$F.b64" "${URL}${NAME}?encoding=base64&size=$(wc -c < "$F")"`
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bb, "sh", "-c", script)
	// Only busybox applets: a PATH of links to busybox, as on a node.
	bin := t.TempDir()
	for _, applet := range []string{"sh", "base64", "wc", "wget"} {
		if err := os.Symlink(bb, filepath.Join(bin, applet)); err != nil {
			t.Fatal(err)
		}
	}
	cmd.Env = []string{"PATH=" + bin, "F=" + file, "URL=" + url, "NAME=" + name}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestUploadWithBusyboxWget(t *testing.T) {
	const limit = 512 << 10
	ts := startServer(t, func(c *Config) { c.MaxUploadBytes = limit })
	dest := filepath.Join(t.TempDir(), "job1", "artifacts")
	up, err := ts.AcceptUpload(dest)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(up.URL(), ts.HTTPURL()+"/uploads/") || !strings.HasSuffix(up.URL(), "/") {
		t.Fatalf("URL %s", up.URL())
	}
	src := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(src, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	binary := randomBytes(t, 100<<10)
	binary[10] = 0 // busybox wget would stop here
	binFile := write("dmesg.bin", binary)
	text := []byte(strings.Repeat("test kernel: ok\n", 2000))
	textFile := write("results.txt", text)

	// Any file, base64 on the wire.
	out, err := nodeUpload(t, binFile, up.URL(), "dmesg.bin", true)
	if err != nil {
		t.Fatalf("busybox upload (base64): %v\n%s", err, out)
	}
	if !strings.Contains(out, "stored dmesg.bin (102400 bytes)") {
		t.Fatalf("receipt %q", out)
	}
	if got, err := os.ReadFile(filepath.Join(dest, "dmesg.bin")); err != nil || !bytes.Equal(got, binary) {
		t.Fatalf("stored binary: %d bytes, err %v", len(got), err)
	}
	// A text file, as it is.
	if out, err := nodeUpload(t, textFile, up.URL(), "results.txt", false); err != nil {
		t.Fatalf("busybox upload (text): %v\n%s", err, out)
	}
	if got, _ := os.ReadFile(filepath.Join(dest, "results.txt")); !bytes.Equal(got, text) {
		t.Fatalf("stored text: %d bytes", len(got))
	}
	// A binary file sent as it is arrives truncated by wget: the size check
	// refuses it and wget fails, instead of a silently short artifact.
	if out, err := nodeUpload(t, binFile, up.URL(), "truncated.bin", false); err == nil {
		t.Fatalf("truncated binary upload succeeded: %s", out)
	}
	// The same name again: refused, and wget says so with its exit status.
	if out, err := nodeUpload(t, textFile, up.URL(), "results.txt", false); err == nil {
		t.Fatalf("second upload of the same name succeeded: %s", out)
	}
	// Too big: refused, nothing stored.
	bigFile := write("big.txt", bytes.Repeat([]byte("x"), limit+1))
	if out, err := nodeUpload(t, bigFile, up.URL(), "big.txt", false); err == nil {
		t.Fatalf("oversized upload succeeded: %s", out)
	}
	// A name with a path: only its base is used, inside the directory.
	if out, err := nodeUpload(t, textFile, up.URL(), "..%2F..%2Fescape.txt", false); err != nil {
		t.Fatalf("upload with a path in the name: %v\n%s", err, out)
	}

	// What arrived, and nothing else: no temporaries left behind.
	entries, _ := os.ReadDir(dest)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != "dmesg.bin,escape.txt,results.txt" {
		t.Fatalf("upload dir holds %v", names)
	}
	files := up.Files()
	if len(files) != 3 || files[0] != (UploadedFile{Name: "dmesg.bin", Size: 100 << 10}) || files[2].Name != "escape.txt" {
		t.Fatalf("Files() = %+v", files)
	}

	// curl -T (PUT) works too.
	if curl, err := exec.LookPath("curl"); err == nil {
		out, err := exec.Command(curl, "-fsS", "-T", binFile, up.URL()+"put.bin").CombinedOutput()
		if err != nil {
			t.Fatalf("curl -T: %v\n%s", err, out)
		}
		if got, _ := os.ReadFile(filepath.Join(dest, "put.bin")); !bytes.Equal(got, binary) {
			t.Fatal("curl -T: stored file differs")
		}
	}

	// GET on an upload URL, a wrong token, and after Close: refused.
	if status, _ := httpGet(t, up.URL()+"results.txt"); status != http.StatusMethodNotAllowed {
		t.Fatalf("GET upload URL: status %d", status)
	}
	wrong := ts.HTTPURL() + "/uploads/AAAAAAAAAAAAAAAAAAAAAAAAAA/x"
	if resp, err := http.Post(wrong, "application/octet-stream", strings.NewReader("x")); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("wrong token: status %d", resp.StatusCode)
	}
	up.Close()
	if out, err := nodeUpload(t, textFile, up.URL(), "late.txt", false); err == nil {
		t.Fatalf("upload after Close succeeded: %s", out)
	}
	if _, err := os.Stat(filepath.Join(dest, "late.txt")); !os.IsNotExist(err) {
		t.Fatalf("late.txt stored after Close: %v", err)
	}
}

func TestUploadRejectsBadParameters(t *testing.T) {
	ts := startServer(t, nil)
	dest := t.TempDir()
	up, err := ts.AcceptUpload(dest)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	for _, q := range []string{"a?encoding=gzip", "b?size=-1", "c?size=ten", "d?encoding=base64", "e?size=3"} {
		resp, err := http.Post(up.URL()+q, "application/octet-stream", strings.NewReader("!!not base64, and 36 bytes long!!!!"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", q, resp.StatusCode)
		}
	}
	if entries, _ := os.ReadDir(dest); len(entries) != 0 {
		t.Fatalf("left behind: %v", entries)
	}
}

// TestUploadChunkedOverCap sends a body without Content-Length, so the cap
// can only be enforced while reading.
func TestUploadChunkedOverCap(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxUploadBytes = 1000 })
	dest := t.TempDir()
	up, err := ts.AcceptUpload(dest)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	body := struct{ *bytes.Reader }{bytes.NewReader(make([]byte, 5000))} // hides the length
	req, _ := http.NewRequest(http.MethodPut, up.URL()+"big", body)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413", resp.StatusCode)
	}
	if entries, _ := os.ReadDir(dest); len(entries) != 0 {
		t.Fatalf("left behind: %v", entries)
	}
}

func FuzzSanitizeUploadName(f *testing.F) {
	for _, s := range []string{"results.txt", "../../x", "...", "a/b/.c", "\x00", "résumé"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := sanitizeUploadName(in)
		if err != nil {
			return
		}
		if out == "" || len(out) > maxUploadName || out[0] == '.' {
			t.Fatalf("sanitizeUploadName(%q) = %q", in, out)
		}
		for i := 0; i < len(out); i++ {
			c := out[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._+-", c) >= 0) {
				t.Fatalf("sanitizeUploadName(%q) = %q: byte %q", in, out, c)
			}
		}
	})
}
