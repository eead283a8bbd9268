package main

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func testEnv() (*appEnv, *bytes.Buffer, *bytes.Buffer) {
	var stdout, stderr bytes.Buffer
	return &appEnv{stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }}, &stdout, &stderr
}

// Every TOML file shipped in device-types/ and examples/ is valid: a new
// file is covered as soon as it is added.
func TestValidateShippedFiles(t *testing.T) {
	var files []string
	for _, root := range []string{"../../device-types", "../../examples"} {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasSuffix(path, ".toml") {
				files = append(files, path)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(files) < 10 {
		t.Fatalf("found only %d shipped files: %q", len(files), files)
	}
	env, stdout, _ := testEnv()
	err := runValidate(context.Background(), validateOptions{files: files}, env)
	if err != nil {
		t.Errorf("runValidate(shipped files) = %v\n%s", err, stdout)
	}
	for _, file := range files {
		if !strings.Contains(stdout.String(), file+": ok (") {
			t.Errorf("%s: no ok line in\n%s", file, stdout)
		}
	}
	// The demo job can also run on the demo lab.
	env, stdout, _ = testEnv()
	if err := runValidate(context.Background(), validateOptions{files: []string{"../../examples/jobs/smoke.toml"}, lab: "../../examples/lab.toml"}, env); err != nil {
		t.Errorf("smoke job against the example lab: %v\n%s", err, stdout)
	}
}

// writeFiles writes files (relative path -> content) under a new directory
// and returns it.
func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const (
	validType = `[console]
driver = "ipmi"
[master]
kernel = "vmlinuz"
initrd = "initrd"
prompt = "# "
disk = "/dev/sda"
[login]
shell_prompt = "# "
`
	validDevice = `device_type = "t1"
tags = ["fast"]
mac = "52:54:00:00:00:01"
[bmc]
host = "bmc1"
user = "admin"
password_env = "BMC_PASSWORD"
`
	validJob = `device_type = "t1"
tags = ["fast"]
[deploy]
image = "http://images/disk.img"
sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
[[test]]
name = "t"
commands = ["true"]
`
	validLab = `name = "lab"
device_types = ["device-types"]
devices = ["devices"]
[boot_server]
root = "boot"
http_listen = ":8080"
http_url = "http://10.0.0.1:8080"
`
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		args    []string // files to validate, relative to the directory
		lab     string
		kind    fileKind
		want    []string // output lines, with the directory written as DIR
		invalid bool
	}{
		{
			name:  "kinds told by place",
			files: map[string]string{"device-types/t1.toml": validType, "jobs/j.toml": validJob, "lab.toml": validLab, "devices/d1.toml": validDevice, "boot/lpxelinux.0": "pxelinux"},
			args:  []string{"device-types/t1.toml", "jobs/j.toml", "lab.toml", "devices/d1.toml"},
			want: []string{
				`DIR/device-types/t1.toml: ok (device type "t1")`,
				`DIR/jobs/j.toml: ok (job "j", 1 test steps)`,
				`DIR/lab.toml: ok (lab "lab": 1 device types, 1 devices)`,
				`DIR/devices/d1.toml: ok (device "d1" of lab DIR/lab.toml)`,
			},
		},
		{
			name:  "kinds told by keys",
			files: map[string]string{"t1.toml": validType, "j.toml": validJob},
			args:  []string{"t1.toml", "j.toml"},
			want:  []string{`DIR/t1.toml: ok (device type "t1")`, `DIR/j.toml: ok (job "j", 1 test steps)`},
		},
		{
			name:    "kind not told",
			files:   map[string]string{"x.toml": "name = \"x\"\ntags = []\n", "y.toml": "deploy = 1\nmac = 2\n", "z.toml": "a = = 1\n"},
			args:    []string{"x.toml", "y.toml", "z.toml"},
			invalid: true,
			want: []string{
				"DIR/x.toml: cannot tell whether this is a lab, device-type, device or job file (top-level keys: name, tags): use --kind",
				"DIR/y.toml: cannot tell whether this is a lab, device-type, device or job file (top-level keys: deploy, mac): use --kind",
				"DIR/z.toml:1: expected value but found '=' instead",
			},
		},
		{
			name:  "--kind",
			files: map[string]string{"x.toml": validJob},
			args:  []string{"x.toml"},
			kind:  kindJob,
			want:  []string{`DIR/x.toml: ok (job "x", 1 test steps)`},
		},
		{
			name:    "problems of each file, with their lines",
			files:   map[string]string{"jobs/j.toml": strings.Replace(validJob, "9f86", "9x86", 1) + "colour = 1\n", "device-types/t1.toml": validType + "[timeouts]\njob = 5\n"},
			args:    []string{"jobs/j.toml", "device-types/t1.toml"},
			invalid: true,
			want: []string{
				"DIR/jobs/j.toml:5: deploy.sha256: must be 64 hex digits",
				"DIR/jobs/j.toml:9: test[0].colour: unknown key",
				`DIR/device-types/t1.toml:11: timeouts.job: must be a duration such as "90s" or "5m", not an integer`,
			},
		},
		{
			name: "device in a lab: its own problems, and a note about the others",
			files: map[string]string{"lab.toml": validLab, "device-types/t1.toml": validType,
				"devices/d1.toml": validDevice, "devices/d2.toml": strings.Replace(validDevice, `"t1"`, `"t2"`, 1)},
			args:    []string{"devices/d1.toml", "devices/d2.toml"},
			invalid: true,
			want: []string{
				"DIR/devices/d1.toml: note: lab DIR/lab.toml has 2 problems in other files (labctl validate DIR/lab.toml)",
				`DIR/devices/d1.toml: ok (device, checked with lab DIR/lab.toml)`,
				`DIR/devices/d2.toml:1: device_type: unknown device type "t2" (known: t1)`,
				`DIR/devices/d2.toml:3: mac: 52:54:00:00:00:01 is also the MAC of d1 (DIR/devices/d1.toml)`,
			},
		},
		{
			name:  "device with a device-types directory above it",
			files: map[string]string{"device-types/t1.toml": validType, "site/nodes/d1.toml": validDevice},
			args:  []string{"site/nodes/d1.toml"},
			want:  []string{`DIR/site/nodes/d1.toml: ok (device "d1", checked against DIR/device-types)`},
		},
		{
			name:    "device alone",
			files:   map[string]string{"d1.toml": validDevice + "[override]\nconsole.pacing = \"slow\"\n"},
			args:    []string{"d1.toml"},
			kind:    kindDevice,
			invalid: true,
			want: []string{
				`DIR/d1.toml:9: override.console.pacing: "slow" is not a pacing mode: use "fixed" or "echo"`,
				"DIR/d1.toml: note: checked without its device type: no lab.toml or device-types directory found (use --lab)",
			},
		},
		{
			name:    "job against a lab",
			files:   map[string]string{"lab.toml": validLab, "device-types/t1.toml": validType, "devices/d1.toml": validDevice, "jobs/ok.toml": validJob, "jobs/tags.toml": strings.Replace(validJob, `"fast"`, `"slow"`, 1), "jobs/dev.toml": strings.Replace(validJob, "device_type = \"t1\"\ntags = [\"fast\"]", `device = "d9"`, 1)},
			args:    []string{"jobs/ok.toml", "jobs/tags.toml", "jobs/dev.toml"},
			lab:     "lab.toml",
			invalid: true,
			want: []string{
				`DIR/jobs/ok.toml: ok (job "ok", 1 test steps, 1 matching devices in lab DIR/lab.toml)`,
				"DIR/jobs/tags.toml:2: tags: no t1 device of lab DIR/lab.toml has all of the tags slow",
				`DIR/jobs/dev.toml:1: device: lab DIR/lab.toml has no device "d9"`,
			},
		},
		{
			name: "loader missing from the boot root",
			files: map[string]string{"device-types/t1.toml": "[bootdev]\nefi = true\n[boot]\nfirmware = \"uefi-secureboot\"\nfile = \"shimx64.efi\"\n" + validType,
				"lab.toml": validLab, "devices/d1.toml": validDevice, "boot/shimx64.efi": "shim"},
			args:    []string{"lab.toml"},
			invalid: true,
			want: []string{
				"DIR/device-types/t1.toml:5: boot.file: grubx64.efi is not in the boot root DIR/boot (firmware uefi-secureboot, loader grub; make master builds a boot root with every loader)",
			},
		},
		{
			name:    "loader family that does not run on the firmware",
			files:   map[string]string{"device-types/t1.toml": "[bootdev]\nefi = true\n[boot]\nfirmware = \"uefi\"\nloader = \"pxelinux\"\n" + validType},
			args:    []string{"device-types/t1.toml"},
			invalid: true,
			want: []string{
				`DIR/device-types/t1.toml:5: boot.loader: loader family "pxelinux" does not run on firmware "uefi" with method "pxe": use ipxe or grub`,
			},
		},
		{
			name:    "unreadable file",
			files:   map[string]string{},
			args:    []string{"jobs/missing.toml"},
			invalid: true,
			want:    []string{"DIR/jobs/missing.toml: read job file: open DIR/jobs/missing.toml: no such file or directory"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeFiles(t, tt.files)
			opts := validateOptions{kind: tt.kind}
			for _, a := range tt.args {
				opts.files = append(opts.files, filepath.Join(dir, a))
			}
			if tt.lab != "" {
				opts.lab = filepath.Join(dir, tt.lab)
			}
			env, stdout, _ := testEnv()
			err := runValidate(context.Background(), opts, env)
			if (err != nil) != tt.invalid {
				t.Errorf("runValidate() = %v, want invalid = %v", err, tt.invalid)
			}
			got := strings.Split(strings.TrimSpace(strings.ReplaceAll(stdout.String(), dir, "DIR")), "\n")
			if !slices.Equal(got, tt.want) {
				t.Errorf("output =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestValidateCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	env, _, _ := testEnv()
	if err := runValidate(ctx, validateOptions{files: []string{"x.toml"}}, env); err != context.Canceled {
		t.Errorf("runValidate(canceled) = %v, want context.Canceled", err)
	}
}
