package jobs

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/internal/tomlfile"
)

const digest = "3f786850e387550fdab836ed7e6dc881de23001b2f6ac2a88c8d0f7e0b0a4a0b"

// minimal is a valid job that the table cases extend.
const minimal = `device = "node1"
[deploy]
image = "http://example.com/disk.img.gz"
sha256 = "` + digest + `"
`

func TestParseValid(t *testing.T) {
	data, err := os.ReadFile("testdata/valid.toml")
	if err != nil {
		t.Fatal(err)
	}
	job, err := Parse("testdata/valid.toml", data, "/jobs")
	if err != nil {
		t.Fatalf("Parse() = %v", err)
	}
	want := Job{
		Name: "smoke", DeviceType: "simlab-qemu", Tags: []string{"simlab"}, Priority: High,
		Timeout: 20 * time.Minute, Artifacts: []string{"/tmp/results.txt"},
		Deploy: Deploy{Image: "/jobs/images/disk.img.gz", SHA256File: "/jobs/images/disk.img.sha256", Disk: "/dev/vda", Timeout: 10 * time.Minute},
		Boot:   Boot{Method: BootFromDisk, Username: "root", Password: "test"},
		Tests: []Test{
			{Name: "kernel", Commands: []string{"uname -a"}, Timeout: time.Minute},
			{Name: "false", Commands: []string{"false"}, ExpectFailure: true},
		},
	}
	if !equalJobs(*job, want) {
		t.Errorf("Parse() =\n%+v\nwant\n%+v", *job, want)
	}
}

func equalJobs(a, b Job) bool {
	return a.Name == b.Name && a.Device == b.Device && a.DeviceType == b.DeviceType &&
		slices.Equal(a.Tags, b.Tags) && a.Priority == b.Priority && a.Timeout == b.Timeout &&
		a.KeepPoweredOn == b.KeepPoweredOn && slices.Equal(a.Artifacts, b.Artifacts) &&
		a.Deploy == b.Deploy && a.Boot == b.Boot &&
		slices.EqualFunc(a.Tests, b.Tests, func(x, y Test) bool {
			return x.Name == y.Name && slices.Equal(x.Commands, y.Commands) && x.Timeout == y.Timeout && x.ExpectFailure == y.ExpectFailure
		})
}

func TestParseDefaults(t *testing.T) {
	job, err := Parse("dir/my-job.toml", []byte(minimal), "/jobs")
	if err != nil {
		t.Fatal(err)
	}
	if job.RetriesOr(3) != 3 || job.QueueTimeout != 0 {
		t.Errorf("Parse() = retries %d, queue_timeout %s: want the lab's (absent)", job.Retries, job.QueueTimeout)
	}
	if job.Name != "my-job" || job.Priority != Normal || job.Boot.Username != "root" || job.Timeout != 0 || len(job.Tests) != 0 {
		t.Errorf("Parse() = %+v: want name from the file, normal priority, user root, no timeout, no tests", job)
	}
}

func TestParseProblems(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string // problems, without the file name
	}{
		{
			name: "unknown key with its line",
			src:  minimal + "tmeout = \"1m\"\n",
			want: []string{`:5: deploy.tmeout: unknown key (did you mean "timeout"?)`},
		},
		{
			name: "unknown top-level key before the first table",
			src:  "prio = \"high\"\n" + minimal,
			want: []string{`:1: prio: unknown key`},
		},
		{
			name: "wrong type",
			src:  "keep_powered_on = \"yes\"\n" + minimal,
			want: []string{":1: keep_powered_on: must be a boolean (true or false), not a string"},
		},
		{
			name: "bad verify mode",
			src:  minimal + "verify = \"disk\"\n",
			want: []string{`:5: deploy.verify: "disk" is not a verify mode: use "readback" or "stream" or "both"`},
		},
		{
			name: "bad priority",
			src:  "priority = \"urgent\"\n" + minimal,
			want: []string{`:1: priority: "urgent" is not a priority: use high, normal or low`},
		},
		{
			name: "bad duration",
			src:  "timeout = \"20 minutes\"\n" + minimal,
			want: []string{`:1: timeout: invalid duration "20 minutes": want a number with a unit, such as "90s", "5m" or "1h30m"`},
		},
		{
			name: "retries and queue timeout",
			src:  "retries = 11\nqueue_timeout = \"-1h\"\n" + minimal,
			want: []string{":1: retries: 11: give 0 to 10", ":2: queue_timeout: must not be negative"},
		},
		{
			name: "negative duration",
			src:  "timeout = \"-1m\"\n" + minimal,
			want: []string{":1: timeout: must not be negative"},
		},
		{
			name: "missing device and image",
			src:  "[deploy]\nsha256 = \"" + digest + "\"\n",
			want: []string{
				": device: required: name a device, or a device_type (and tags)",
				":1: deploy.image: required: an http(s) URL or a path",
			},
		},
		{
			name: "device and device_type",
			src:  "device_type = \"x\"\n" + minimal,
			want: []string{":1: device_type: give either device or device_type, not both"},
		},
		{
			name: "tags with a device",
			src:  "tags = [\"a\"]\n" + minimal,
			want: []string{":1: tags: tags select among the devices of a device_type; with device they mean nothing"},
		},
		{
			name: "bad sha256",
			src: `device = "node1"

[deploy]
image = "disk.img"
sha256 = "abc"
`,
			want: []string{":5: deploy.sha256: must be 64 hex digits"},
		},
		{
			name: "sha256 and sha256_file",
			src:  minimal + "sha256_file = \"x.sha256\"\n",
			want: []string{":5: deploy.sha256_file: give either sha256 or sha256_file, not both"},
		},
		{
			name: "no sha256",
			src:  "device = \"n\"\n[deploy]\nimage = \"x.img\"\n",
			want: []string{":2: deploy.sha256: required: the sha256 of the uncompressed image (or sha256_file)"},
		},
		{
			name: "bad image URL and disk",
			src:  "device = \"n\"\n[deploy]\nimage = \"ftp://host/x.img\"\nsha256 = \"" + digest + "\"\ndisk = \"sda; reboot\"\n",
			want: []string{
				`:3: deploy.image: "ftp://host/x.img" is not supported: use an http:// or https:// URL, or a path`,
				`:5: deploy.disk: "sda; reboot" is not a device node such as /dev/sda`,
			},
		},
		{
			name: "save: output not a plain .img.zst name, bad disk",
			src:  "device = \"n\"\n[save]\noutput = \"../x.img\"\ndisk = \"sda\"\ntimeout = \"-1s\"\n",
			want: []string{
				`:3: save.output: "../x.img": want a file name (letters, digits, '.', '_', '+', '-'; no directory) ending in .img.zst`,
				`:4: save.disk: "sda" is not a device node such as /dev/sda`,
				`:5: save.timeout: must not be negative`,
			},
		},
		{
			name: "save without output; a deploy given is checked",
			src:  "device = \"n\"\n[deploy]\nimage = \"x.img\"\n[save]\ndisk = \"/dev/sda\"\n",
			want: []string{
				":2: deploy.sha256: required: the sha256 of the uncompressed image (or sha256_file)",
				`:4: save.output: required: the image's file name, e.g. "node1-configured.img.zst"`,
			},
		},
		{
			name: "image with a quote",
			src:  "device = \"n\"\n[deploy]\nimage = \"http://h/x'.img\"\nsha256 = \"" + digest + "\"\n",
			want: []string{":3: deploy.image: must not contain spaces, quotes or backslashes"},
		},
		{
			name: "test steps: duplicate name, no command, missing name, multi-line command",
			src: minimal + `
[[test]]
name = "a"
commands = ["true"]

[[test]]
name = "a"
commands = []

[[test]]
commands = ["""echo
two lines"""]
`,
			want: []string{
				`:11: test[1].name: "a" is already the name of test 1 (line 7)`,
				":12: test[1].commands: at least one command is required",
				":14: test[2].name: required",
				":15: test[2].commands[0]: must be one line: split it into several commands",
			},
		},
		{
			name: "bad names and artifacts",
			src: `name = "my job"
device_type = "simlab-qemu"
tags = ["ok", "ok", "no tag"]
artifacts = ["relative.txt"]
[deploy]
image = "x.img"
sha256 = "` + digest + `"
`,
			want: []string{
				`:1: name: "my job" is not a valid name: use letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64`,
				`:3: tags[1]: "ok" is listed twice`,
				`:3: tags[2]: "no tag" is not a valid name: use letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64`,
				`:4: artifacts[0]: "relative.txt" is not an absolute path on the node`,
			},
		},
		{
			name: "empty file",
			src:  " \n\t\n",
			want: []string{": the job file is empty"},
		},
		{
			name: "syntax error",
			src:  "device = \"n\"\n[deploy\n",
			want: []string{":2: expected '.' or ']' to end table name, but got '\\n' instead"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("job.toml", []byte(tt.src), "/jobs")
			var got []string
			for _, p := range tomlfile.Problems("job.toml", err) {
				got = append(got, strings.TrimPrefix(p.String(), "job.toml"))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Parse() problems =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

// Parse makes relative paths absolute against the job file's directory,
// keeps absolute paths and http(s) URLs, and refuses any other "://".
func TestParsePaths(t *testing.T) {
	job := func(image, sum string) string {
		return "device = \"n\"\n[deploy]\nimage = \"" + image + "\"\n" + sum + "\n"
	}
	inline := `sha256 = "` + digest + `"`
	tests := []struct {
		name, src, dir string
		image, sumFile string // want, if the job is valid
		problem        string // want, without the file name
	}{
		{name: "relative path", src: job("images/disk.img", inline), dir: "/jobs", image: "/jobs/images/disk.img"},
		{name: "dot-dot path", src: job("../disk.img", inline), dir: "/jobs/a", image: "/jobs/disk.img"},
		{name: "absolute path", src: job("/srv/disk.img", inline), dir: "/jobs", image: "/srv/disk.img"},
		{name: "absolute path without dir", src: job("/srv/disk.img", inline), image: "/srv/disk.img"},
		{name: "http URL", src: job("http://h/disk.img", inline), dir: "/jobs", image: "http://h/disk.img"},
		{name: "https URL without dir", src: job("https://h:8443/d/disk.img", inline), image: "https://h:8443/d/disk.img"},
		{name: "relative sha256_file", src: job("disk.img", `sha256_file = "disk.img.sha256"`), dir: "/jobs",
			image: "/jobs/disk.img", sumFile: "/jobs/disk.img.sha256"},
		{name: "bad scheme", src: job("ftp://h/disk.img", inline), dir: "/jobs",
			problem: `:3: deploy.image: "ftp://h/disk.img" is not supported: use an http:// or https:// URL, or a path`},
		{name: "upper-case scheme", src: job("HTTP://h/disk.img", inline), dir: "/jobs",
			problem: `:3: deploy.image: "HTTP://h/disk.img" is not supported: use an http:// or https:// URL, or a path`},
		{name: "file URL", src: job("file:///srv/disk.img", inline), dir: "/jobs",
			problem: `:3: deploy.image: "file:///srv/disk.img" is not supported: use an http:// or https:// URL, or a path`},
		{name: "URL without host", src: job("http:///disk.img", inline), dir: "/jobs",
			problem: `:3: deploy.image: URL "http:///disk.img" has no host`},
		{name: "relative path without dir", src: job("disk.img", inline),
			problem: `:3: deploy.image: "disk.img" is relative, and the job file's directory is not known: give an absolute path`},
		{name: "relative path, relative dir", src: job("disk.img", inline), dir: "jobs",
			problem: `:3: deploy.image: "disk.img" is relative, and the job file's directory is not known: give an absolute path`},
		{name: "relative sha256_file without dir", src: job("/srv/disk.img", `sha256_file = "s"`),
			problem: `:4: deploy.sha256_file: "s" is relative, and the job file's directory is not known: give an absolute path`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j, err := Parse("job.toml", []byte(tt.src), tt.dir)
			if tt.problem != "" {
				var got []string
				for _, p := range tomlfile.Problems("job.toml", err) {
					got = append(got, strings.TrimPrefix(p.String(), "job.toml"))
				}
				if !slices.Equal(got, []string{tt.problem}) {
					t.Errorf("Parse() problems = %q, want %q", got, tt.problem)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse() = %v", err)
			}
			if j.Deploy.Image != tt.image || j.Deploy.SHA256File != tt.sumFile {
				t.Errorf("image, sha256_file = %q, %q; want %q, %q", j.Deploy.Image, j.Deploy.SHA256File, tt.image, tt.sumFile)
			}
			if want := strings.HasPrefix(tt.image, "http"); j.Deploy.ImageIsURL() != want {
				t.Errorf("ImageIsURL() = %v, want %v", !want, want)
			}
		})
	}
}

// Timeouts are the job's own, or the device type's defaults for those it
// leaves out.
func TestTimeouts(t *testing.T) {
	defaults := devices.Timeouts{
		Power: time.Second, MasterBoot: 2 * time.Second, Deploy: 10 * time.Minute,
		DiskBoot: 3 * time.Minute, Login: time.Minute, TestStep: 5 * time.Minute, Job: time.Hour,
	}
	steps := "\n[[test]]\nname = \"a\"\ncommands = [\"true\"]\n[[test]]\nname = \"b\"\ncommands = [\"true\"]\n"
	tests := []struct {
		name string
		src  string
		want Timeouts
	}{
		{
			name: "all defaults",
			src:  minimal + steps,
			want: Timeouts{Job: time.Hour, Deploy: 10 * time.Minute, Boot: 4 * time.Minute, Tests: []time.Duration{5 * time.Minute, 5 * time.Minute}},
		},
		{
			name: "the job's own",
			src: "timeout = \"2h\"\n" + minimal + "timeout = \"20m\"\n[boot]\ntimeout = \"90s\"\n" +
				"[[test]]\nname = \"a\"\ncommands = [\"true\"]\ntimeout = \"1m\"\n[[test]]\nname = \"b\"\ncommands = [\"true\"]\n",
			want: Timeouts{Job: 2 * time.Hour, Deploy: 20 * time.Minute, Boot: 90 * time.Second, Tests: []time.Duration{time.Minute, 5 * time.Minute}},
		},
		{
			name: "no test steps",
			src:  minimal,
			want: Timeouts{Job: time.Hour, Deploy: 10 * time.Minute, Boot: 4 * time.Minute, Tests: []time.Duration{}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j, err := Parse("job.toml", []byte(tt.src), "/jobs")
			if err != nil {
				t.Fatal(err)
			}
			got := j.Timeouts(defaults)
			if got.Job != tt.want.Job || got.Deploy != tt.want.Deploy || got.Boot != tt.want.Boot || !slices.Equal(got.Tests, tt.want.Tests) {
				t.Errorf("Timeouts() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestLoadResolvesPathsAndDigest(t *testing.T) {
	dir := t.TempDir()
	images := filepath.Join(dir, "images")
	if err := os.Mkdir(images, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(images, "disk.img.sha256"), []byte(strings.ToUpper(digest)+"  disk.img\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("testdata/valid.toml")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "job.toml")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	job, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(images, "disk.img.gz"); job.Deploy.Image != want {
		t.Errorf("image = %q, want %q", job.Deploy.Image, want)
	}
	got, err := job.Deploy.Digest()
	if err != nil || got != digest {
		t.Errorf("Digest() = %q, %v; want %q", got, err, digest)
	}

	job.Deploy.SHA256File = filepath.Join(dir, "missing.sha256")
	if _, err := job.Deploy.Digest(); err == nil || !strings.Contains(err.Error(), "missing.sha256") {
		t.Errorf("Digest() of a missing file = %v, want an error naming it", err)
	}
	if _, err := Load(filepath.Join(dir, "nope.toml")); err == nil || !strings.Contains(err.Error(), "nope.toml") {
		t.Errorf("Load(missing) = %v, want an error naming the file", err)
	}
}

func TestLoadKeepsURLs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.toml")
	if err := os.WriteFile(path, []byte(minimal), 0o644); err != nil {
		t.Fatal(err)
	}
	job, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if job.Deploy.Image != "http://example.com/disk.img.gz" {
		t.Errorf("image = %q, want the URL unchanged", job.Deploy.Image)
	}
	if d, err := job.Deploy.Digest(); err != nil || d != digest {
		t.Errorf("Digest() = %q, %v", d, err)
	}
}

func TestPriorityRank(t *testing.T) {
	if !(High.Rank() > Normal.Rank() && Normal.Rank() > Low.Rank()) {
		t.Errorf("ranks high=%d normal=%d low=%d, want high > normal > low", High.Rank(), Normal.Rank(), Low.Rank())
	}
}

func TestNotify(t *testing.T) {
	base := "device = \"n1\"\n[deploy]\nimage = \"https://x.example/i.img\"\nsha256 = \"" + strings.Repeat("a", 64) + "\"\n[[test]]\nname = \"t\"\ncommands = [\"true\"]\n"
	_, err := Parse("j.toml", []byte("notify = [\"ftp://x\", \"https://u:p@h/\"]\n"+base), "/")
	for _, want := range []string{`j.toml:1: notify[0]: "ftp://x" is not an http:// or https:// URL`, "notify[1]: URL \"https://u:p@h/\" holds user information"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse = %v, want %q", err, want)
		}
	}
	text, err := WithNotify("j.toml", []byte(base), "/", []string{"https://ci.example.org/hook", "http://10.1.2.3:8080/x"})
	if err != nil {
		t.Fatal(err)
	}
	j, err := Parse("j.toml", text, "/")
	if err != nil || len(j.Notify) != 2 || j.Notify[1] != "http://10.1.2.3:8080/x" {
		t.Errorf("WithNotify: %v, notify %v", err, j.Notify)
	}
	if _, err := WithNotify("j.toml", text, "/", []string{"https://other.example.org/"}); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("WithNotify on a file with notify = %v, want a refusal", err)
	}
	if _, err := WithNotify("j.toml", []byte(base), "/", []string{"https://x/\"]\nname = \"y"}); err == nil {
		t.Error("WithNotify took a URL with a quote")
	}
}

// A job that only saves needs no [deploy]; its save timeout defaults to
// the device type's deploy timeout.
func TestParseSaveOnly(t *testing.T) {
	j, err := Parse("save.toml", []byte("device = \"n\"\n[save]\noutput = \"n-golden.img.zst\"\n"), "/jobs")
	if err != nil {
		t.Fatal(err)
	}
	if j.HasDeploy() || j.Save == nil || j.Save.Output != "n-golden.img.zst" {
		t.Fatalf("job %+v save %+v", j, j.Save)
	}
	to := j.Timeouts(devices.DefaultSettings().Timeouts)
	if to.Save != devices.DefaultSettings().Timeouts.Deploy {
		t.Errorf("save timeout %s", to.Save)
	}
	if _, err := Parse("job.toml", []byte("device = \"n\"\n"), "/jobs"); err == nil {
		t.Error("a job with neither [deploy] nor [save] parsed")
	}
}

// Fits: a job naming a device fits that device only, whatever its type
// and tags; otherwise a device of its type (any, if it names none) with
// every one of its tags.
func TestJobFits(t *testing.T) {
	for _, tc := range []struct {
		job              Job
		name, deviceType string
		tags             []string
		want             bool
	}{
		{Job{Device: "n1"}, "n1", "x86", nil, true},
		{Job{Device: "n1"}, "n2", "x86", nil, false},
		{Job{Device: "n1", DeviceType: "arm", Tags: []string{"gpu"}}, "n1", "x86", nil, true},
		{Job{DeviceType: "x86"}, "n2", "x86", nil, true},
		{Job{DeviceType: "x86"}, "n2", "arm", nil, false},
		{Job{Tags: []string{"gpu"}}, "n2", "arm", []string{"gpu", "big"}, true},
		{Job{DeviceType: "x86", Tags: []string{"gpu", "big"}}, "n2", "x86", []string{"gpu"}, false},
		{Job{}, "n2", "arm", nil, true},
	} {
		if got := tc.job.Fits(tc.name, tc.deviceType, tc.tags); got != tc.want {
			t.Errorf("%+v fits %s (%s, %v) = %v, want %v", tc.job, tc.name, tc.deviceType, tc.tags, got, tc.want)
		}
	}
}
