package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/netboot"
	"github.com/labctl/labctl/simlab"
)

// LAVA's dispatcher as the bench runs it: Debian's lava-run, unpacked from
// its .debs (never installed: the packages pull systemd-sysv and
// libguestfs), run by /usr/bin/python3 with the unpacked dist-packages on
// PYTHONPATH, against the same simlab node as labctl. LAVA serves no PXE
// files, so while it runs the bench plays the lab's boot server (tftpd-hpa
// and busybox httpd on the node's boot-server ports, serving the master
// entry labctl would generate) and the worker's Apache (busybox httpd on
// LAVA's download directory).

// lavaPythonModules are the modules lava-run imports, with the Debian
// packages that have them (bench.mk installs them).
var lavaPythonModules = [][2]string{
	{"pexpect", "python3-pexpect"}, {"yaml", "python3-yaml"}, {"jinja2", "python3-jinja2"},
	{"voluptuous", "python3-voluptuous"}, {"requests", "python3-requests"},
	{"setproctitle", "python3-setproctitle"}, {"netifaces", "python3-netifaces"},
	{"pyudev", "python3-pyudev"}, {"magic", "python3-magic"}, {"configobj", "python3-configobj"},
	{"pytz", "python3-tz"}, {"aiohttp", "python3-aiohttp"},
}

// lavaPython is the interpreter lava-run runs under: Debian's, whose
// dist-packages hold the modules above (a pyenv python would not see them).
const lavaPython = "/usr/bin/python3"

// lavaDownloadDir is where lava-run keeps downloads and the test overlay
// (fixed in lava_common/constants.py); the worker's HTTP role serves it.
const lavaDownloadDir = "/var/lib/lava/dispatcher"

// lavaFixLine is upstream's fix (commit 0a3131ff0, release 2025.10):
// pexpect sleeps delaybeforesend (50 ms) before every write, and LAVA
// writes one character at a time.
const lavaFixLine = "        self.delaybeforesend = None\n"

// lavaVariant is one LAVA to run: a name for the report and the
// dist-packages directory it runs from.
type lavaVariant struct {
	Name string
	Dist string
}

// lavaSetup is LAVA made ready to run against one simlab node.
type lavaSetup struct {
	Root     string // the unpacked .debs
	Variants []lavaVariant
	work     string // this run's LAVA files: templates, devices, jobs, logs
	stub     string // guestfs.py stand-in
	fakebin  string // a no-op udevadm
	image    string // the gzip disk image LAVA deploys
	node     *simlab.Node
	// boot server: where the node loads its master from
	bootRoot, tftpAddr, httpAddr string
	// workerPort serves lavaDownloadDir (LAVA's "tmp/" URLs)
	workerPort  int
	madeLibLava bool
	jobID       int
}

// prepareLAVA checks that LAVA can run here and makes its files: the
// variant with upstream's fix, the device-type templates, the boot root
// with the master entry. An error wraps ErrSkipped when a part is missing.
func prepareLAVA(root, shared, work, image, labDir, labConfig string) (*lavaSetup, error) {
	dist := filepath.Join(root, "usr", "lib", "python3", "dist-packages")
	lavaRun := filepath.Join(root, "usr", "bin", "lava-run")
	for _, p := range []string{lavaRun, filepath.Join(dist, "lava_dispatcher", "shell.py"), filepath.Join(root, "usr", "share", "lava-server", "device-types", "x86.jinja2")} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("%w: %s missing (make bench unpacks lava-dispatcher, lava-common, lava-dispatcher-host and lava-server 2023.01 from Debian)", ErrSkipped, p)
		}
	}
	var imports []string
	for _, m := range lavaPythonModules {
		imports = append(imports, m[0])
	}
	if out, err := exec.Command(lavaPython, "-c", "import "+strings.Join(imports, ", ")).CombinedOutput(); err != nil {
		var pkgs []string
		for _, m := range lavaPythonModules {
			pkgs = append(pkgs, m[1])
		}
		return nil, fmt.Errorf("%w: %s cannot import LAVA's modules (Debian packages %s): %s", ErrSkipped, lavaPython, strings.Join(pkgs, " "), lastLine(string(out)))
	}
	for _, bin := range []string{"in.tftpd", "busybox", "ipmitool"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("%w: %s not installed (make deps)", ErrSkipped, bin)
		}
	}
	l := &lavaSetup{Root: root, work: work, image: image, jobID: 1000}
	fixDist, err := lavaFixVariant(dist, filepath.Join(shared, filepath.Base(root)+"-fix", "dist-packages"))
	if err != nil {
		return nil, err
	}
	for _, d := range []string{dist, fixDist} {
		// As an installed package would be: compiled once, not at every start.
		if out, err := exec.Command(lavaPython, "-m", "compileall", "-q", d).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("compileall %s: %v: %s", d, err, out)
		}
	}
	l.Variants = []lavaVariant{{"LAVA 2023.01", dist}, {"LAVA 2023.01 + fix", fixDist}}

	l.stub, l.fakebin = filepath.Join(work, "stub"), filepath.Join(work, "bin")
	for _, d := range []string{l.stub, l.fakebin, filepath.Join(work, "device-types")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	// guestfs is imported by the deploy code, never used by this job.
	if err := os.WriteFile(filepath.Join(l.stub, "guestfs.py"), []byte("class GuestFS:\n    def __init__(self, *a, **k):\n        raise RuntimeError(\"guestfs stub\")\n"), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(l.fakebin, "udevadm"), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		return nil, err
	}
	if err := l.writeTemplates(); err != nil {
		return nil, err
	}
	lab, err := simlab.OpenLab(labDir)
	if err != nil {
		return nil, err
	}
	l.node = lab.Nodes[0]
	if err := l.writeBootRoot(labConfig); err != nil {
		return nil, err
	}
	if l.workerPort, err = freePort(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Dir(lavaDownloadDir)); errors.Is(err, os.ErrNotExist) {
		l.madeLibLava = true
	}
	if err := os.MkdirAll(lavaDownloadDir, 0o755); err != nil {
		return nil, err
	}
	return l, nil
}

// lavaFixVariant makes (once) a copy of dist with upstream's pexpect fix
// in ShellCommand.__init__.
func lavaFixVariant(dist, fix string) (string, error) {
	shell := filepath.Join(fix, "lava_dispatcher", "shell.py")
	if b, err := os.ReadFile(shell); err == nil && strings.Contains(string(b), lavaFixLine) {
		return fix, nil
	}
	os.RemoveAll(fix)
	if err := os.MkdirAll(filepath.Dir(fix), 0o755); err != nil {
		return "", err
	}
	tmp := fix + ".tmp"
	os.RemoveAll(tmp)
	if out, err := exec.Command("cp", "-a", dist, tmp).CombinedOutput(); err != nil {
		return "", fmt.Errorf("copy LAVA for the fix: %v: %s", err, out)
	}
	p := filepath.Join(tmp, "lava_dispatcher", "shell.py")
	b, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	src := string(b)
	cls := strings.Index(src, "class ShellCommand(")
	anchor := "        self.lava_timeout = lava_timeout\n"
	at := strings.Index(src[max(cls, 0):], anchor)
	if cls < 0 || at < 0 {
		return "", fmt.Errorf("%w: LAVA's shell.py has no ShellCommand.__init__ to apply upstream's fix to", ErrSkipped)
	}
	at += cls + len(anchor)
	if err := os.WriteFile(p, []byte(src[:at]+lavaFixLine+src[at:]), 0o644); err != nil {
		return "", err
	}
	return fix, os.Rename(tmp, fix)
}

// writeTemplates copies lava-server's base.jinja2 and x86.jinja2, the
// latter with the two methods this job uses (minimal boot, overlay deploy).
func (l *lavaSetup) writeTemplates() error {
	src := filepath.Join(l.Root, "usr", "share", "lava-server", "device-types")
	dst := filepath.Join(l.work, "device-types")
	base, err := os.ReadFile(filepath.Join(src, "base.jinja2"))
	if err != nil {
		return err
	}
	x86, err := os.ReadFile(filepath.Join(src, "x86.jinja2"))
	if err != nil {
		return err
	}
	t := string(x86)
	for _, r := range [][2]string{
		{"  deploy:\n    methods:\n", "  deploy:\n    methods:\n      overlay:\n"},
		{"  boot:\n    connections:\n      serial:\n    methods:\n", "  boot:\n    connections:\n      serial:\n    methods:\n      minimal:\n"},
	} {
		if !strings.Contains(t, r[0]) {
			return fmt.Errorf("%w: x86.jinja2 has no %q to add to", ErrSkipped, r[0])
		}
		t = strings.Replace(t, r[0], r[1], 1)
	}
	if err := os.WriteFile(filepath.Join(dst, "base.jinja2"), base, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dst, "x86.jinja2"), []byte(t), 0o644)
}

// writeBootRoot makes the boot root the node PXE-boots from while LAVA
// runs: the lab's, plus pxelinux.cfg/default holding the master entry
// labctl's boot server generates for the node.
func (l *lavaSetup) writeBootRoot(labConfig string) error {
	lab, err := devices.Load(labConfig)
	if err != nil {
		return err
	}
	if len(lab.Devices) == 0 {
		return errors.New("lab has no devices")
	}
	d := lab.Devices[0]
	bs := lab.BootServer
	l.tftpAddr, l.httpAddr = bs.TFTPListen, bs.HTTPListen
	l.bootRoot = filepath.Join(l.work, "bootroot")
	os.RemoveAll(l.bootRoot)
	if out, err := exec.Command("cp", "-rL", bs.Root, l.bootRoot).CombinedOutput(); err != nil {
		return fmt.Errorf("copy the boot root: %v: %s", err, out)
	}
	srv, err := netboot.New(netboot.Config{Root: l.bootRoot, HTTPAddr: "127.0.0.1:0", HTTPURL: bs.HTTPURL}, nil)
	if err != nil {
		return err
	}
	defer srv.Close()
	m := d.Settings.Master
	mac := net.HardwareAddr(d.MAC)
	if err := srv.SetNode(mac, nil, netboot.MasterEntry(m.Kernel, m.Initrd, m.Append)); err != nil {
		return err
	}
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/pxelinux.cfg/01-"+strings.ReplaceAll(mac.String(), ":", "-"), nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "KERNEL") {
		return fmt.Errorf("the boot server gave no master entry for %s: %d %s", d.Name, rec.Code, rec.Body.String())
	}
	cfg := filepath.Join(l.bootRoot, "pxelinux.cfg")
	if err := os.MkdirAll(cfg, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(cfg, "default"), rec.Body.Bytes(), 0o644)
}

// ipmitool is the node's ipmitool command line (password from
// IPMI_PASSWORD), for LAVA's device dictionary.
func (l *lavaSetup) ipmitool(args string) string {
	b := l.node.BMC
	return fmt.Sprintf("ipmitool -I lanplus -C 3 -H %s -p %d -U %s -E %s", b.Host, b.Port, b.User, args)
}

// renderDevice renders the node's device dictionary with lava-server's
// templates, as lava-server would (sandboxed jinja2, trim_blocks), at the
// given character delays in ms.
func (l *lavaSetup) renderDevice(delayMS int) (string, error) {
	dict := fmt.Sprintf(`{%% extends 'x86.jinja2' %%}
{%% set connection_command = '%[1]s' %%}
{%% set power_off_command = '%[2]s' %%}
{%% set power_on_command = '%[3]s' %%}
{%% set hard_reset_command = ['%[2]s', '%[3]s'] %%}
{%% set user_commands = {'bootdev_pxe': {'do': '%[4]s'}, 'bootdev_disk': {'do': '%[5]s'}} %%}
{%% set sata_uuid = '../../vda' %%}
{%% set sata_label = 'vda' %%}
{%% set boot_character_delay = %[6]d %%}
{%% set test_character_delay = %[6]d %%}
`, l.ipmitool("sol activate"), l.ipmitool("chassis power off"), l.ipmitool("chassis power on"),
		l.ipmitool("chassis bootdev pxe"), l.ipmitool("chassis bootdev disk"), delayMS)
	name := fmt.Sprintf("device-%dms", delayMS)
	dictPath := filepath.Join(l.work, name+".jinja2")
	if err := os.WriteFile(dictPath, []byte(dict), 0o644); err != nil {
		return "", err
	}
	const render = `import sys, jinja2.sandbox
env = jinja2.sandbox.SandboxedEnvironment(loader=jinja2.FileSystemLoader([sys.argv[1], sys.argv[2]]), trim_blocks=True, autoescape=False)
sys.stdout.write(env.get_template(sys.argv[3]).render())
`
	out, err := exec.Command(lavaPython, "-c", render, filepath.Join(l.work, "device-types"), l.work, filepath.Base(dictPath)).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%v: %s", err, ee.Stderr)
		}
		return "", fmt.Errorf("render LAVA's device: %w", err)
	}
	p := filepath.Join(l.work, name+".yaml")
	return p, os.WriteFile(p, out, 0o644)
}

// lavaJob is the bench's job for LAVA, in two namespaces (a test beside a
// sata deploy would make LAVA apply its overlay to the image with
// libguestfs): master boots the busybox master over PXE and writes the
// image with wget | dd; disk boots the disk, logs in, fetches the test
// overlay and runs the three test commands labctl's job runs.
// kernel-start-message is empty: the simlab kernels boot with quiet and
// never print the "Linux version" LAVA would wait for.
const lavaJob = `device_type: x86
job_name: labctl-bench end to end
priority: medium
visibility: public
timeouts:
  job: {minutes: 15}
  action: {minutes: 5}
  connection: {minutes: 2}
actions:
- command:
    namespace: master
    name: bootdev_pxe
- boot:
    namespace: master
    method: minimal
    parameters:
      kernel-start-message: ''
    prompts: ['master# ']
    timeout: {minutes: 3}
- deploy:
    namespace: master
    to: sata
    device: vda
    timeout: {minutes: 1}
    images:
      image:
        url: file://%s
        compression: gz
    download:
      tool: /bin/wget
      options: -O - {DOWNLOAD_URL}
      prompt: Connecting to
    writer:
      tool: /bin/dd
      options: of={DEVICE} bs=4M conv=fsync
      prompt: records out
- command:
    namespace: master
    name: bootdev_disk
- deploy:
    namespace: disk
    to: overlay
    timeout: {minutes: 1}
- boot:
    namespace: disk
    connection-namespace: master
    method: minimal
    parameters:
      kernel-start-message: ''
    auto_login:
      login_prompt: 'login: '
      username: root
      password_prompt: 'Password: '
      password: test
    prompts: ['testos# ']
    transfer_overlay:
      download_command: cd /tmp && wget
      unpack_command: tar -C / -xzf
    timeout: {minutes: 3}
- test:
    namespace: disk
    timeout: {minutes: 3}
    definitions:
    - from: inline
      name: smoke
      path: inline/smoke.yaml
      repository:
        metadata:
          format: Lava-Test Test Definition 1.0
          name: smoke
          description: the bench's three test commands
        run:
          steps:
          - lava-test-case uname --shell uname -a
          - lava-test-case disk --shell grep -q vda /proc/partitions
          - lava-test-case network --shell 'ip route | grep -q default'
`

// files writes the job and the dispatcher config.
func (l *lavaSetup) files() (job, dispatcher string, err error) {
	job = filepath.Join(l.work, "job.yaml")
	dispatcher = filepath.Join(l.work, "dispatcher.yaml")
	if err := os.WriteFile(job, fmt.Appendf(nil, lavaJob, l.image), 0o644); err != nil {
		return "", "", err
	}
	d := fmt.Sprintf("dispatcher_ip: 10.0.2.2\ndispatcher_http_ip: \"10.0.2.2:%d\"\n", l.workerPort)
	return job, dispatcher, os.WriteFile(dispatcher, []byte(d), 0o644)
}

// env is lava-run's environment for variant v.
func (l *lavaSetup) env(v lavaVariant) []string {
	return []string{
		"PATH=" + l.fakebin + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"PYTHONPATH=" + v.Dist + ":" + l.stub,
		"IPMI_PASSWORD=" + l.node.BMC.Password,
		"LANG=C.UTF-8", "HOME=/root",
	}
}

// Validate runs lava-run --validate for every variant (the node must be
// up: an unreachable URL would be retried for ten minutes).
func (l *lavaSetup) Validate(ctx context.Context) error {
	dev, err := l.renderDevice(10)
	if err != nil {
		return err
	}
	job, disp, err := l.files()
	if err != nil {
		return err
	}
	for _, v := range l.Variants {
		l.jobID++
		out := filepath.Join(l.work, fmt.Sprintf("validate-%d", l.jobID))
		cmd := exec.CommandContext(ctx, lavaPython, filepath.Join(l.Root, "usr", "bin", "lava-run"), "--validate",
			"--job-id", strconv.Itoa(l.jobID), "--output-dir", out, "--device", dev, "--dispatcher", disp, job)
		cmd.Env = l.env(v)
		b, err := cmd.CombinedOutput()
		os.WriteFile(out+".log", b, 0o644)
		os.RemoveAll(filepath.Join(lavaDownloadDir, "tmp", strconv.Itoa(l.jobID)))
		if err != nil {
			r := readLAVALog(out+".log", filepath.Join(out, "result.yaml"))
			return fmt.Errorf("%w: %s does not validate the bench's job: %v: %s (log: %s.log)", ErrSkipped, v.Name, err, r.reason, out)
		}
	}
	return nil
}

// Close removes what the runs left in LAVA's download directory.
func (l *lavaSetup) Close() {
	if l.madeLibLava {
		os.RemoveAll(filepath.Dir(lavaDownloadDir))
	}
}

// helper is a process the bench starts for LAVA (boot server, worker HTTP).
type helper struct{ cmd *exec.Cmd }

func (l *lavaSetup) startHelpers(g *Group, logDir string) ([]*helper, error) {
	var hs []*helper
	argvs := [][]string{
		{"in.tftpd", "-4", "-L", "-a", l.tftpAddr, "-s", l.bootRoot},
		{"busybox", "httpd", "-f", "-p", l.httpAddr, "-h", l.bootRoot},
		{"busybox", "httpd", "-f", "-p", fmt.Sprintf("127.0.0.1:%d", l.workerPort), "-h", lavaDownloadDir},
	}
	for i, argv := range argvs {
		cmd := g.Command(argv...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		logf, err := os.Create(filepath.Join(logDir, fmt.Sprintf("helper-%d.log", i)))
		if err != nil {
			stopHelpers(hs)
			return nil, err
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		err = cmd.Start()
		logf.Close()
		if err != nil {
			stopHelpers(hs)
			return nil, fmt.Errorf("start %s: %w", argv[0], err)
		}
		hs = append(hs, &helper{cmd})
	}
	// Wait until the HTTP ports answer (in.tftpd binds before it forks).
	deadline := time.Now().Add(5 * time.Second)
	for _, addr := range []string{l.httpAddr, fmt.Sprintf("127.0.0.1:%d", l.workerPort)} {
		for {
			c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				stopHelpers(hs)
				return nil, fmt.Errorf("busybox httpd on %s does not answer", addr)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return hs, nil
}

func stopHelpers(hs []*helper) {
	for _, h := range hs {
		syscall.Kill(-h.cmd.Process.Pid, syscall.SIGKILL)
		h.cmd.Wait()
	}
}

// lavaRun is one lava-run: its measurements and what its log says.
type lavaRun struct {
	e2eRun
	tests  string // "3/3 pass"
	reason string // why it failed, from its log
}

// Run runs the job once with variant v at the given character delay, in
// a control group with its helpers: the CPU counted is lava-run's, every
// ipmitool it starts, and the boot and worker HTTP servers (busybox httpd
// never reaps its children, so their time would escape a wait-based count).
func (l *lavaSetup) Run(ctx context.Context, v lavaVariant, delayMS int, dir string) (lavaRun, error) {
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return lavaRun{}, err
	}
	dev, err := l.renderDevice(delayMS)
	if err != nil {
		return lavaRun{}, err
	}
	job, disp, err := l.files()
	if err != nil {
		return lavaRun{}, err
	}
	l.jobID++
	id := strconv.Itoa(l.jobID)
	defer os.RemoveAll(filepath.Join(lavaDownloadDir, "tmp", id))
	g := NewGroup("lava-run")
	hs, err := l.startHelpers(g, dir)
	if err != nil {
		g.Remove()
		return lavaRun{}, err
	}
	defer func() {
		stopHelpers(hs)
		if g.dir != "" {
			for _, p := range g.Pids() { // anything lava-run left behind
				syscall.Kill(p, syscall.SIGKILL)
			}
			time.Sleep(100 * time.Millisecond)
		}
		g.Remove()
	}()
	logPath := filepath.Join(dir, "lava-run.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return lavaRun{}, err
	}
	defer logf.Close()
	cmd := g.Command(lavaPython, filepath.Join(l.Root, "usr", "bin", "lava-run"),
		"--job-id", id, "--output-dir", filepath.Join(dir, "out"), "--device", dev, "--dispatcher", disp, job)
	cmd.Env = l.env(v)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	m, werr := measure(ctx, g, cmd)
	if m.err != nil {
		return lavaRun{}, m.err
	}
	r := readLAVALog(logPath, filepath.Join(dir, "out", "result.yaml"))
	run := lavaRun{e2eRun: m.e2eRun, tests: r.tests, reason: r.reason}
	run.outcome = r.result
	if werr != nil && run.reason == "" {
		run.reason = werr.Error()
	}
	return run, nil
}

// lavaLog is what the bench reads from a lava-run log.
type lavaLog struct {
	result string // "pass", "fail", or "no result"
	tests  string // "3/3 pass"
	reason string // error_msg and the console's last line before it
}

// yamlEscapes turns the escapes of YAML's double-quoted style that JSON
// lacks into JSON's, and drops the non-specific tag ("! ") LAVA puts on
// some numbers.
var yamlEscapes = strings.NewReplacer(`\\`, `\\`, `\"`, `\"`, `! "`, `"`, `\x`, `\u00`, `\e`, `\u001b`, `\0`, `\u0000`,
	`\a`, `\u0007`, `\v`, `\u000b`, `\_`, `\u00a0`, `\N`, `\u0085`, `\L`, `\u2028`, `\P`, `\u2029`, `\ `, ` `, `\	`, `\t`)

// readLAVALog reads lava-run's log (one YAML flow mapping per line, all
// strings double-quoted: JSON but for some escapes) and result.yaml.
func readLAVALog(logPath, resultPath string) lavaLog {
	r := lavaLog{result: "no result"}
	if b, err := os.ReadFile(resultPath); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "result: "); ok {
				r.result = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(line, "error_msg: "); ok {
				r.reason = strings.Trim(strings.TrimSpace(v), `"'`)
			}
		}
	}
	f, err := os.Open(logPath)
	if err != nil {
		return r
	}
	defer f.Close()
	var pass, total int
	var lastTarget, lastInput, lastError string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := strings.TrimPrefix(sc.Text(), "- ")
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var rec struct {
			Lvl string          `json:"lvl"`
			Msg json.RawMessage `json:"msg"`
		}
		if json.Unmarshal([]byte(yamlEscapes.Replace(line)), &rec) != nil {
			continue
		}
		var msg string
		json.Unmarshal(rec.Msg, &msg)
		switch rec.Lvl {
		case "target":
			if s := strings.TrimSpace(msg); s != "" {
				lastTarget = s
			}
		case "input":
			if s := strings.TrimSpace(msg); s != "" {
				lastInput = s
			}
		case "error":
			if s := strings.TrimSpace(msg); s != "" && lastError == "" {
				lastError = s
			}
		case "results":
			var res map[string]any
			if json.Unmarshal(rec.Msg, &res) == nil && res["definition"] != "lava" {
				total++
				if res["result"] == "pass" {
					pass++
				}
			}
		}
	}
	r.tests = fmt.Sprintf("%d/%d pass", pass, total)
	if r.result != "pass" {
		if r.reason == "" {
			r.reason = lastError
		}
		if lastInput != "" {
			r.reason += fmt.Sprintf("; the last line LAVA typed: %q (%d bytes)", clip(lastInput, 60), len(lastInput)+1)
		}
		if lastTarget != "" {
			r.reason += fmt.Sprintf("; the console's last line: %q", clip(lastTarget, 60))
		}
	}
	return r
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// freePort returns a TCP port on 127.0.0.1 that nothing listens on now.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// measured is one process run in a group: wall, CPU of the group, the
// largest process's peak RSS.
type measured struct {
	e2eRun
	err error
}

// measure starts cmd (made by g.Command) and waits for it, sampling the
// group's processes for their peak RSS. CPU is the group's over the run
// (without a cgroup: the process's own rusage, children included).
func measure(ctx context.Context, g *Group, cmd *exec.Cmd) (measured, error) {
	cpu0 := g.CPU()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return measured{err: err}, nil
	}
	if g.pid == 0 {
		g.SetPid(cmd.Process.Pid)
	}
	var peak, anon int64
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tk := time.NewTicker(200 * time.Millisecond)
	defer tk.Stop()
	var werr error
loop:
	for {
		for _, p := range g.Pids() {
			peak = max(peak, RSSKB(p, true))
			anon = max(anon, statusKB(p, "RssAnon:"))
		}
		select {
		case werr = <-done:
			break loop
		case <-tk.C:
		case <-ctx.Done():
			syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		}
	}
	wall := time.Since(start).Seconds()
	cpu := g.CPU() - cpu0
	if g.dir == "" {
		if st, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			cpu = tv(st.Utime) + tv(st.Stime)
			peak = max(peak, st.Maxrss)
		}
	}
	return measured{e2eRun: e2eRun{wall: wall, cpu: cpu, rssMB: float64(peak) / 1024, anonMB: float64(anon) / 1024}}, werr
}

// statusKB reads one "Key: N kB" line of /proc/PID/status; 0 if the
// process is gone.
func statusKB(pid int, key string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key); ok {
			if f := strings.Fields(v); len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// resetNode ends any SOL session and powers the node off, as a lab does
// between jobs (outside the timed run).
func resetNode(ctx context.Context, n *simlab.Node) {
	for _, args := range [][]string{{"sol", "deactivate"}, {"chassis", "power", "off"}} {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		n.IPMITool(c, args...)
		cancel()
	}
	time.Sleep(500 * time.Millisecond)
}
