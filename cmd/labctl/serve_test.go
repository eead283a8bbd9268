package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labctl/labctl/internal/testutil"
)

// envWith is an appEnv whose environment is vars.
func envWith(vars map[string]string) (*appEnv, *testutil.SyncBuffer, *testutil.SyncBuffer) {
	var stdout, stderr testutil.SyncBuffer
	return &appEnv{stdout: &stdout, stderr: &stderr, getenv: func(k string) string { return vars[k] }}, &stdout, &stderr
}

// appMu serialises command lines run by parallel tests: urfave/cli
// changes package-level flags (help, completion) on every run.
var appMu sync.Mutex

// runLabctl runs a labctl command line as main does, with the environment
// vars, and returns its exit status and output.
func runLabctl(t *testing.T, vars map[string]string, args ...string) (int, string, string) {
	t.Helper()
	env, stdout, stderr := envWith(vars)
	appMu.Lock()
	err := newApp(env).RunContext(context.Background(), append([]string{"labctl"}, args...))
	appMu.Unlock()
	code := exitCode(env, err)
	t.Logf("labctl %s: exit %d\n%s%s", strings.Join(args, " "), code, stdout, stderr)
	return code, stdout.String(), stderr.String()
}

// commandLab writes a lab whose one device, n1, is powered by a script
// (its power state a file) and whose console is `cat`: the master never
// boots, so a job ends incomplete after the 2 s master_boot timeout.
func commandLab(t *testing.T) (labFile, token string) {
	t.Helper()
	dir := t.TempDir()
	power := filepath.Join(dir, "power")
	script := fmt.Sprintf(`#!/bin/sh
case $1 in
  on|off) echo $1 > %[1]s/state ;;
  status) echo "Chassis Power is $(cat %[1]s/state 2>/dev/null || echo off)" ;;
  pxe|disk) echo $1 > %[1]s/bootdev ;;
  *) exit 1 ;;
esac
`, power)
	token = "serve-test-token-0123"
	files := map[string]string{
		"lab.toml": `name = "servetest"
device_types = ["types"]
devices = ["devices"]
state_dir = "state"
[boot_server]
root = "root"
tftp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
http_url = "http://127.0.0.1:1"
[server]
listen = "127.0.0.1:0"
[[server.tokens]]
name = "ci"
role = "admin"
token_file = "ci.token"
`,
		"ci.token":            token + "\n",
		"power/fake.sh":       script,
		"root/vmlinuz":        "kernel",
		"root/initrd.gz":      "initrd",
		"devices/n1.toml":     "device_type = \"switched\"\nmac = \"52:54:00:00:00:01\"\n[bmc]\nhost = \"127.0.0.1\"\nuser = \"admin\"\npassword_file = \"n1.password\"\n",
		"devices/n1.password": "not-a-real-bmc\n",
		"types/switched.toml": fmt.Sprintf(`[power]
method = "command"
on_command = "%[1]s/fake.sh on"
off_command = "%[1]s/fake.sh off"
status_command = "%[1]s/fake.sh status"
bootdev_pxe_command = "%[1]s/fake.sh pxe"
bootdev_disk_command = "%[1]s/fake.sh disk"
[console]
driver = "command"
connection_command = "sh -c 'echo console up; exec cat'"
[master]
kernel = "vmlinuz"
initrd = "initrd.gz"
prompt = "master# "
disk = "/dev/vda"
[login]
shell_prompt = "# "
[timeouts]
power = "10s"
master_boot = "2s"
`, power),
	}
	for name, content := range files {
		path := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(path), 0o755)
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".sh") {
			mode = 0o755
		} else if strings.HasSuffix(name, ".token") || strings.HasSuffix(name, ".password") {
			mode = 0o600
		}
		if err := os.WriteFile(path, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "lab.toml"), token
}

// startServe runs labctl serve in-process and returns its API URL once the
// API answers; the daemon stops when the test ends. The lab listens on
// port 0: the URL comes from the start-up line serve prints on stderr.
func startServe(t *testing.T, labFile string) string {
	t.Helper()
	env, _, stderr := envWith(nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runServe(ctx, serveOptions{lab: labFile}, env)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("labctl serve: %v", err)
			}
		case <-time.After(time.Minute):
			t.Error("labctl serve did not stop")
		}
		if t.Failed() {
			t.Logf("labctl serve stderr:\n%s", stderr)
		}
	})
	apiURL := regexp.MustCompile(`, API (http://\S+), `)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := apiURL.FindStringSubmatch(stderr.String()); m != nil {
			if resp, err := http.Get(m[1] + "/api/v1/devices"); err == nil {
				resp.Body.Close()
				return m[1]
			}
		}
		select {
		case err := <-done:
			done <- err // for the cleanup
			t.Fatalf("labctl serve: %v\n%s", err, stderr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("labctl serve's API did not answer within 30s:\n%s", stderr)
		}
	}
}

// labctl serve end to end on a lab of command-powered devices: the API
// refuses requests without a token; the device is health-checked at
// start-up; power, bootdev and maintenance go through the daemon; a job
// whose master never boots ends incomplete (submit --wait exits 2) and
// its device comes back after the health check; a second daemon on the
// same state directory is refused; power and devices also work directly
// with --lab.
func TestServe(t *testing.T) {
	t.Parallel()
	labFile, token := commandLab(t)
	url := startServe(t, labFile)
	vars := map[string]string{"LABCTL_SERVER": url, "LABCTL_TOKEN": token}

	resp, err := http.Get(url + "/api/v1/devices")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("request without a token: %s, want 401", resp.Status)
	}
	if code, _, stderr := runLabctl(t, map[string]string{"LABCTL_SERVER": url, "LABCTL_TOKEN": "wrong-token-123"}, "devices"); code != 1 || !strings.Contains(stderr, "valid bearer token") {
		t.Errorf("labctl devices with a wrong token: exit %d, %q", code, stderr)
	}

	waitForDevice(t, vars, "n1", "idle")
	if code, out, _ := runLabctl(t, vars, "power", "n1", "on"); code != 0 || out != "n1: on\n" {
		t.Errorf("power n1 on: %d %q", code, out)
	}
	if code, out, _ := runLabctl(t, vars, "bootdev", "n1", "pxe"); code != 0 || out != "n1: next boot from pxe\n" {
		t.Errorf("bootdev n1 pxe: %d %q", code, out)
	}
	if code, out, _ := runLabctl(t, vars, "power", "--lab", labFile, "n1", "status"); code != 0 || out != "n1: on\n" {
		t.Errorf("power --lab n1 status: %d %q", code, out)
	}
	if code, out, _ := runLabctl(t, vars, "devices", "--lab", labFile, "--power"); code != 0 || !strings.Contains(out, "switched") || !strings.Contains(out, " on") {
		t.Errorf("devices --lab --power: %d %q", code, out)
	}

	img := filepath.Join(t.TempDir(), "disk.img")
	os.WriteFile(img, bytes.Repeat([]byte{1}, 4096), 0o644)
	sum := sha256.Sum256(bytes.Repeat([]byte{1}, 4096))
	job := filepath.Join(t.TempDir(), "never-boots.toml")
	os.WriteFile(job, []byte(fmt.Sprintf("device = \"n1\"\n[deploy]\nimage = %q\nsha256 = %q\n[[test]]\nname = \"t\"\ncommands = [\"true\"]\n", filepath.Base(img), hex.EncodeToString(sum[:]))), 0o644)
	// The image path is relative to the job file, which is elsewhere: the
	// client makes it absolute, and the daemon reads it there.
	os.Rename(img, filepath.Join(filepath.Dir(job), filepath.Base(img)))
	code, out, stderr := runLabctl(t, vars, "submit", "--wait", "--junit", filepath.Join(t.TempDir(), "out", "junit.xml"), job)
	if code != 2 || !strings.Contains(stderr, "master prompt") || !strings.Contains(out, "INCOMPLETE") {
		t.Errorf("submit --wait of a job whose master never boots: exit %d\n%s%s", code, out, stderr)
	}
	dev := waitForDevice(t, vars, "n1", "idle")
	if !strings.Contains(dev, "health:  passed") {
		t.Errorf("n1 after the incomplete job:\n%s", dev)
	}
	if code, out, _ := runLabctl(t, vars, "power", "n1", "status"); code != 0 || out != "n1: off\n" {
		t.Errorf("after the job the node is %q (exit %d), want off", out, code)
	}

	if code, out, _ := runLabctl(t, vars, "device", "n1", "maintenance", "--reason", "new fan"); code != 0 || !strings.Contains(out, "maintenance") || !strings.Contains(out, "new fan (ci)") {
		t.Errorf("device n1 maintenance: %d %q", code, out)
	}
	if code, out, _ := runLabctl(t, vars, "device", "n1", "online"); code != 0 || !strings.Contains(out, "idle") {
		t.Errorf("device n1 online: %d %q", code, out)
	}

	env, _, stderr2 := envWith(nil)
	if err := runServe(context.Background(), serveOptions{lab: labFile, listen: "127.0.0.1:0"}, env); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("a second labctl serve on the same state: %v\n%s", err, stderr2)
	}
}

// waitForDevice waits until labctl device NODE shows state, and returns
// what it printed.
func waitForDevice(t *testing.T, vars map[string]string, node, state string) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		env, stdout, _ := envWith(vars)
		err := runDevice(context.Background(), deviceOptions{node: node, output: outputText}, env)
		if err == nil && strings.Contains(stdout.String(), "state:   "+state+" ") {
			return stdout.String()
		}
		if time.Now().After(deadline) {
			t.Fatalf("device %s: %v\n%s", node, err, stdout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
