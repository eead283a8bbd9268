package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// labctl save checks --output before it contacts anything: through the
// daemon a file name only, always NAME.img.zst.
func TestSaveOutputRules(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"save", "node1", "--output", "/srv/x.img.zst"}, "through the daemon --output is a file name"},
		{[]string{"save", "node1", "--output", "x.img.gz"}, "ending in .img.zst"},
		{[]string{"save", "node1", "--output", "x.img.zst", "--disk", "sda"}, "save.disk"},
		{[]string{"save", "--output", "x.img.zst"}, "want one NODE"},
	} {
		code, _, stderr := runLabctl(t, nil, c.args...)
		if code != 64 || !strings.Contains(stderr, c.want) {
			t.Errorf("labctl %s: exit %d, %q; want 64 and %q", strings.Join(c.args, " "), code, stderr, c.want)
		}
	}
}

// labctl save through the daemon: a submitter is refused (a save writes
// into the lab's save directory); an operator's save is a job that runs
// and here ends incomplete (the command lab's master never boots), with
// nothing in the save directory and the reason in the summary.
func TestSaveThroughDaemon(t *testing.T) {
	t.Parallel()
	labFile, token := commandLab(t)
	dir := filepath.Dir(labFile)
	if err := os.WriteFile(filepath.Join(dir, "sub.token"), []byte("submitter-token-0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(labFile, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "[[server.tokens]]\nname = \"sub\"\nrole = \"submitter\"\ntoken_file = \"sub.token\"\n")
	f.Close()
	url := startServe(t, labFile)
	sub := map[string]string{"LABCTL_SERVER": url, "LABCTL_TOKEN": "submitter-token-0123"}
	if code, _, stderr := runLabctl(t, sub, "save", "n1", "--output", "n1.img.zst"); code != 1 || !strings.Contains(stderr, "needs role operator") {
		t.Errorf("a submitter's save: exit %d, %q", code, stderr)
	}
	admin := map[string]string{"LABCTL_SERVER": url, "LABCTL_TOKEN": token}
	waitForDevice(t, admin, "n1", "idle")
	code, out, stderr := runLabctl(t, admin, "save", "n1", "--output", "n1.img.zst")
	if code != 2 || !strings.Contains(out, "INCOMPLETE: save:") || !strings.Contains(out, "master prompt") || !strings.Contains(stderr, "save n1 to n1.img.zst") {
		t.Errorf("save on a node whose master never boots: exit %d\n%s%s", code, out, stderr)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "state", "images", "*")); len(left) != 0 {
		t.Errorf("left in the save directory: %v", left)
	}
}
