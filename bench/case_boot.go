package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"github.com/labctl/labctl"
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

// Run starts a one-node lab with its nfs-ganesha (simlab Options.NFS), runs
// the rounds, stops it.
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

	fmt.Fprintln(logw, "  starting a one-node simulated lab with its nfs-ganesha ...")
	lab, err := upOneNode(ctx, logw, c.Repo, c.Artifacts, filepath.Join(env.Work, "lab-boot"), simlab.Options{NFS: true})
	if err != nil {
		return res, err
	}
	defer lab.Close()
	labConfig := lab.ConfigPath

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
