package dispatcher_test

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/dispatcher"
	"github.com/labctl/labctl/dispatcher/dispatchertest"
	"github.com/labctl/labctl/results"
)

// rawImage writes a bootable uncompressed image into dir and returns its
// path and sha256.
func rawImage(t *testing.T, dir string) (string, string) {
	t.Helper()
	raw := dispatchertest.MBRImage(1 << 20)
	path := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	return path, hex.EncodeToString(sum[:])
}

// runWith runs spec on n with the given settings.
func runWith(t *testing.T, n *dispatchertest.Node, spec string, set devices.Settings) (*results.Job, string) {
	t.Helper()
	return runJob(t, n, parseJob(t, spec), func(j *dispatcher.Job) {
		j.Settings, j.CacheDir = set, filepath.Join(j.Dir, "cache")
	})
}

func TestRunVerifyModes(t *testing.T) {
	gz, gzSum := image(t, t.TempDir())
	raw, rawSum := rawImage(t, t.TempDir())
	wrong := strings.Repeat("ab", 32)
	for _, tt := range []struct {
		name          string
		image, sha256 string
		typ, job      devices.VerifyMode // the device type's and the job's setting
		repack        devices.RepackMode // the device type's; none if ""
		corrupt       int64              // the byte the boot server damages, -1 for none
		want          string             // the outcome
		reason        []string           // what an incomplete job's reason says
		log           []string           // what the job log says
		notLog        []string
	}{
		{name: "stream gzip", image: gz, sha256: gzSum, typ: devices.VerifyStream, corrupt: -1, want: "complete",
			log:    []string{"verify stream: the node hashes the image as it arrives", "of the gzip file verified on the node: the image arrived intact"},
			notLog: []string{"readback sha256"}},
		{name: "stream reads an uncompressed image back", image: raw, sha256: rawSum, typ: devices.VerifyStream, corrupt: -1, want: "complete",
			log: []string{"the image is not compressed, so it is read back instead", "readback sha256 " + rawSum}, notLog: []string{"stream sha256"}},
		{name: "job asks for both", image: gz, sha256: gzSum, typ: devices.VerifyReadback, job: devices.VerifyBoth, corrupt: -1, want: "complete",
			log: []string{"verify both", "of the gzip file verified on the node", "readback sha256 " + gzSum + " verified on the node"}},
		{name: "job asks for readback", image: gz, sha256: gzSum, typ: devices.VerifyStream, job: devices.VerifyReadback, corrupt: -1, want: "complete",
			log: []string{"verify readback: the node reads the written image back", "readback sha256 " + gzSum}, notLog: []string{"stream sha256"}},
		// Raw bytes have no decompressor check: only the node's stream
		// hash sees this damage, before the readback would.
		{name: "stream catches a damaged transfer", image: raw, sha256: rawSum, typ: devices.VerifyBoth, corrupt: 4096, want: "incomplete",
			reason: []string{"stream sha256 mismatch", "the image served has " + rawSum, "did not arrive intact"}},
		{name: "stream gzip damaged in transfer", image: gz, sha256: gzSum, typ: devices.VerifyStream, corrupt: 100, want: "incomplete",
			reason: []string{"write image: the pipeline exited"}},
		{name: "stream raw, wrong digest", image: raw, sha256: wrong, typ: devices.VerifyBoth, corrupt: -1, want: "incomplete",
			reason: []string{"stream sha256 mismatch", "the image served has " + wrong}},
		// The file is checked against the job's digest on the host, before
		// the node writes anything.
		{name: "stream gzip, wrong digest", image: gz, sha256: wrong, typ: devices.VerifyStream, corrupt: -1, want: "incomplete",
			reason: []string{"its uncompressed bytes have sha256 " + gzSum + ", the job expects " + wrong}, notLog: []string{"wrote the image"}},
		// Repacked into zstd: the node unpacks zstd, its stream hash is the
		// copy's; the copy is made from bytes checked against the job's
		// digest, and damage on the way fails zstd's own check.
		{name: "stream gzip repacked into zstd", image: gz, sha256: gzSum, typ: devices.VerifyStream, repack: devices.RepackZstd, corrupt: -1, want: "complete",
			log: []string{"the node is served the image repacked into zstd", "made in", "| zstdcat |", "of the zstd file verified on the node"}, notLog: []string{"gunzip", "readback sha256"}},
		{name: "repacked and read back", image: gz, sha256: gzSum, typ: devices.VerifyBoth, repack: devices.RepackZstd, corrupt: -1, want: "complete",
			log: []string{"repacked into zstd", "of the zstd file verified on the node", "readback sha256 " + gzSum + " verified on the node"}},
		{name: "repack, uncompressed image served as it is", image: raw, sha256: rawSum, typ: devices.VerifyReadback, repack: devices.RepackZstd, corrupt: -1, want: "complete",
			log: []string{"readback sha256 " + rawSum}, notLog: []string{"repacked into zstd", "zstdcat"}},
		{name: "repack, wrong digest", image: gz, sha256: wrong, typ: devices.VerifyReadback, repack: devices.RepackZstd, corrupt: -1, want: "incomplete",
			reason: []string{"repack the image into zstd", "its uncompressed bytes have sha256 " + gzSum + ", the job expects " + wrong}, notLog: []string{"wrote the image"}},
		{name: "repacked, damaged in transfer", image: gz, sha256: gzSum, typ: devices.VerifyStream, repack: devices.RepackZstd, corrupt: 100, want: "incomplete",
			reason: []string{"write image: the pipeline exited"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t)
			n.CorruptImages(tt.corrupt)
			set := dispatchertest.Settings(n)
			set.Deploy.Verify = tt.typ
			if tt.repack != "" {
				set.Deploy.Repack = tt.repack
			}
			verify := ""
			if tt.job != "" {
				verify = `verify = "` + string(tt.job) + `"` + "\n"
			}
			res, log := runWith(t, n, deployJob(tt.image, tt.sha256, verify+helloTest), set)
			if string(res.Outcome) != tt.want {
				t.Fatalf("outcome %s (%s), want %s\n%s", res.Outcome, res.Reason, tt.want, log)
			}
			for _, s := range tt.reason {
				if res.Action != "deploy" || !strings.Contains(res.Reason, s) {
					t.Errorf("reason %q (action %s), want deploy's naming %q", res.Reason, res.Action, s)
				}
			}
			for _, s := range tt.log {
				if !strings.Contains(log, s) {
					t.Errorf("job log lacks %q\n%s", s, log)
				}
			}
			for _, s := range tt.notLog {
				if strings.Contains(log, s) {
					t.Errorf("job log has %q\n%s", s, log)
				}
			}
		})
	}
}

func TestRunPowerOffOn(t *testing.T) {
	n := newNode(t)
	img, sum := image(t, t.TempDir())
	set := dispatchertest.Settings(n)
	set.Power.Cycle = devices.CycleOffOn
	res, log := runWith(t, n, deployJob(img, sum, helloTest), set)
	if res.Outcome != "complete" {
		t.Fatalf("outcome %s (%s), want complete\n%s", res.Outcome, res.Reason, log)
	}
	calls := n.Calls()
	i := slices.Index(calls, "bootdev disk")
	if i < 0 || slices.Contains(calls, "power cycle") || !slices.Equal(calls[i+1:i+3], []string{"power off", "power on"}) {
		t.Errorf("calls = %v, want power off and on after bootdev disk, no cycle", calls)
	}
}

// A firmware countdown of the device type's boot.skip is answered with its
// key as soon as it shows, on the master boot and on the disk boot; one the
// device type does not list runs out.
func TestRunSkipsFirmwareCountdown(t *testing.T) {
	img, sum := image(t, t.TempDir())

	t.Run("listed", func(t *testing.T) {
		n := newNode(t)
		// Longer than the master boot timeout: only the key ends it.
		n.Countdown = time.Hour
		set := dispatchertest.Settings(n)
		set.Boot.Skip = []devices.SkipPrompt{{Prompt: "Press ESC for the boot menu", Key: "\x1b"}, {Prompt: dispatchertest.CountdownPrompt, Key: " "}}
		res, log := runWith(t, n, deployJob(img, sum, helloTest), set)
		if res.Outcome != "complete" {
			t.Fatalf("outcome %s (%s), want complete\n%s", res.Outcome, res.Reason, log)
		}
		if skipped, ranOut := n.Countdowns(); skipped != 2 || ranOut != 0 {
			t.Errorf("countdowns: %d skipped, %d ran out; want both boots' skipped", skipped, ranOut)
		}
		if want := `firmware countdown "` + dispatchertest.CountdownPrompt + `": sent " " to go on`; strings.Count(log, want) != 2 {
			t.Errorf("the job log says %d times %q, want 2\n%s", strings.Count(log, want), want, log)
		}
		if strings.Contains(log, "boot menu") {
			t.Errorf("the job log answers a countdown the node never showed\n%s", log)
		}
	})
	t.Run("missed keys are sent again", func(t *testing.T) {
		n := newNode(t)
		n.Countdown, n.CountdownMisses = time.Hour, 1
		set := dispatchertest.Settings(n)
		set.Boot.Skip = []devices.SkipPrompt{{Prompt: dispatchertest.CountdownPrompt, Key: " "}}
		res, log := runWith(t, n, deployJob(img, sum, helloTest), set)
		if res.Outcome != "complete" {
			t.Fatalf("outcome %s (%s), want complete\n%s", res.Outcome, res.Reason, log)
		}
		if skipped, ranOut := n.Countdowns(); skipped != 2 || ranOut != 0 {
			t.Errorf("countdowns: %d skipped, %d ran out; want both boots' skipped", skipped, ranOut)
		}
		if want := `sent " " to go on, 2 times (the console was silent after the first)`; strings.Count(log, want) != 2 {
			t.Errorf("the job log says %d times %q, want 2\n%s", strings.Count(log, want), want, log)
		}
	})
	t.Run("a countdown deaf to the key runs out", func(t *testing.T) {
		n := newNode(t)
		// Longer than the three tries take, so that the console stays
		// silent through them.
		n.Countdown, n.CountdownMisses = 5*time.Second, 100
		set := dispatchertest.Settings(n)
		set.Boot.Skip = []devices.SkipPrompt{{Prompt: dispatchertest.CountdownPrompt, Key: " "}}
		set.Timeouts.MasterBoot, set.Timeouts.DiskBoot = 30*time.Second, 30*time.Second
		res, log := runWith(t, n, deployJob(img, sum, helloTest), set)
		if res.Outcome != "complete" {
			t.Fatalf("outcome %s (%s), want complete\n%s", res.Outcome, res.Reason, log)
		}
		if skipped, ranOut := n.Countdowns(); skipped != 0 || ranOut != 2 {
			t.Errorf("countdowns: %d skipped, %d ran out; want both boots' run out", skipped, ranOut)
		}
		if want := `sent " " 3 times, the console stayed silent; the countdown runs out`; strings.Count(log, want) != 2 {
			t.Errorf("the job log says %d times %q, want 2\n%s", strings.Count(log, want), want, log)
		}
	})
	t.Run("not listed", func(t *testing.T) {
		n := newNode(t)
		n.Countdown = 100 * time.Millisecond
		res, log := runWith(t, n, deployJob(img, sum, helloTest), dispatchertest.Settings(n))
		if res.Outcome != "complete" {
			t.Fatalf("outcome %s (%s), want complete\n%s", res.Outcome, res.Reason, log)
		}
		if skipped, ranOut := n.Countdowns(); skipped != 0 || ranOut != 2 {
			t.Errorf("countdowns: %d skipped, %d ran out; want both boots' run out", skipped, ranOut)
		}
		if strings.Contains(log, "firmware countdown") {
			t.Errorf("the job log answers a countdown the device type does not list\n%s", log)
		}
	})
}

// With an echo window the job types several characters at once and still
// gets every line through whole: the steps' output and exit codes are the
// ones their commands give.
func TestRunEchoWindow(t *testing.T) {
	n := newNode(t)
	img, sum := image(t, t.TempDir())
	set := dispatchertest.Settings(n)
	set.Console.EchoWindow = 4
	res, log := runWith(t, n, deployJob(img, sum, `
[boot]
password = "test"
[[test]]
name = "hello"
commands = ["echo windowed-$((6*7))-typing"]
[[test]]
name = "fails"
commands = ["test 0123456789 = 0123456789x"]
expect_failure = true
`), set)
	if res.Outcome != "complete" {
		t.Fatalf("outcome %s (%s), want complete\n%s", res.Outcome, res.Reason, log)
	}
	if !strings.Contains(log, "windowed-42-typing") {
		t.Errorf("the job log lacks the step's output\n%s", log)
	}
	if strings.Contains(log, "typing the line again") {
		t.Errorf("a character was lost on a console that loses none\n%s", log)
	}
}

// A repacked copy is made once and kept: a second job on the same image
// takes it from the cache, and both nodes get the same bytes.
func TestRunRepackCached(t *testing.T) {
	gz, gzSum := image(t, t.TempDir())
	cache := t.TempDir()
	var sums []string
	for i, how := range []string{"made in", "from the cache"} {
		n := newNode(t)
		set := dispatchertest.Settings(n)
		set.Deploy.Verify, set.Deploy.Repack = devices.VerifyStream, devices.RepackZstd
		res, log := runJob(t, n, parseJob(t, deployJob(gz, gzSum, helloTest)), func(j *dispatcher.Job) {
			j.Settings, j.CacheDir = set, cache
		})
		if res.Outcome != "complete" || !strings.Contains(log, "repacked into zstd") || !strings.Contains(log, how) {
			t.Fatalf("job %d: %s (%s), want complete with a copy %s\n%s", i, res.Outcome, res.Reason, how, log)
		}
		i := strings.Index(log, "stream sha256 ")
		sums = append(sums, log[i+14:i+14+64])
	}
	copies, _ := filepath.Glob(filepath.Join(cache, "repacked", "*", "*", "*"))
	if len(copies) != 1 || sums[0] != sums[1] || filepath.Base(filepath.Dir(copies[0])) != sums[0] || filepath.Base(copies[0]) != "disk.img.zst" {
		t.Errorf("copies %v, stream digests %v", copies, sums)
	}
	if fi, err := os.Stat(copies[0]); err != nil || fi.Mode().Perm()&0o007 != 0 {
		t.Errorf("copy %v: %v", fi, err)
	}
}
