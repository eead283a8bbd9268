package dispatcher_test

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/labctl/labctl/dispatcher"
	"github.com/labctl/labctl/dispatcher/dispatchertest"
	"github.com/labctl/labctl/jobs"
	"github.com/labctl/labctl/results"
)

func needZstd(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("zstd"); err != nil {
		t.Skip("SKIP: zstd not installed (apt-get install zstd): the master compresses saves with it")
	}
}

// runSave runs spec on n with its save going to saveTo.
func runSave(t *testing.T, n *dispatchertest.Node, spec *jobs.Job, saveTo string) (*results.Job, string) {
	t.Helper()
	return runJob(t, n, spec, func(j *dispatcher.Job) { j.SaveTo = saveTo })
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestRunSaveAndDeployAgain: a job deploys an image, changes the disk in
// a test step and saves it; a second node deploys the saved image and
// finds the change. The node's busybox, zstd and nc send the disk to the
// real boot server endpoint (package netboot).
func TestRunSaveAndDeployAgain(t *testing.T) {
	needZstd(t)
	n1 := newNode(t)
	img, sum := image(t, t.TempDir())
	saveDir := filepath.Join(t.TempDir(), "saved")
	out := filepath.Join(saveDir, "node1-changed.img.zst")
	// The marker lands 8 MiB in: the disk grows to 8 MiB with a hole
	// after the 1 MiB image, a sparse disk.
	spec := parseJob(t, `
device = "node1"
[deploy]
image = "`+img+`"
sha256 = "`+sum+`"
[boot]
password = "test"
[[test]]
name = "change"
commands = ["printf labctl-saved-marker | dd of=`+n1.Disk+` bs=1M seek=8 conv=notrunc"]
[save]
output = "node1-changed.img.zst"
`)
	res, log := runSave(t, n1, spec, out)
	if res.Outcome != "complete" {
		t.Fatalf("outcome %s (%s)\n%s", res.Outcome, res.Reason, log)
	}
	if res.Saved != out {
		t.Errorf("results saved = %q, want %s", res.Saved, out)
	}
	if n1.On() {
		t.Error("node left powered on")
	}
	// The digest beside the image is the node's disk's, in sha256sum's form.
	digest, err := os.ReadFile(filepath.Join(saveDir, "node1-changed.img.sha256"))
	if err != nil {
		t.Fatal(err)
	}
	diskSum := fileSHA256(t, n1.Disk)
	if string(digest) != diskSum+"  node1-changed.img\n" {
		t.Errorf("digest file %q, want the disk's %s", digest, diskSum)
	}
	st, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	disk, _ := os.Stat(n1.Disk)
	if disk.Size() < 8<<20 || st.Size() > 1<<20 {
		t.Errorf("disk %d bytes, saved %d bytes: the zeros should cost nothing", disk.Size(), st.Size())
	}
	if strings.Count(log, "********") == 0 {
		t.Errorf("the save token was not typed as a secret\n%s", log)
	}
	if tokens := n1.SaveTokens(); len(tokens) != 1 || strings.Contains(log, tokens[0]) {
		t.Errorf("save tokens %d, or the token is in the job log", len(tokens))
	}
	if names, _ := os.ReadDir(saveDir); len(names) != 2 {
		t.Errorf("save directory holds %v, want the image and its digest", names)
	}

	// Another node deploys it and finds the change.
	n2, err := dispatchertest.NewNode("node2", t.TempDir())
	if err != nil {
		t.Skip(err)
	}
	defer n2.Close()
	spec2, err := jobs.Parse("job.toml", []byte(`
device = "node2"
[deploy]
image = "saved/node1-changed.img.zst"
sha256_file = "saved/node1-changed.img.sha256"
[boot]
password = "test"
[[test]]
name = "find"
commands = ["dd if=`+n2.Disk+` bs=1M skip=8 2>/dev/null"]
`), filepath.Dir(saveDir))
	if err != nil {
		t.Fatal(err)
	}
	res2, log2 := runSave(t, n2, spec2, "")
	if res2.Outcome != "complete" || !strings.Contains(res2.Steps[0].Output, "labctl-saved-marker") {
		t.Fatalf("deploy of the saved image: %s (%s), step output %q\n%s", res2.Outcome, res2.Reason, res2.Steps[0].Output, log2)
	}
	if got := fileSHA256(t, n2.Disk); got != diskSum {
		t.Errorf("node2's disk sha256 %s, node1's %s", got, diskSum)
	}
}

// TestRunSaveCut: the upload's connection breaks mid-stream: the job ends
// incomplete naming the save, nothing is left in the save directory and
// the node is off.
func TestRunSaveCut(t *testing.T) {
	needZstd(t)
	n := newNode(t)
	data := make([]byte, 4<<20)
	rand.Read(data)
	if err := os.WriteFile(n.Disk, data, 0o644); err != nil {
		t.Fatal(err)
	}
	n.CutSaveAfter(256 << 10)
	saveDir := filepath.Join(t.TempDir(), "saved")
	out := filepath.Join(saveDir, "node1.img.zst")
	spec := parseJob(t, "device = \"node1\"\n[save]\noutput = \"node1.img.zst\"\n")
	res, log := runSave(t, n, spec, out)
	if res.Outcome != "incomplete" || !strings.Contains(res.Reason, "save: send the disk") || !strings.Contains(res.Reason, "cut") {
		t.Fatalf("outcome %s (%s), want incomplete naming the cut upload\n%s", res.Outcome, res.Reason, log)
	}
	if names, _ := os.ReadDir(saveDir); len(names) != 0 {
		t.Errorf("left in the save directory: %v", names)
	}
	checkFinalized(t, n)
}

// TestRunSaveRefusesExisting: a save that would replace a file ends
// before the node is touched.
func TestRunSaveRefusesExisting(t *testing.T) {
	n := newNode(t)
	saveDir := t.TempDir()
	out := filepath.Join(saveDir, "node1.img.zst")
	os.WriteFile(dispatcher.SaveDigestPath(out), []byte("x"), 0o644)
	spec := parseJob(t, "device = \"node1\"\n[save]\noutput = \"node1.img.zst\"\n")
	res, log := runSave(t, n, spec, out)
	if res.Outcome != "incomplete" || !strings.Contains(res.Reason, "node1.img.sha256 exists") {
		t.Fatalf("outcome %s (%s)\n%s", res.Outcome, res.Reason, log)
	}
	for _, c := range n.Calls() {
		if c == "power on" {
			t.Errorf("the node was powered on: %v", n.Calls())
		}
	}
}
