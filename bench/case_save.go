package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labctl/labctl/results"
	"github.com/labctl/labctl/simlab"
)

// SaveCase measures saving a disk: `labctl save --lab` of one simulated
// node's disk (QEMU under TCG), DiskMiB large with about a quarter of it
// data (the bootable test image, then random bytes, which zstd cannot
// shrink: the network's worst case, in 4 MiB extents with holes between),
// then `labctl run` deploying the saved image back onto the node and
// booting it: the same bytes the other way, in the same run, for the
// ratio.
type SaveCase struct {
	Rounds    int
	Repo      string // the repository: bin/simlab, device-types/
	Labctl    string // the labctl binary
	Artifacts string // simlab artifacts (make artifacts)
	DiskMiB   int
}

// saveRun is one round's figures, seconds and bytes.
type saveRun struct {
	hash, send, phase, deployWrite float64
	disk, stored                   int64
}

var (
	saveHashLine   = regexp.MustCompile(`save: \S+ holds (\d+) bytes, sha256 \S+ on the node \(read in ([0-9hmsµ.]+)\)`)
	saveSendLine   = regexp.MustCompile(`bytes of disk in ([0-9hmsµ.]+) \([0-9.]+ MiB/s\), (\d+) bytes stored`)
	deployWroteRow = regexp.MustCompile(`deploy: wrote the image in ([0-9hmsµ.]+)`)
)

// seconds reads a duration as the job log prints it ("1m3.68s").
func seconds(v string) float64 {
	d, _ := time.ParseDuration(v)
	return d.Seconds()
}

// Run starts a one-node lab with the prepared disk, runs the rounds and
// stops the lab.
func (c SaveCase) Run(ctx context.Context, env *Env, w, logw io.Writer) (CaseResult, error) {
	res := CaseResult{Name: "save"}
	simlabBin := filepath.Join(c.Repo, "bin", "simlab")
	if err := needs([]string{c.Labctl, simlabBin, filepath.Join(c.Artifacts, "bootroot")}, []string{"qemu-system-x86_64", "ipmi_sim", "ipmitool", "zstd"}); err != nil {
		return res, err
	}
	dir := filepath.Join(env.Work, "save")
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	disk := filepath.Join(dir, "disk.img")
	data, err := writeQuarterDisk(disk, int64(c.DiskMiB)<<20, filepath.Join(c.Artifacts, "images", "disk.img"))
	if err != nil {
		return res, err
	}
	fmt.Fprintf(logw, "  starting a one-node simulated lab with a %d MiB disk, %d MiB of it data ...\n", c.DiskMiB, data>>20)
	lab, err := upOneNode(ctx, logw, c.Repo, c.Artifacts, filepath.Join(dir, "lab"), simlab.Options{DiskMiB: c.DiskMiB, DiskImage: disk})
	if err != nil {
		return res, err
	}
	defer lab.Close()
	os.Remove(disk)
	node := lab.Nodes[0]

	var runs []saveRun
	table := &Table{Head: []string{"round", "disk MiB", "data MiB", "stored MiB", "hash s", "send s", "save MiB/s (send)", "save MiB/s (hash + send)", "save phase s", "deploy write s", "deploy MiB/s"}}
	for r := range c.Rounds {
		out := filepath.Join(dir, fmt.Sprintf("r%d.img.zst", r+1))
		run, err := c.saveRound(ctx, lab, node, out, filepath.Join(dir, fmt.Sprintf("save-r%d", r+1)))
		if err != nil {
			return res, err
		}
		job := filepath.Join(dir, fmt.Sprintf("deploy-r%d.toml", r+1))
		os.WriteFile(job, fmt.Appendf(nil, "device = %q\ntimeout = \"30m\"\n[deploy]\nimage = %q\nsha256_file = %q\ntimeout = \"20m\"\n[boot]\npassword = \"test\"\n",
			node.Name, out, strings.TrimSuffix(out, ".zst")+".sha256"), 0o644)
		log, err := runLabctlJob(ctx, c.Labctl, "run", "--quiet", "--lab", lab.ConfigPath, "--dir", filepath.Join(dir, fmt.Sprintf("deploy-r%d", r+1)), job)
		if err != nil {
			return res, err
		}
		if m := deployWroteRow.FindStringSubmatch(log); m != nil {
			run.deployWrite = seconds(m[1])
		}
		mib := float64(run.disk) / (1 << 20)
		fmt.Fprintf(logw, "  r%d: hash %.1fs send %.1fs (%.1f MiB/s raw) stored %.1f MiB; deploy wrote it in %.1fs\n", r+1, run.hash, run.send, mib/run.send, float64(run.stored)/(1<<20), run.deployWrite)
		table.Add(fmt.Sprint(r+1), f(mib, 0), f(float64(data)/(1<<20), 0), f(float64(run.stored)/(1<<20), 1), f(run.hash, 1), f(run.send, 1),
			f(mib/run.send, 1), f(mib/(run.hash+run.send), 1), f(run.phase, 1), f(run.deployWrite, 1), f(mib/max(run.deployWrite, 0.001), 1))
		runs = append(runs, run)
	}

	var sendRate, allRate, deployRate, stored []float64
	for _, r := range runs {
		mib := float64(r.disk) / (1 << 20)
		sendRate = append(sendRate, mib/r.send)
		allRate = append(allRate, mib/(r.hash+r.send))
		deployRate = append(deployRate, mib/max(r.deployWrite, 0.001))
		stored = append(stored, float64(r.stored))
	}
	fmt.Fprintf(w, "### Case save: labctl save of a %d MiB disk, %d MiB of it data (the test image, then random bytes in 4 MiB extents), one node under QEMU TCG\n\n", c.DiskMiB, data>>20)
	table.Write(w)
	fmt.Fprintf(w, "\nMaster: hash pass (dd | sha256sum), then dd | zstd -%s | HTTP/1.1 chunks | nc to the boot server, which unpacks and hashes. Deploy: the saved image back with labctl run (wget | zstd -d | dd, the device type's verify).\n\n", "3")
	st := Median(stored)
	res.Leads = st <= 1.05*float64(data)
	res.Ratio = fmt.Sprintf("save: %.1f MiB/s of raw disk sent (%.1f MiB/s with the hash pass), deploy of the same image %.1f MiB/s (save/deploy %.2f×); stored %.1f MiB for %d MiB of data on a %d MiB disk (target: zeros cost nothing, stored ≤ 1.05× data)",
		Median(sendRate), Median(allRate), Median(deployRate), Median(sendRate)/Median(deployRate), st/(1<<20), data>>20, c.DiskMiB)
	return res, nil
}

// saveRound runs labctl save and reads its figures from the job log.
func (c SaveCase) saveRound(ctx context.Context, lab *simlab.Lab, node *simlab.Node, out, logDir string) (saveRun, error) {
	log, err := runLabctlJob(ctx, c.Labctl, "save", "--quiet", "--lab", lab.ConfigPath, node.Name, "--output", out)
	if err != nil {
		return saveRun{}, err
	}
	var run saveRun
	h := saveHashLine.FindStringSubmatch(log)
	s := saveSendLine.FindStringSubmatch(log)
	if h == nil || s == nil {
		return run, fmt.Errorf("labctl save: no hash or send figures in its log")
	}
	run.disk, _ = strconv.ParseInt(h[1], 10, 64)
	run.hash = seconds(h[2])
	run.send = seconds(s[1])
	run.stored, _ = strconv.ParseInt(s[2], 10, 64)
	if jr, err := readResults(log); err == nil {
		for _, p := range jr.Phases {
			if p.Name == "save" {
				run.phase = p.Duration.Seconds()
			}
		}
	}
	return run, nil
}

// runLabctlJob runs labctl (run or save, --quiet) and returns the job's
// log; the summary's "results: DIR" line says where the job directory is.
func runLabctlJob(ctx context.Context, labctl string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, labctl, args...)
	out, err := cmd.CombinedOutput()
	var dir string
	for _, line := range strings.Split(string(out), "\n") {
		if d, ok := strings.CutPrefix(line, "results: "); ok {
			dir = d
		}
	}
	if err != nil || dir == "" {
		return "", fmt.Errorf("labctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	log, err := os.ReadFile(filepath.Join(dir, "job.log"))
	return string(log) + "\nRESULTS " + filepath.Join(dir, "results.json") + "\n", err
}

// readResults reads the results.json named by runLabctlJob's last line.
func readResults(log string) (*results.Job, error) {
	i := strings.LastIndex(log, "\nRESULTS ")
	if i < 0 {
		return nil, fmt.Errorf("no results")
	}
	f, err := os.Open(strings.TrimSpace(log[i+len("\nRESULTS "):]))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return results.ReadJSON(f)
}

// writeQuarterDisk writes a sparse disk image of size bytes: the bootable
// test image at its start, then every 16 MiB 4 MiB of random bytes; it
// returns the bytes of its 4 KiB blocks that are not all zero.
func writeQuarterDisk(path string, size int64, image string) (int64, error) {
	img, err := os.ReadFile(image)
	if err != nil {
		return 0, err
	}
	fh, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer fh.Close()
	if err := fh.Truncate(size); err != nil {
		return 0, err
	}
	if _, err := fh.WriteAt(img, 0); err != nil {
		return 0, err
	}
	rng := rand.NewChaCha8([32]byte{1})
	buf := make([]byte, 4<<20)
	const stride = 16 << 20
	for off := (int64(len(img)) + stride - 1) / stride * stride; off+int64(len(buf)) <= size; off += stride {
		rng.Read(buf)
		if _, err := fh.WriteAt(buf, off); err != nil {
			return 0, err
		}
	}
	var used int64
	block := make([]byte, 4096)
	for off := int64(0); off < size; off += int64(len(block)) {
		n, err := fh.ReadAt(block, off)
		if n > 0 && slices.ContainsFunc(block[:n], func(b byte) bool { return b != 0 }) {
			used += int64(n)
		}
		if err != nil {
			break
		}
	}
	return used, fh.Close()
}
