package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/nfs"
	"github.com/labctl/labctl/simlab"
)

// BootCase is case 6: the same test OS booted three ways on one simulated
// node, by `labctl run`: from disk (after a deploy), over NFS (root
// archive on a real nfs-ganesha) and from RAM (initramfs over HTTP). It
// measures power-on to a logged-in shell, as the job log records it
// ("boot: logged in as root, 21.95s after power on").
type BootCase struct {
	Rounds int
	// Methods are the boots to run (of "disk", "nfs", "ramdisk"); empty:
	// all three. Quick mode leaves the disk boot out: its deploy is what
	// case 5 already proves, and costs the most.
	Methods   []string
	Repo      string // bin/simlab, device-types/
	Labctl    string
	Artifacts string // simlab artifacts (make artifacts)
}

// The boot methods, in the report's order.
var bootMethods = []string{"disk", "nfs", "ramdisk"}

var loggedIn = regexp.MustCompile(`boot: logged in as \S+, (\S+) after `)

// Run starts a one-node lab and a ganesha, runs the rounds, stops both.
func (c BootCase) Run(ctx context.Context, env *Env, w, logw io.Writer) (CaseResult, error) {
	res := CaseResult{Name: "6 boot methods"}
	simlabBin := filepath.Join(c.Repo, "bin", "simlab")
	dl := filepath.Join(c.Artifacts, "diskless")
	image := filepath.Join(c.Artifacts, "images", "disk.img.gz")
	sum := filepath.Join(c.Artifacts, "images", "disk.img.sha256")
	files := []string{c.Labctl, simlabBin, image, sum, filepath.Join(dl, "vmlinuz"), filepath.Join(dl, "testos.gz"), filepath.Join(dl, "nfsroot.gz"), filepath.Join(dl, "root.tar.zst")}
	if err := needs(files, []string{"qemu-system-x86_64", "ipmi_sim", "ipmitool", "ganesha.nfsd"}); err != nil {
		return res, err
	}
	dir := filepath.Join(env.Work, "boot")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}

	gan, err := startGanesha(ctx, filepath.Join(dir, "ganesha"))
	if err != nil {
		return res, err
	}
	defer gan.stop()

	fmt.Fprintln(logw, "  starting a one-node simulated lab ...")
	lab, err := upOneNode(ctx, logw, c.Repo, c.Artifacts, filepath.Join(env.Work, "lab-boot"), simlab.Options{})
	if err != nil {
		return res, err
	}
	defer lab.Close()
	labConfig := lab.ConfigPath
	lf, err := os.OpenFile(labConfig, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return res, err
	}
	fmt.Fprintf(lf, "\n[nfs]\nserver = \"ganesha\"\nexports_dir = %q\npid_file = %q\nlog_file = %q\nhost = \"10.0.2.2\"\nport = %d\nclient = \"127.0.0.1\"\n",
		gan.exports, gan.pidFile, gan.logFile, gan.port)
	lf.Close()

	jobs := map[string]string{}
	for _, m := range bootMethods {
		var boot string
		switch m {
		case "disk":
			boot = fmt.Sprintf("[deploy]\nimage = %q\nsha256_file = %q\n[boot]\n", image, sum)
		case "nfs":
			boot = fmt.Sprintf("[boot]\nmethod = \"nfs\"\nkernel = %q\ninitrd = %q\nroot = %q\n", filepath.Join(dl, "vmlinuz"), filepath.Join(dl, "nfsroot.gz"), filepath.Join(dl, "root.tar.zst"))
		case "ramdisk":
			boot = fmt.Sprintf("[boot]\nmethod = \"ramdisk\"\nkernel = %q\ninitrd = %q\n", filepath.Join(dl, "vmlinuz"), filepath.Join(dl, "testos.gz"))
		}
		jobs[m] = filepath.Join(dir, "job-"+m+".toml")
		text := fmt.Sprintf("name = \"bench-boot-%s\"\ndevice_type = \"simlab-qemu\"\ntimeout = \"20m\"\n%spassword = \"test\"\n[[test]]\nname = \"shell\"\ncommands = [\"true\"]\n", m, boot)
		if err := os.WriteFile(jobs[m], []byte(text), 0o644); err != nil {
			return res, err
		}
	}

	methods := c.Methods
	if len(methods) == 0 {
		methods = bootMethods
	}
	times := map[string][]float64{}
	perRound := &Table{Head: []string{"round", "boot", "power-on → shell s", "job wall s", "outcome"}}
	for r := 0; r < c.Rounds; r++ {
		for _, m := range rotate(methods, r) {
			fmt.Fprintf(logw, "  round %d: %s boot ...\n", r+1, m)
			jd := filepath.Join(dir, fmt.Sprintf("%s-r%d", m, r))
			start := time.Now()
			secs, err := runBootJob(ctx, c.Labctl, labConfig, jobs[m], jd)
			if err != nil {
				return res, fmt.Errorf("%s boot, round %d: %w", m, r+1, err)
			}
			perRound.Add(strconv.Itoa(r+1), m, f(secs, 2), f(time.Since(start).Seconds(), 1), string(labctl.Complete))
			times[m] = append(times[m], secs)
		}
	}
	fmt.Fprintln(w, "### Case 6: boot methods (power-on to logged-in shell, one simlab node, QEMU "+accelName()+")")
	fmt.Fprintln(w)
	perRound.Write(w)
	sum6 := &Table{Head: []string{"boot", "median s", "min s", "max s", "vs disk"}}
	disk := Median(times["disk"]) // NaN without disk boots: ratios print "–"
	for _, m := range methods {
		s := Summarize(times[m])
		sum6.Add(m, f(s.Med, 2), f(s.Min, 2), f(s.Max, 2), Ratio(s.Med, disk))
	}
	sum6.Write(w)
	nfsMed, ramMed := Median(times["nfs"]), Median(times["ramdisk"])
	// Every boot completed (runBootJob fails otherwise); the figures have
	// no target: they say what a boot method costs.
	res.Leads = true
	if math.IsNaN(disk) {
		res.Ratio = fmt.Sprintf("case 6 (boot methods): power-on to shell: NFS %ss, ramdisk %ss; disk boot not run (quick mode) (figures, no target)", f(nfsMed, 1), f(ramMed, 1))
	} else {
		res.Ratio = fmt.Sprintf("case 6 (boot methods): power-on to shell: disk %ss, NFS %ss = %s of disk, ramdisk %ss = %s of disk (figures, no target)",
			f(disk, 1), f(nfsMed, 1), Ratio(nfsMed, disk), f(ramMed, 1), Ratio(ramMed, disk))
	}
	return res, nil
}

// runBootJob runs one job with labctl run and returns the job log's
// power-on to logged-in time.
func runBootJob(ctx context.Context, labctl, labConfig, job, dir string) (float64, error) {
	os.RemoveAll(dir)
	log, err := runLabctlJob(ctx, labctl, "run", "--quiet", "--lab", labConfig, "--dir", dir, job)
	if err != nil {
		return 0, err
	}
	m := loggedIn.FindStringSubmatch(log)
	if m == nil {
		return 0, fmt.Errorf("no \"logged in\" line in %s", filepath.Join(dir, "job.log"))
	}
	d, err := time.ParseDuration(m[1])
	return d.Seconds(), err
}

// ganesha is the case's own nfs-ganesha.
type ganesha struct {
	cmd                       *exec.Cmd
	exports, pidFile, logFile string
	port                      int
	done                      chan error
}

// startGanesha starts ganesha.nfsd on a free loopback port with its
// configuration, recovery data, pid file and log under dir.
func startGanesha(ctx context.Context, dir string) (*ganesha, error) {
	os.RemoveAll(dir)
	g := &ganesha{exports: filepath.Join(dir, "exports"), pidFile: filepath.Join(dir, "ganesha.pid"), logFile: filepath.Join(dir, "ganesha.log"), done: make(chan error, 1)}
	if err := os.MkdirAll(g.exports, 0o700); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	g.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	index := filepath.Join(g.exports, "exports.conf")
	if err := os.WriteFile(index, nil, 0o600); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "ganesha.conf")
	if err := os.WriteFile(conf, []byte(nfs.MainConfig("127.0.0.1", g.port, filepath.Join(dir, "recovery"), index)), 0o600); err != nil {
		return nil, err
	}
	g.cmd = exec.Command("ganesha.nfsd", "-F", "-f", conf, "-L", g.logFile, "-p", g.pidFile)
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := g.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start ganesha.nfsd: %w", err)
	}
	go func() { g.done <- g.cmd.Wait() }()
	deadline := time.After(time.Minute)
	for {
		if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(g.port)), time.Second); err == nil {
			c.Close()
			if _, err := os.Stat(g.pidFile); err == nil {
				return g, nil
			}
		}
		select {
		case err := <-g.done:
			return nil, fmt.Errorf("ganesha.nfsd exited: %v (log %s)", err, g.logFile)
		case <-deadline:
			g.stop()
			return nil, fmt.Errorf("ganesha.nfsd did not listen on port %d within a minute (log %s)", g.port, g.logFile)
		case <-ctx.Done():
			g.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (g *ganesha) stop() {
	syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL)
	<-g.done
}
