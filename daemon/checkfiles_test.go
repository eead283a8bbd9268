package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Submit resolves the links of a job's local files once: the job keeps the
// target's path, which it opens again when it starts without following a
// link in its last component.
func TestCheckFilesResolvesLinks(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk-1.img")
	if err := os.WriteFile(img, []byte("image"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "latest.img")
	if err := os.Symlink(img, link); err != nil {
		t.Fatal(err)
	}
	sum := strings.Repeat("ab", 32)
	spec, err := parseJob("job.toml", "device = \"node1\"\n[deploy]\nimage = \""+link+"\"\nsha256 = \""+sum+"\"\n[[test]]\nname = \"t\"\ncommands = [\"true\"]\n", "/")
	if err != nil {
		t.Fatal(err)
	}
	if err := checkFiles(spec); err != nil {
		t.Fatal(err)
	}
	want, _ := filepath.EvalSymlinks(img)
	if spec.Deploy.Image != want {
		t.Fatalf("image %q after submit, want the link's target %q", spec.Deploy.Image, want)
	}
	// A link to a private file is refused at submit.
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("x"), 0o600)
	os.Remove(link)
	os.Symlink(secret, link)
	spec, _ = parseJob("job.toml", "device = \"node1\"\n[deploy]\nimage = \""+link+"\"\nsha256 = \""+sum+"\"\n[[test]]\nname = \"t\"\ncommands = [\"true\"]\n", "/")
	if err := checkFiles(spec); err == nil || !strings.Contains(err.Error(), "not readable by every user") {
		t.Fatalf("link to a private file: %v", err)
	}
}
