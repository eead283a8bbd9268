package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/labctl/labctl/results"
	"github.com/labctl/labctl/simlab"
)

// E2ECase is case 5: the same job (write the test image, boot it, log in,
// run three commands) on one simulated node (ipmi_sim + QEMU), run by
// `labctl run` and by LAVA's lava-run, rounds interleaved. Each dispatcher
// runs as a process tree of its own in a control group, so that its CPU
// time covers everything it spawns (ipmitool, the SOL client, LAVA's
// helper servers) and nothing of the node (QEMU, ipmi_sim). With Lossy,
// the same job then runs on the node with a console that drops input
// while more than 4 typed bytes are un-echoed.
type E2ECase struct {
	Rounds    int
	Repo      string // the repository: bin/simlab, device-types/
	Labctl    string // the labctl binary
	Artifacts string // simlab artifacts (make artifacts)
	// LAVA is Debian's LAVA 2023.01 unpacked (lava-dispatcher, lava-common,
	// lava-dispatcher-host, lava-server); empty: LAVA is not run, for
	// NoLAVA's reason.
	LAVA   string
	NoLAVA string
	// Readback adds labctl with readback verification; Lossy adds the
	// lossy-console runs.
	Readback, Lossy bool
}

// lossyUnechoed is the lossy console's window: input arriving while more
// than this many typed bytes are un-echoed is dropped. 4 is the smallest
// at which the 4-character password (never echoed) gets through at all.
const lossyUnechoed = 4

// lossyDelays are LAVA's character delays (ms) on the lossy console.
var lossyDelays = []int{10, 100, 500}

type e2eRun struct {
	wall, cpu, rssMB float64
	// anonMB is the largest process's private anonymous memory (RssAnon:
	// heap and stacks), sampled: rssMB's peak also counts the pages of
	// the program's own files it has mapped (a Go binary's code and
	// tables, Python's interpreter and libraries).
	anonMB  float64
	phases  map[string]float64
	outcome string
}

// The dispatchers of the clean-node rounds, in the report's order.
const (
	rowLAVA     = "LAVA 2023.01"
	rowLAVAFix  = "LAVA 2023.01 + fix"
	rowStream   = "labctl (verify stream)"
	rowReadback = "labctl (verify readback)"
	rowLossy    = "labctl (verify stream), lossy node"
)

// e2eJob is labctl's job: the same three test commands as LAVA's.
const e2eJob = `name = "bench-e2e"
device_type = "simlab-qemu"
priority = "normal"
timeout = "20m"
keep_powered_on = false

[deploy]
image = %q
sha256_file = %q   # of the uncompressed image
timeout = "10m"
%s
[boot]
username = "root"
password = "test"
timeout = "5m"

[[test]]
name = "uname"
commands = ["uname -a"]
timeout = "1m"

[[test]]
name = "disk"
commands = ["grep -q vda /proc/partitions"]
timeout = "1m"

[[test]]
name = "network"
commands = ["ip route | grep -q default"]
timeout = "1m"
`

// Run starts a one-node lab, runs the rounds and stops the lab.
func (c E2ECase) Run(ctx context.Context, env *Env, w, logw io.Writer) (CaseResult, error) {
	res := CaseResult{Name: "5 end to end"}
	labctl := c.Labctl
	simlabBin := filepath.Join(c.Repo, "bin", "simlab")
	image := filepath.Join(c.Artifacts, "images", "disk.img.gz")
	sum := filepath.Join(c.Artifacts, "images", "disk.img.sha256")
	if err := needs([]string{labctl, simlabBin, image, sum}, []string{"qemu-system-x86_64", "ipmi_sim", "ipmitool"}); err != nil {
		return res, err
	}
	dir := filepath.Join(env.Work, "e2e")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	jobs := map[string]string{rowStream: filepath.Join(dir, "job-stream.toml"), rowReadback: filepath.Join(dir, "job-readback.toml")}
	for row, verify := range map[string]string{rowStream: "", rowReadback: "verify = \"readback\"\n"} {
		if err := os.WriteFile(jobs[row], fmt.Appendf(nil, e2eJob, image, sum, verify), 0o644); err != nil {
			return res, err
		}
	}

	fmt.Fprintln(logw, "  starting a one-node simulated lab ...")
	lab, err := upOneNode(ctx, logw, c.Repo, c.Artifacts, filepath.Join(env.Work, "lab"), simlab.Options{})
	if err != nil {
		return res, err
	}
	defer lab.Close()
	labConfig := lab.ConfigPath
	node := lab.Nodes[0]

	// LAVA: made ready and validated with the node up (lava-run retries an
	// unreachable URL for ten minutes); any problem skips LAVA, not the case.
	noLAVA := c.NoLAVA
	var lava *lavaSetup
	if c.LAVA != "" {
		fmt.Fprintln(logw, "  preparing LAVA ...")
		lava, err = prepareLAVA(c.LAVA, filepath.Dir(c.LAVA), filepath.Join(dir, "lava"), image, lab.Dir, labConfig)
		if err == nil {
			defer lava.Close()
			err = lava.Validate(ctx)
		}
		if err != nil {
			noLAVA, lava = strings.TrimPrefix(err.Error(), ErrSkipped.Error()+": "), nil
			fmt.Fprintf(logw, "  LAVA not run: %s\n", noLAVA)
		}
	}

	type runner struct {
		row string
		run func(r int) (e2eRun, string, error)
	}
	var runners []runner
	if lava != nil {
		for _, v := range lava.Variants {
			runners = append(runners, runner{v.Name, func(r int) (e2eRun, string, error) {
				resetNode(ctx, node)
				lr, err := lava.Run(ctx, v, 10, filepath.Join(dir, fmt.Sprintf("lava-%s-r%d", slug(v.Name), r)))
				detail := lr.tests
				if lr.outcome != "pass" {
					detail = lr.reason
				}
				return lr.e2eRun, detail, err
			}})
		}
	}
	for _, row := range []string{rowStream, rowReadback} {
		if row == rowReadback && !c.Readback {
			continue
		}
		runners = append(runners, runner{row, func(r int) (e2eRun, string, error) {
			resetNode(ctx, node)
			run, err := c.runLabctl(ctx, labctl, labConfig, jobs[row], filepath.Join(dir, fmt.Sprintf("labctl-%s-r%d", slug(row), r)))
			return run, "", err
		}})
	}

	// labctl on the lossy console takes its turn in each round, beside
	// the clean runs it is compared with: the machine's drift over the
	// case (QEMU's boot time moves by seconds) is in both alike.
	var lossyDrops []int64
	if c.Lossy {
		runners = append(runners, runner{rowLossy, func(r int) (e2eRun, string, error) {
			resetNode(ctx, node)
			if err := node.SetLossyConsole(ctx, simlab.LossyConsole{MaxUnechoed: lossyUnechoed}); err != nil {
				return e2eRun{}, "", err
			}
			defer node.SetLossyConsole(ctx, simlab.LossyConsole{})
			c0, _ := node.Counters(ctx)
			run, err := c.runLabctl(ctx, labctl, labConfig, jobs[rowStream], filepath.Join(dir, fmt.Sprintf("labctl-lossy-r%d", r)))
			c1, _ := node.Counters(ctx)
			d := dropped(c1) - dropped(c0)
			lossyDrops = append(lossyDrops, d)
			return run, fmt.Sprintf("dropped=%d", d), err
		}})
	}

	runs := map[string][]e2eRun{}
	perRound := &Table{Head: []string{"round", "dispatcher", "wall s", "CPU s", "peak RSS MB", "private MB", "outcome"}}
	for r := range c.Rounds {
		for _, rn := range rotate(runners, r) {
			run, detail, err := rn.run(r + 1)
			if err != nil {
				if strings.HasPrefix(rn.row, "labctl") {
					return res, err
				}
				run.outcome, detail = "error", err.Error()
			}
			fmt.Fprintf(logw, "  r%d %s: outcome=%s wall=%.1fs cpu=%.2fs rss=%.1fMB anon=%.1fMB %s\n", r+1, rn.row, run.outcome, run.wall, run.cpu, run.rssMB, run.anonMB, detail)
			runs[rn.row] = append(runs[rn.row], run)
			perRound.Add(fmt.Sprint(r+1), rn.row, f(run.wall, 1), f(run.cpu, 2), f(run.rssMB, 1), f(run.anonMB, 1), strings.TrimSpace(run.outcome+" "+detail))
		}
	}

	// LAVA + fix on the lossy console at three character delays, each
	// outcome with the reason from its log.
	type lossyRow struct {
		delay, outcome string
		wall           float64
		dropped        int64
	}
	var lossy []lossyRow
	if c.Lossy && lava != nil {
		if err := node.SetLossyConsole(ctx, simlab.LossyConsole{MaxUnechoed: lossyUnechoed}); err != nil {
			return res, err
		}
		fix := lava.Variants[len(lava.Variants)-1]
		for _, ms := range lossyDelays {
			resetNode(ctx, node)
			c0, _ := node.Counters(ctx)
			lr, err := lava.Run(ctx, fix, ms, filepath.Join(dir, fmt.Sprintf("lava-lossy-%dms", ms)))
			c1, _ := node.Counters(ctx)
			outcome := lr.outcome
			switch {
			case err != nil:
				outcome = "error: " + err.Error()
			case lr.outcome == "pass":
				outcome = "pass, " + lr.tests
			default:
				outcome += ": " + lr.reason
			}
			d := dropped(c1) - dropped(c0)
			fmt.Fprintf(logw, "  lossy %s %d ms: wall=%.1fs dropped=%d %s\n", fix.Name, ms, lr.wall, d, outcome)
			lossy = append(lossy, lossyRow{fmt.Sprintf("%d ms", ms), outcome, lr.wall, d})
		}
		if err := node.SetLossyConsole(ctx, simlab.LossyConsole{}); err != nil {
			return res, err
		}
	}

	// The report.
	gzipMB := math.NaN()
	if fi, err := os.Stat(image); err == nil {
		gzipMB = float64(fi.Size()) / 1e6
	}
	fmt.Fprintf(w, "### Case 5: end to end, the same job by labctl and LAVA on one simulated node (%d rounds, interleaved)\n\n", c.Rounds)
	fmt.Fprintf(w, "One `bin/simlab up` node (ipmi_sim + QEMU under %s). The job: bootdev pxe, power on, the busybox master over PXE, `wget | dd` of the 64 MiB test image (%.1f MB gzip), bootdev disk, power on, log in root/test, then `uname -a`, `grep -q vda /proc/partitions`, `ip route | grep -q default`. "+
		"`labctl run`, which serves the image as its zstd copy (simlab-qemu's `deploy.repack`, made once and cached), with verification by stream (the digest of the bytes the node receives, taken on the node: the image arrived intact) and by readback (the written disk read back: the disk holds it); "+
		"LAVA is Debian 12's lava-run 2023.01 unpacked from its .debs, and the same with upstream's pexpect fix (`delaybeforesend = None`, release 2025.10), both at 10 ms character delays, verifying nothing. "+
		"Each dispatcher runs in a control group of its own: CPU is %s of everything it started (ipmitool, the SOL client; for LAVA also the TFTP and HTTP servers that play its lab's boot server and the worker's Apache, since LAVA serves no PXE files), not the node's; peak RSS is the largest process's peak resident set (VmHWM: with the pages of its program and libraries it has mapped; children are not added), private MB its largest anonymous memory (RssAnon: heap and stacks), sampled every 200 ms.\n\n",
		accelName(), gzipMB, cpuMethod())
	if noLAVA != "" {
		fmt.Fprintf(w, "**LAVA not run:** %s\n\n", noLAVA)
	}
	order := []string{rowLAVA, rowLAVAFix, rowStream, rowReadback, rowLossy}
	sum5 := &Table{Head: []string{"dispatcher", "wall s median [min–max]", "CPU s", "CPU share of wall %", "peak RSS MB", "private MB", "outcomes"}}
	med := map[string][3]float64{}
	complete := true
	for _, row := range order {
		rs := runs[row]
		if len(rs) == 0 {
			continue
		}
		var walls, cpus, shares, rss, anon []float64
		outcomes := map[string]int{}
		for _, r := range rs {
			walls = append(walls, r.wall)
			cpus = append(cpus, r.cpu)
			shares = append(shares, 100*r.cpu/r.wall)
			rss = append(rss, r.rssMB)
			anon = append(anon, r.anonMB)
			outcomes[r.outcome]++
			if strings.HasPrefix(row, "labctl") && r.outcome != "complete" {
				complete = false
			}
		}
		med[row] = [3]float64{Median(walls), Median(cpus), Median(rss)}
		sum5.Add(row, Summarize(walls).Format(1), Summarize(cpus).Format(2), Summarize(shares).Format(2), Summarize(rss).Format(1), Summarize(anon).Format(1), countsText(outcomes))
	}
	sum5.Write(w)
	ratio := func(a, b string) []string {
		return []string{Ratio(med[a][0], med[b][0]), Ratio(med[a][1], med[b][1]), Ratio(med[a][2], med[b][2])}
	}
	if lava != nil {
		rt := &Table{Head: []string{"ratio of medians", "wall", "CPU", "peak RSS"}}
		for _, a := range []string{rowStream, rowReadback} {
			for _, b := range []string{rowLAVA, rowLAVAFix} {
				if len(runs[a]) > 0 && len(runs[b]) > 0 {
					rt.Add(append([]string{a + " ÷ " + b}, ratio(a, b)...)...)
				}
			}
		}
		rt.Write(w)
	}
	labctlRows := []string{rowStream}
	if len(runs[rowReadback]) > 0 {
		labctlRows = append(labctlRows, rowReadback)
	}
	ph := &Table{Head: append([]string{"labctl phase s"}, labctlRows...)}
	for _, n := range []string{"deploy", "boot", "test", "finalize"} {
		cells := []string{n}
		for _, row := range labctlRows {
			var xs []float64
			for _, r := range runs[row] {
				xs = append(xs, r.phases[n])
			}
			cells = append(cells, Summarize(xs).Format(1))
		}
		ph.Add(cells...)
	}
	ph.Write(w)
	fmt.Fprintln(w, "Per round:")
	fmt.Fprintln(w)
	perRound.Write(w)

	stream := med[rowStream]
	share := 100 * stream[1] / stream[0]
	switch fix := med[rowLAVAFix]; {
	case lava != nil && fix[0] > 0:
		old := med[rowLAVA]
		res.Ratio = fmt.Sprintf("case 5 (end to end): labctl %.1fs vs LAVA+fix %.1fs = %s wall (target <= 0.85x), CPU %s, RSS %s; vs LAVA 2023.01 %.1fs = %s; readback %.1fs = %s of LAVA+fix; labctl complete: %v",
			stream[0], fix[0], Ratio(stream[0], fix[0]), Ratio(stream[1], fix[1]), Ratio(stream[2], fix[2]),
			old[0], Ratio(stream[0], old[0]), med[rowReadback][0], Ratio(med[rowReadback][0], fix[0]), complete)
		res.Leads = complete && stream[0] <= 0.85*fix[0] && stream[1] < 0.5*fix[1] && stream[2] < 0.5*fix[2]
	default:
		res.Ratio = fmt.Sprintf("case 5 (end to end): labctl %.1fs, dispatcher CPU %.2f%% of wall (target < 5%%), labctl complete: %v; LAVA skipped (quick mode, or not installed): no comparison", stream[0], share, complete)
		res.Leads = complete && share < 5
	}

	if c.Lossy {
		fmt.Fprintf(w, "**Lossy console** (`simlab fault --max-unechoed %d`: input arriving while more than %d typed bytes are un-echoed is dropped). labctl paces by echo; LAVA types at its character delay, and sends its `wget | dd` line in one write whatever the delay. LAVA's deploy timeout here is 1 minute.\n\n", lossyUnechoed, lossyUnechoed)
		lt := &Table{Head: []string{"dispatcher", "pacing", "wall s", "input bytes dropped", "outcome (reason from the log)"}}
		clean := map[string]int{}
		for _, r := range runs[rowStream] {
			clean[r.outcome]++
		}
		lt.Add(rowStream+", clean node", "echo-paced", Summarize(walls(runs[rowStream])).Format(1), "0 (no knob)", countsText(clean))
		var lossyDropped int64
		for i, r := range runs[rowLossy] {
			lt.Add(fmt.Sprintf("%s, round %d", rowLossy, i+1), "echo-paced", f(r.wall, 1), fmt.Sprint(lossyDrops[i]), r.outcome)
			lossyDropped += lossyDrops[i]
		}
		for _, l := range lossy {
			lt.Add(lava.Variants[len(lava.Variants)-1].Name+", lossy node", l.delay, f(l.wall, 1), fmt.Sprint(l.dropped), l.outcome)
		}
		lt.Write(w)
		// Each round's lossy run over its clean run: the two ran in the
		// same round, under the same conditions.
		var ratios []float64
		for i, r := range runs[rowLossy] {
			if i < len(runs[rowStream]) && runs[rowStream][i].wall > 0 {
				ratios = append(ratios, r.wall/runs[rowStream][i].wall)
			}
		}
		lr := Summarize(ratios)
		line := fmt.Sprintf("case 5 lossy console: labctl %.1fs vs %.1fs clean = %.2fx [%.2f–%.2f] per round (target <= 1.1x), %d bytes dropped",
			Median(walls(runs[rowLossy])), stream[0], lr.Med, lr.Min, lr.Max, lossyDropped)
		for _, l := range lossy {
			o, _, _ := strings.Cut(l.outcome, ":")
			line += fmt.Sprintf("; LAVA+fix at %s: %s", l.delay, o)
		}
		res.Ratio += "\n- " + line
		res.Leads = res.Leads && len(ratios) > 0 && lr.Med <= 1.1 && lossyDropped == 0
	}
	fmt.Fprintf(w, "**ratio:** %s\n\n", res.Ratio)
	return res, nil
}

// runLabctl runs `labctl run` of job once in a control group of its own.
func (c E2ECase) runLabctl(ctx context.Context, labctl, labConfig, job, dir string) (e2eRun, error) {
	os.RemoveAll(dir)
	g := NewGroup("labctl-run")
	defer g.Remove()
	cmd := g.Command(labctl, "run", "--quiet", "--lab", labConfig, "--dir", dir, job)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := os.Create(dir + ".out")
	if err != nil {
		return e2eRun{}, err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	m, werr := measure(ctx, g, cmd)
	if m.err != nil {
		return e2eRun{}, m.err
	}
	f, err := os.Open(filepath.Join(dir, "results.json"))
	if err != nil {
		return e2eRun{}, fmt.Errorf("labctl run (%v): no results.json: %w (output: %s.out)", werr, err, dir)
	}
	defer f.Close()
	jr, err := results.ReadJSON(f)
	if err != nil {
		return e2eRun{}, err
	}
	run := m.e2eRun
	run.phases, run.outcome = map[string]float64{}, jr.Outcome
	for _, p := range jr.Phases {
		run.phases[p.Name] += p.Duration.Seconds()
	}
	return run, nil
}

// needs skips a case unless every file exists and every program is on
// PATH.
func needs(files, programs []string) error {
	for _, p := range files {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%w: %s missing (make build artifacts)", ErrSkipped, p)
		}
	}
	for _, bin := range programs {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%w: %s not installed (make deps)", ErrSkipped, bin)
		}
	}
	return nil
}

// upOneNode starts a one-node simulated lab in dir for a case, from the
// repository's bin/simlab and device-types and the artifacts, in the
// slots of labs started by hand (as `simlab up`); opts may set the disk.
// Its processes end with the lab's Close, or with the bench if it dies.
func upOneNode(ctx context.Context, logw io.Writer, repo, artifacts, dir string, opts simlab.Options) (*simlab.Lab, error) {
	os.RemoveAll(dir)
	opts.Nodes, opts.Dir, opts.Artifacts = 1, dir, artifacts
	opts.DeviceTypes = filepath.Join(repo, "device-types")
	opts.Simlab = filepath.Join(repo, "bin", "simlab")
	opts.SlotWait = 10 * time.Minute
	opts.Pool = simlab.LabPool()
	opts.WatchStdin = true
	opts.Progress = func(s string) { fmt.Fprintf(logw, "    %s\n", s) }
	lab, err := simlab.Up(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("simlab: %w", err)
	}
	return lab, nil
}

// countsText prints outcome counts as "complete ×3, failed ×1".
func countsText(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s ×%d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func walls(rs []e2eRun) []float64 {
	var xs []float64
	for _, r := range rs {
		xs = append(xs, r.wall)
	}
	return xs
}

func dropped(c simlab.FaultCounters) int64 { return c.DroppedUnechoed + c.DroppedGap + c.DroppedBurst }

// slug makes a row name a file name.
func slug(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' {
			return r
		}
		if r >= 'A' && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return '-'
	}, s)
}

// cpuMethod says how the CPU of a group is counted here.
func cpuMethod() string {
	g := NewGroup("probe")
	defer g.Remove()
	return g.Method()
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

func accelName() string {
	if a := os.Getenv("SIMLAB_ACCEL"); a != "" {
		return a
	}
	return "simlab's default accelerator (TCG unless a KVM smoke boot works)"
}
