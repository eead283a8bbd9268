// Package jobs defines the job file: what image to write to which device,
// how to log in afterwards, which test steps to run.
//
// A job file is TOML (docs/architecture.md, "job"). [Parse] decodes and
// validates one strictly: unknown keys, wrong types, missing or malformed
// values are all reported, each as "FILE:LINE: key.path: message". The
// client, the daemon and labctl run all read job files with it.
//
// Timeouts left out of a job (zero) mean "the device type's default"
// (timeouts.job, timeouts.deploy, timeouts.disk_boot + timeouts.login,
// timeouts.test_step); [Job.Timeouts] resolves them once the device is known.
package jobs

import (
	"bytes"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/internal/tomlfile"
)

// Job is one job file.
type Job struct {
	// Name identifies the job in listings and results; it defaults to the
	// file name without ".toml".
	Name string `toml:"name"`
	// Device names the device to run on. Either Device, or DeviceType (and
	// optionally Tags, all of which the device must have) is set.
	Device     string   `toml:"device"`
	DeviceType string   `toml:"device_type"`
	Tags       []string `toml:"tags"`
	// Priority orders the queue: high, then normal (the default), then low.
	Priority Priority `toml:"priority"`
	// Timeout bounds the whole job; zero means the device type's timeouts.job.
	Timeout time.Duration `toml:"timeout"`
	// Retries is how many times the job is queued again when it ends
	// incomplete (the lab went wrong, not the test); -1 (absent): the
	// lab's default.
	Retries int `toml:"retries"`
	// QueueTimeout bounds the time the job waits in the queue: it ends
	// canceled when no device took it by then; zero: the lab's default.
	QueueTimeout time.Duration `toml:"queue_timeout"`
	// KeepPoweredOn leaves the node on after the job, for debugging.
	KeepPoweredOn bool `toml:"keep_powered_on"`
	// Artifacts are absolute paths on the node fetched back after the tests.
	Artifacts []string `toml:"artifacts"`
	// Notify are http(s) URLs the daemon posts the job's end to (a
	// signed webhook; see package webhooks). The daemon refuses the job
	// when one points where jobs may not connect (the lab's [images]
	// allow_networks rule).
	Notify []string `toml:"notify"`
	Deploy Deploy   `toml:"deploy"`
	Boot   Boot     `toml:"boot"`
	Tests  []Test   `toml:"test"`
	// Save, if set, saves the node's disk as an image after the tests.
	Save *Save `toml:"save"`

	doc *tomlfile.Document // where each key is, for later problems
}

// Fits reports whether a device (its name, type and tags) is one the job
// may run on: the device it names, or one of its type (any, if it names
// none) that has every one of its tags.
func (j *Job) Fits(name, deviceType string, tags []string) bool {
	if j.Device != "" {
		return j.Device == name
	}
	if j.DeviceType != "" && j.DeviceType != deviceType {
		return false
	}
	for _, t := range j.Tags {
		if !slices.Contains(tags, t) {
			return false
		}
	}
	return true
}

// Line returns the line of key (such as "deploy.image" or "test[1].name")
// in the job file, for problems found after parsing (a device the lab does
// not have); 0 if it is not known.
func (j *Job) Line(key string) int {
	if j.doc == nil {
		return 0
	}
	return j.doc.Line(key)
}

// Deploy says which image to write to the node's disk from the master
// initrd, and how to check it.
type Deploy struct {
	// Image is an http:// or https:// URL, or a path to a file on the
	// dispatcher's host. [Parse] turns a relative path into an absolute
	// one, relative to the job file. Compression (gzip, xz, zstd, none) is
	// detected from the bytes when the job runs.
	Image string `toml:"image"`
	// SHA256 is the digest of the uncompressed bytes written to the disk:
	// 64 hex digits. Either SHA256 or SHA256File is set.
	SHA256 string `toml:"sha256"`
	// SHA256File is a file holding that digest, as written by `sha256sum`
	// ("<hex>  <name>"); a relative path is relative to the job file. It is
	// read when the job runs (see [Deploy.Digest]), so that a job can point
	// at an image that is rebuilt between runs.
	SHA256File string `toml:"sha256_file"`
	// Disk is the device node written to; empty means the device type's
	// master.disk.
	Disk string `toml:"disk"`
	// Timeout bounds the whole deploy action; zero means the device type's
	// timeouts.deploy.
	Timeout time.Duration `toml:"timeout"`
	// Verify is how the written image is checked: "readback", "stream" or
	// "both" (see devices.Deploy); empty means the device type's
	// deploy.verify.
	Verify devices.VerifyMode `toml:"verify"`
}

// Boot says how the node boots its test OS and how to log in to it.
type Boot struct {
	// Method is what the test OS boots from: its disk, written by the
	// deploy (the default), or, with no deploy, the network (see
	// [BootMethod]).
	Method BootMethod `toml:"method"`
	// Kernel and Initrd (ramdisk, nfs) are the test OS's kernel and
	// initramfs: paths on the dispatcher's host, relative to the job file,
	// which the boot server serves to the node over HTTP. For nfs, the
	// initramfs mounts the root (an NFS-root initrd such as simlab's).
	Kernel string `toml:"kernel"`
	Initrd string `toml:"initrd"`
	// Append is the test OS's kernel command line; empty means the device
	// type's master.append (its console settings). For nfs, labctl adds
	// the NFS root (nfsroot=SERVER:PATH,OPTIONS).
	Append string `toml:"append"`
	// Root (nfs) is the root file system the node mounts read-only over
	// NFS: a tar archive (plain, gzip, xz or zstd) or a directory on the
	// dispatcher's host, relative to the job file.
	Root string `toml:"root"`

	Username string `toml:"username"` // default "root"
	// Password is typed at the password prompt; empty means the test OS
	// asks for none. It is the test image's password, not a lab secret.
	Password string `toml:"password"`
	// Timeout bounds power cycle to shell prompt; zero means the device
	// type's timeouts.disk_boot plus timeouts.login.
	Timeout time.Duration `toml:"timeout"`
}

// BootMethod is what a job's test OS boots from.
type BootMethod string

// Boot methods.
const (
	// BootFromDisk boots the node's disk, which the deploy wrote.
	BootFromDisk BootMethod = "disk"
	// BootRamdisk boots the job's kernel and initramfs over the network;
	// the test OS runs from RAM, nothing is mounted from the network and
	// the disk is not touched.
	BootRamdisk BootMethod = "ramdisk"
	// BootNFS boots the job's kernel and NFS-root initramfs over the
	// network; the root is mounted read-only over NFS with a tmpfs
	// overlay, and the disk is not touched.
	BootNFS BootMethod = "nfs"
)

// Diskless reports whether the test OS boots over the network, without a
// deploy.
func (m BootMethod) Diskless() bool { return m == BootRamdisk || m == BootNFS }

// Save captures the node's disk after the tests (or, in a job with
// neither a deploy nor tests, the disk as it is) into a zstd image the
// lab can deploy again, with the raw disk's sha256 beside it.
type Save struct {
	// Output is the image's file name, ending in ".img.zst", in the lab's
	// save directory ([images] save_dir); the digest goes beside it as
	// NAME.img.sha256. An existing file is never replaced.
	Output string `toml:"output"`
	// Disk is the device node read; empty means the device type's
	// master.disk.
	Disk string `toml:"disk"`
	// Timeout bounds the save action; zero means the device type's
	// timeouts.deploy.
	Timeout time.Duration `toml:"timeout"`
}

// saveName is a save's output: a plain file name ending in .img.zst.
var saveName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,91}\.img\.zst$`)

// ValidSaveName says whether name may be a save's output file name.
func ValidSaveName(name string) bool { return saveName.MatchString(name) }

func (s *Save) validate(doc *tomlfile.Document) {
	switch {
	case s.Output == "":
		doc.Problemf("save.output", `required: the image's file name, e.g. "node1-configured.img.zst"`)
	case !saveName.MatchString(s.Output):
		doc.Problemf("save.output", "%q: want a file name (letters, digits, '.', '_', '+', '-'; no directory) ending in .img.zst", s.Output)
	}
	if s.Disk != "" && !diskPath.MatchString(s.Disk) {
		doc.Problemf("save.disk", "%q is not a device node such as /dev/sda", s.Disk)
	}
	checkDuration(doc, "save.timeout", s.Timeout)
}

// HasDeploy says whether the job writes an image: every job does except
// a diskless one and one that only saves a disk (a [save] and no [deploy]).
func (j *Job) HasDeploy() bool {
	return j.Deploy.Image != "" || (j.Save == nil && !j.Boot.Method.Diskless())
}

// Test is one test step: shell commands typed into the test OS, one after
// the other. The step passes when every command exits 0, or, if
// ExpectFailure is set, when one of them does not.
type Test struct {
	Name          string        `toml:"name"`
	Commands      []string      `toml:"commands"`
	Timeout       time.Duration `toml:"timeout"` // zero means the device type's timeouts.test_step
	ExpectFailure bool          `toml:"expect_failure"`
}

// Load reads the job file at path and parses it (see [Parse]) against the
// file's directory.
func Load(path string) (*Job, error) {
	text, dir, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, text, dir)
}

// ReadFile reads the job file at path, and returns its text and the
// absolute directory its relative paths are taken against: what [Parse]
// needs, and what a client sends to the daemon.
func ReadFile(path string) (text []byte, dir string, err error) {
	text, err = os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("read job file: %w", err)
	}
	dir, err = filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, "", fmt.Errorf("job file %s: %w", path, err)
	}
	return text, dir, nil
}

// Parse decodes and validates a job file's text. name is the file's name,
// in problems and for the default job name. dir is the directory the
// relative paths in the job (deploy.image, deploy.sha256_file) are taken
// against: Parse makes them absolute, and a relative path with no absolute
// dir is a problem.
func Parse(name string, data []byte, dir string) (*Job, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, &tomlfile.Error{Problems: []tomlfile.Problem{{File: name, Message: "the job file is empty"}}}
	}
	job := &Job{
		Name:     strings.TrimSuffix(filepath.Base(name), ".toml"),
		Priority: Normal,
		Retries:  -1,
		Boot:     Boot{Method: BootFromDisk, Username: "root"},
	}
	doc, err := tomlfile.JobFile.Decode(name, data, job)
	if err != nil {
		return nil, err
	}
	job.validate(doc, dir)
	if err := doc.Err(); err != nil {
		return nil, err
	}
	job.doc = doc
	return job, nil
}

var (
	sha256Hex = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
	// diskPath is a device node that is safe to type into a shell.
	diskPath = regexp.MustCompile(`^/dev/[A-Za-z0-9/_.:-]+$`)
)

func (j *Job) validate(doc *tomlfile.Document, dir string) {
	if !tomlfile.ValidName(j.Name) {
		if doc.Has("name") {
			doc.Problemf("name", "%q is not a valid name: use %s", j.Name, tomlfile.NameRule)
		} else {
			doc.Problemf("name", "the file name %q is not a valid job name: set name (%s)", j.Name, tomlfile.NameRule)
		}
	}
	switch {
	case j.Device == "" && j.DeviceType == "":
		doc.Problemf("device", "required: name a device, or a device_type (and tags)")
	case j.Device != "" && j.DeviceType != "":
		doc.Problemf("device_type", "give either device or device_type, not both")
	case j.Device != "" && len(j.Tags) > 0:
		doc.Problemf("tags", "tags select among the devices of a device_type; with device they mean nothing")
	}
	checkName(doc, "device", j.Device)
	checkName(doc, "device_type", j.DeviceType)
	checkNames(doc, "tags", j.Tags)
	checkDuration(doc, "timeout", j.Timeout)
	checkDuration(doc, "queue_timeout", j.QueueTimeout)
	if doc.Has("retries") && (j.Retries < 0 || j.Retries > devices.MaxRetries) {
		doc.Problemf("retries", "%d: give 0 to %d", j.Retries, devices.MaxRetries)
	}
	checkNotify(doc, j.Notify)
	for i, a := range j.Artifacts {
		key := fmt.Sprintf("artifacts[%d]", i)
		switch {
		case !strings.HasPrefix(a, "/") || strings.ContainsAny(a, "\n\r"):
			doc.Problemf(key, "%q is not an absolute path on the node", a)
		case slices.Index(j.Artifacts, a) < i:
			doc.Problemf(key, "%q is listed twice", a)
		}
	}
	j.Boot.validate(doc, dir)
	switch {
	case j.Boot.Method.Diskless():
		if doc.Has("deploy") {
			doc.Problemf("deploy", "boot.method %q boots over the network and writes no disk: remove [deploy]", j.Boot.Method)
		}
		if j.Save != nil {
			doc.Problemf("save", "boot.method %q leaves the disk untouched: save a disk in a job that boots from it, or with labctl save", j.Boot.Method)
		}
	case j.Save == nil || doc.Has("deploy"):
		j.Deploy.validate(doc, dir)
	}
	if j.Save != nil && !j.Boot.Method.Diskless() {
		j.Save.validate(doc)
	}
	checkDuration(doc, "boot.timeout", j.Boot.Timeout)
	if j.Boot.Username == "" || strings.ContainsAny(j.Boot.Username, " \t\r\n") {
		doc.Problemf("boot.username", "must be a user name without spaces")
	}
	if strings.ContainsAny(j.Boot.Password, "\r\n") {
		doc.Problemf("boot.password", "must be one line")
	}
	for i := range j.Tests {
		j.Tests[i].validate(doc, fmt.Sprintf("test[%d]", i))
		if prev := slices.IndexFunc(j.Tests[:i], func(t Test) bool { return t.Name == j.Tests[i].Name }); prev >= 0 && j.Tests[i].Name != "" {
			doc.Problemf(fmt.Sprintf("test[%d].name", i), "%q is already the name of test %d (line %d)",
				j.Tests[i].Name, prev+1, doc.Line(fmt.Sprintf("test[%d].name", prev)))
		}
	}
}

// unsafeInPath are characters a local path of a job may not hold: they
// would break out of a shell word or a pxelinux line.
const unsafeInPath = " \t\r\n\"'`\\"

func (b *Boot) validate(doc *tomlfile.Document, dir string) {
	const diskless, nfs = `"ramdisk" or "nfs"`, `"nfs"`
	files := []struct {
		key     string
		path    *string
		need    bool
		methods string // the boot methods that take it
	}{
		{"boot.kernel", &b.Kernel, b.Method.Diskless(), diskless},
		{"boot.initrd", &b.Initrd, b.Method.Diskless(), diskless},
		{"boot.root", &b.Root, b.Method == BootNFS, nfs},
	}
	switch b.Method {
	case BootFromDisk, BootRamdisk, BootNFS:
	default:
		doc.Problemf("boot.method", "%q: use disk (the default), ramdisk or nfs", b.Method)
		return
	}
	for _, f := range files {
		switch {
		case *f.path == "" && f.need:
			doc.Problemf(f.key, "required with boot.method = %q: a path on this host", b.Method)
		case *f.path == "":
		case !f.need:
			doc.Problemf(f.key, "only for boot.method = %s", f.methods)
		case strings.Contains(*f.path, "://"):
			doc.Problemf(f.key, "%q: give a path on this host (the boot server serves it)", *f.path)
		case strings.ContainsAny(*f.path, unsafeInPath):
			doc.Problemf(f.key, "must not contain spaces, quotes or backslashes")
		default:
			*f.path = absPath(doc, f.key, *f.path, dir)
		}
	}
	if b.Append != "" && !b.Method.Diskless() {
		doc.Problemf("boot.append", "only for boot.method = %s (a disk's command line is on the disk)", diskless)
	}
	if strings.ContainsAny(b.Append, "\r\n") || strings.Contains(b.Append, "nfsroot=") {
		doc.Problemf("boot.append", "must be one line, without nfsroot= (labctl sets it)")
	}
}

func (d *Deploy) validate(doc *tomlfile.Document, dir string) {
	switch {
	case d.Image == "":
		doc.Problemf("deploy.image", "required: an http(s) URL or a path")
	case strings.ContainsAny(d.Image, " \t\r\n\"'`\\"):
		doc.Problemf("deploy.image", "must not contain spaces, quotes or backslashes")
	case IsURL(d.Image):
		u, err := url.Parse(d.Image)
		switch {
		case err != nil:
			doc.Problemf("deploy.image", "invalid URL: %v", err)
		case u.Hostname() == "":
			doc.Problemf("deploy.image", "URL %q has no host", d.Image)
		}
	case strings.Contains(d.Image, "://"):
		doc.Problemf("deploy.image", "%q is not supported: use an http:// or https:// URL, or a path", d.Image)
	default:
		d.Image = absPath(doc, "deploy.image", d.Image, dir)
	}
	switch {
	case d.SHA256 == "" && d.SHA256File == "":
		doc.Problemf("deploy.sha256", "required: the sha256 of the uncompressed image (or sha256_file)")
	case d.SHA256 != "" && d.SHA256File != "":
		doc.Problemf("deploy.sha256_file", "give either sha256 or sha256_file, not both")
	case d.SHA256 != "" && !sha256Hex.MatchString(d.SHA256):
		doc.Problemf("deploy.sha256", "must be 64 hex digits")
	case d.SHA256File != "":
		d.SHA256File = absPath(doc, "deploy.sha256_file", d.SHA256File, dir)
	}
	d.SHA256 = strings.ToLower(d.SHA256)
	if d.Disk != "" && !diskPath.MatchString(d.Disk) {
		doc.Problemf("deploy.disk", "%q is not a device node such as /dev/sda", d.Disk)
	}
	checkDuration(doc, "deploy.timeout", d.Timeout)
}

func (t *Test) validate(doc *tomlfile.Document, key string) {
	if t.Name == "" {
		doc.Problemf(key+".name", "required")
	}
	checkName(doc, key+".name", t.Name)
	if len(t.Commands) == 0 {
		doc.Problemf(key+".commands", "at least one command is required")
	}
	for i, c := range t.Commands {
		ckey := fmt.Sprintf("%s.commands[%d]", key, i)
		switch {
		case strings.TrimSpace(c) == "":
			doc.Problemf(ckey, "empty command")
		case strings.ContainsAny(c, "\r\n"):
			doc.Problemf(ckey, "must be one line: split it into several commands")
		}
	}
	checkDuration(doc, key+".timeout", t.Timeout)
}

// absPath makes a path in the job absolute, taken against dir, the job
// file's directory.
func absPath(doc *tomlfile.Document, key, path, dir string) string {
	if filepath.IsAbs(path) {
		return path
	}
	if !filepath.IsAbs(dir) {
		doc.Problemf(key, "%q is relative, and the job file's directory is not known: give an absolute path", path)
		return path
	}
	return filepath.Join(dir, path)
}

// checkName checks a name that is not empty.
func checkName(doc *tomlfile.Document, key, name string) {
	if name != "" && !tomlfile.ValidName(name) {
		doc.Problemf(key, "%q is not a valid name: use %s", name, tomlfile.NameRule)
	}
}

func checkNames(doc *tomlfile.Document, key string, names []string) {
	for i, name := range names {
		ikey := fmt.Sprintf("%s[%d]", key, i)
		if name == "" {
			doc.Problemf(ikey, "empty name")
		}
		checkName(doc, ikey, name)
		if slices.Index(names, name) < i {
			doc.Problemf(ikey, "%q is listed twice", name)
		}
	}
}

func checkDuration(doc *tomlfile.Document, key string, d time.Duration) {
	if d < 0 {
		doc.Problemf(key, "must not be negative")
	}
}

// RetriesOr is how many times the job is retried: its own retries, or
// def (the lab's default) when the job file does not say.
func (j *Job) RetriesOr(def int) int {
	if j.Retries < 0 {
		return def
	}
	return j.Retries
}

// IsURL reports whether a job's image is a URL to download (it starts with
// http:// or https://) rather than a path on the dispatcher's host. [Parse]
// refuses any other "://".
func IsURL(image string) bool {
	return strings.HasPrefix(image, "http://") || strings.HasPrefix(image, "https://")
}

// ImageIsURL reports whether Image is a URL rather than a path (see [IsURL]).
func (d Deploy) ImageIsURL() bool {
	return IsURL(d.Image)
}

// Digest returns the expected sha256 of the written bytes, in lower-case
// hex: SHA256, or the first word of SHA256File.
func (d Deploy) Digest() (string, error) {
	if d.SHA256File == "" {
		return d.SHA256, nil
	}
	data, err := os.ReadFile(d.SHA256File)
	if err != nil {
		return "", fmt.Errorf("read deploy.sha256_file: %w", err)
	}
	return ParseDigestFile(d.SHA256File, data)
}

// ParseDigestFile returns the digest a sha256_file (named file) holds, in
// lower-case hex: its first word, 64 hex digits.
func ParseDigestFile(file string, data []byte) (string, error) {
	fields := strings.Fields(string(data))
	if len(fields) == 0 || !sha256Hex.MatchString(fields[0]) {
		return "", fmt.Errorf("deploy.sha256_file %s: does not start with 64 hex digits", file)
	}
	return strings.ToLower(fields[0]), nil
}
