package dispatcher_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/labctl/labctl/dispatcher"
	"github.com/labctl/labctl/dispatcher/dispatchertest"
	"github.com/labctl/labctl/jobs"
	"github.com/labctl/labctl/results"
)

// runPublic runs a job as the daemon does: local files must be readable
// by every user.
func runPublic(t *testing.T, n *dispatchertest.Node, spec *jobs.Job) (*results.Job, string) {
	t.Helper()
	return runJob(t, n, spec, func(j *dispatcher.Job) { j.Images = dispatcher.ImagePolicy{PublicFiles: true} })
}

// submitted parses a job and checks its files as the daemon does when the
// job is submitted.
func submitted(t *testing.T, text string) *jobs.Job {
	t.Helper()
	spec := parseJob(t, text)
	dispatcher.ResolveFiles(spec)
	if !spec.Deploy.ImageIsURL() {
		f, err := dispatcher.OpenLocal("deploy.image", spec.Deploy.Image, true)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	if _, err := dispatcher.Digest(spec.Deploy, true); err != nil {
		t.Fatal(err)
	}
	return spec
}

// An image checked at submit and swapped before the job runs (for a link
// to a root-only file, or for a root-only file) is refused when the job
// starts: the job ends incomplete saying why, and nothing of the private
// file reaches the node.
func TestRunImageSwappedAfterSubmit(t *testing.T) {
	secretData := bytes.Repeat([]byte("ROOT-ONLY-SECRET"), 4096)
	for _, tc := range []struct {
		name, want string
		swap       func(path, secret string) error
	}{
		{"link to a private file", "is a symbolic link", func(path, secret string) error {
			return os.Symlink(secret, path)
		}},
		{"private file", "not readable by every user", func(path, secret string) error {
			return os.Rename(secret, path)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			dir := t.TempDir()
			img, sum := image(t, dir)
			// The job names the image through a link of its own: links
			// are resolved at submit.
			link := filepath.Join(dir, "latest.img.gz")
			if err := os.Symlink(img, link); err != nil {
				t.Fatal(err)
			}
			spec := submitted(t, `
device = "node1"
[deploy]
image = "`+link+`"
sha256 = "`+sum+`"
[[test]]
name = "never"
commands = ["true"]
`)
			secret := filepath.Join(t.TempDir(), "secret")
			if err := os.WriteFile(secret, secretData, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(img); err != nil {
				t.Fatal(err)
			}
			if err := tc.swap(img, secret); err != nil {
				t.Fatal(err)
			}
			res, log := runPublic(t, n, spec)
			if res.Outcome != "incomplete" || res.Action != "deploy" || !strings.Contains(res.Reason, tc.want) {
				t.Fatalf("outcome %s (%s: %s), want incomplete in deploy saying %q\n%s", res.Outcome, res.Action, res.Reason, tc.want, log)
			}
			disk, _ := os.ReadFile(n.Disk)
			if bytes.Contains(disk, []byte("ROOT-ONLY")) {
				t.Fatal("the private file reached the node's disk")
			}
		})
	}
}

// A sha256_file swapped for a link to a private file is refused too: its
// first word would show in the job log.
func TestRunDigestFileSwappedAfterSubmit(t *testing.T) {
	n := newNode(t)
	dir := t.TempDir()
	img, sum := image(t, dir)
	sumFile := filepath.Join(dir, "disk.img.sha256")
	if err := os.WriteFile(sumFile, []byte(sum+"  disk.img\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := submitted(t, `
device = "node1"
[deploy]
image = "`+img+`"
sha256_file = "`+sumFile+`"
[[test]]
name = "never"
commands = ["true"]
`)
	secret := filepath.Join(t.TempDir(), "key")
	private := strings.Repeat("5ec7", 16)
	if err := os.WriteFile(secret, []byte(private+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Remove(sumFile)
	if err := os.Symlink(secret, sumFile); err != nil {
		t.Fatal(err)
	}
	res, log := runPublic(t, n, spec)
	if res.Outcome != "incomplete" || !strings.Contains(res.Reason, "deploy.sha256_file") || !strings.Contains(res.Reason, "symbolic link") {
		t.Fatalf("outcome %s (%s), want incomplete naming the link\n%s", res.Outcome, res.Reason, log)
	}
	if strings.Contains(log, private) {
		t.Fatal("the private file's content is in the job log")
	}
}
