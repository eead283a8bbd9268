package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/api"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/results"
	"github.com/labctl/labctl/simlab/farm"
)

// ScaleCase is case 4: one `labctl serve` runs a lab of Nodes fake nodes,
// all played by one farm process (`labctl-bench farm`: a BMC per node with
// IPMI power and native SOL, a console that plays the master shell, runs
// the dispatcher's real `wget | dd` against the daemon's HTTP server into a
// file, then the disk boot and the test shell), and Jobs jobs are
// submitted at once or as a steady stream.
type ScaleCase struct {
	Rounds    int
	Nodes     int
	Jobs      int
	ImageSize int           // bytes of the raw image each job writes
	Timeout   time.Duration // for all jobs of a round
	Labctl    string        // bin/labctl
	// Interval spaces the submissions (a steady stream); 0 submits
	// every job at once.
	Interval time.Duration
	// DaemonCPUs and FarmCPUs, if set, are CPU lists (taskset -c) the
	// daemon and the farm (with the shells of its nodes) are pinned to,
	// so that the daemon's latency is its own.
	DaemonCPUs, FarmCPUs string
	// ProfileDir, if set, receives CPU profiles of the daemon and of the
	// farm taken while the jobs run, and their heap profiles at the end.
	ProfileDir string
	// Postgres, if set, is the URL of an empty PostgreSQL database the
	// daemons keep their jobs in; "" means each its SQLite file.
	Postgres string
	// Hosts is how many `labctl serve` share the lab on the Postgres
	// database (0 means 1), each with its own lab file holding a
	// contiguous block of the nodes (NodeHost), its own boot server and
	// API; every job is submitted through the first.
	Hosts int
	// db is the database server's control group: its CPU counts in a
	// run's.
	db *Group
}

// hosts is the number of daemons.
func (c ScaleCase) hosts() int { return max(c.Hosts, 1) }

// hostName is the name of host k (from 0) in the lab.
func hostName(k int) string { return fmt.Sprintf("rack%d", k+1) }

// labHost is host k's name as the API shows it: none with the SQLite
// store, whose lab has one host.
func (c ScaleCase) labHost(k int) string {
	if c.Postgres == "" {
		return ""
	}
	return hostName(k)
}

// hostDir is where host k's lab file, device files, state and logs are:
// dir itself when the lab has one host.
func (c ScaleCase) hostDir(dir string, k int) string {
	if c.hosts() == 1 {
		return dir
	}
	return filepath.Join(dir, hostName(k))
}

// NodeHost is the host (from 0) whose lab file holds node i (from 0) of
// nodes split over hosts: contiguous blocks, as even as they divide.
func NodeHost(i, nodes, hosts int) int {
	if hosts <= 1 || nodes <= 0 {
		return 0
	}
	return i * hosts / nodes
}

// Host k's ports (from 0): its API, HTTP and TFTP servers.
const (
	scaleAPIPort  = 18470
	scaleHTTPPort = 18091
	scaleTFTPPort = 16969
)

func apiURL(k int) string  { return fmt.Sprintf("http://127.0.0.1:%d", scaleAPIPort+k) }
func bootURL(k int) string { return fmt.Sprintf("http://127.0.0.1:%d", scaleHTTPPort+k) }

// FarmCPUsEnv tells the farm which CPUs it and its nodes' shells run on
// (a taskset -c list).
const FarmCPUsEnv = "LABCTL_BENCH_FARM_CPUS"

// FarmPprofEnv, if set, is the loopback host:port the farm serves Go's
// profiling endpoints on.
const FarmPprofEnv = "LABCTL_BENCH_FARM_PPROF"

// The profiling endpoints of the daemon and the farm when the case
// profiles them.
const (
	servePprofAddr = "127.0.0.1:18061"
	farmPprofAddr  = "127.0.0.1:18062"
)

type scaleRun struct {
	wall                 float64
	complete, other      int // by each job's last attempt
	firstComplete        int // first attempts complete
	retried              int // jobs whose first attempt ended incomplete and ran again
	outcomes             map[string]int
	q2s                  []float64   // queue-to-start seconds, sorted
	q2d                  []float64   // submit-to-dispatch seconds (results.json's Started − Submitted), sorted
	submit               []float64   // submit request seconds, sorted
	daemonCPU, treeCPU   float64     // treeCPU: the farm's, shells included
	dbCPU                float64     // the PostgreSQL server's, every backend included
	perHost              []int       // jobs run by each host
	hostQ2s              [][]float64 // queue-to-start seconds of each host's jobs, sorted
	rssIdleMB, rssPeakMB float64
	peakRunning          int
	perJobMB             float64
	startupS             float64 // serve start to every device idle
	submitWall           float64 // first submit to last submit answered
	runWait              float64 // seconds the daemon's threads were runnable but not running
}

const scaleToken = "labctl-bench-scale-token"

// scaleHostToken is the lab-internal credential of the hosts of a lab of
// several; it reaches them in the environment only.
const scaleHostToken = "labctl-bench-lab-hosts-credential"

// The farm's BMCs listen on UDP 127.0.0.1:farmBasePort+i, i from 0; their
// password reaches the farm and the daemon in the environment only.
const (
	farmBasePort    = 20000
	farmBMCPassword = "labctl-bench-farm-bmc"
)

// Run builds the lab, then per round starts the daemon, waits for every
// device to be idle, submits the jobs at once and waits for them all.
func (c ScaleCase) Run(ctx context.Context, env *Env, w, logw io.Writer) (CaseResult, error) {
	res := CaseResult{Name: "4 scale"}
	busybox, err := c.needs()
	if err != nil {
		return res, err
	}
	var runs []scaleRun
	for r := range c.Rounds {
		run, err := c.round(ctx, env, busybox, fmt.Sprintf("r%d", r+1), logw)
		if err != nil {
			return res, err
		}
		runs = append(runs, run)
	}
	pick := func(fn func(scaleRun) float64) Stat {
		var xs []float64
		for _, r := range runs {
			xs = append(xs, fn(r))
		}
		return Summarize(xs)
	}
	how := "submitted at once"
	if c.Interval > 0 {
		how = fmt.Sprintf("a steady stream, one submit every %s", c.Interval)
	}
	pinned := "daemon and fake nodes share every CPU"
	if c.DaemonCPUs != "" {
		pinned = fmt.Sprintf("daemon pinned to CPU %s, fake nodes to CPU %s", c.DaemonCPUs, c.FarmCPUs)
	}
	fmt.Fprintf(w, "### Case 4: scale, one `labctl serve`, %d fake nodes, %d jobs %s; %s (%d rounds)\n\n", c.Nodes, c.Jobs, how, pinned, c.Rounds)
	fmt.Fprintf(w, "Fake nodes: one process plays them all (`labctl-bench farm`, pinned away from the daemon): a BMC per node "+
		"(go-ipmi's BMC server on a UDP port of its own: IPMI 2.0 power, boot device and native SOL, so the daemon starts no process per node); "+
		"each node's console asks the daemon's boot server for its pxelinux config, "+
		"plays the master shell (a real shell, bash with busybox applets, started only while the node is booted into it: "+
		"the dispatcher's `wget | dd` streams a %s image from the daemon's HTTP server into a file, sha256sum checks it), "+
		"then the disk boot, login and the test shell. Daemon CPU and RSS are the labctl serve process alone; farm CPU is the farm and its shells. "+
		"The echo timeout is 2 s: one CPU plays every node. "+
		"Queue-to-start is a job's Started minus its Submitted as the API reports them: Submitted is stamped when the daemon has checked the request, "+
		"before the job is committed to the store; Started when a worker takes it, before the store marks it running (a job submitted while a device fits it is stored running at once: both stamps come before that one commit). "+
		"Submit-to-dispatch is the job's results.json Started (its dispatcher's start on the worker, after the store marked it running) minus Submitted: every commit included. "+
		"Every device is idle when the jobs are submitted, so each job has a healthy idle node from its submit on.\n\n", sizeName(c.ImageSize))
	t := &Table{Head: []string{"figure", "median [min–max]"}}
	complete, first, retried := 0, 0, 0
	for _, r := range runs {
		complete += r.complete
		first += r.firstComplete
		retried += r.retried
	}
	t.Add("jobs complete (each by its last attempt: labctl runs again a job the lab failed)", fmt.Sprintf("%d of %d", complete, c.Jobs*len(runs)))
	t.Add("first attempts complete (retried: ended incomplete, ran again)", fmt.Sprintf("%d of %d (retried: %d)", first, c.Jobs*len(runs), retried))
	t.Add("start-up: serve to every device idle s", pick(func(r scaleRun) float64 { return r.startupS }).Format(1))
	t.Add("all jobs, submit to last finish s", pick(func(r scaleRun) float64 { return r.wall }).Format(1))
	t.Add("submit request p50 ms", pick(func(r scaleRun) float64 { return 1000 * Percentile(r.submit, .5) }).Format(1))
	t.Add("queue-to-start p50 ms", pick(func(r scaleRun) float64 { return 1000 * Percentile(r.q2s, .5) }).Format(1))
	t.Add("**queue-to-start p99 ms**", pick(func(r scaleRun) float64 { return 1000 * Percentile(r.q2s, .99) }).Format(1))
	t.Add("queue-to-start max ms", pick(func(r scaleRun) float64 { return 1000 * Percentile(r.q2s, 1) }).Format(1))
	t.Add("submit-to-dispatch p50 ms", pick(func(r scaleRun) float64 { return 1000 * Percentile(r.q2d, .5) }).Format(1))
	t.Add("submit-to-dispatch p99 ms", pick(func(r scaleRun) float64 { return 1000 * Percentile(r.q2d, .99) }).Format(1))
	t.Add("daemon CPU s (labctl serve only)", pick(func(r scaleRun) float64 { return r.daemonCPU }).Format(1))
	t.Add("daemon run-queue wait s (its threads runnable, not running: CPU taken by others)", pick(func(r scaleRun) float64 { return r.runWait }).Format(1))
	t.Add("farm CPU s (every fake node, shells included)", pick(func(r scaleRun) float64 { return r.treeCPU }).Format(1))
	t.Add("daemon RSS idle MB", pick(func(r scaleRun) float64 { return r.rssIdleMB }).Format(1))
	t.Add("daemon RSS peak MB", pick(func(r scaleRun) float64 { return r.rssPeakMB }).Format(1))
	t.Add("jobs running at once (peak)", pick(func(r scaleRun) float64 { return float64(r.peakRunning) }).Format(0))
	t.Add("**RSS per running job MB** ((peak − idle) ÷ peak running)", pick(func(r scaleRun) float64 { return r.perJobMB }).Format(2))
	t.Add("jobs per minute (complete ÷ submit to last finish)", pick(func(r scaleRun) float64 { return float64(r.complete) / r.wall * 60 }).Format(0))
	t.Add("daemon CPU ms per job", pick(func(r scaleRun) float64 { return 1000 * r.daemonCPU / float64(c.Jobs) }).Format(1))
	t.Add("submit request p99 ms", pick(func(r scaleRun) float64 { return 1000 * Percentile(r.submit, .99) }).Format(1))
	t.Write(w)
	// Judged on submit-to-dispatch: queue-to-start leaves out the commit
	// of a job stored claimed at submit.
	p99 := 1000 * pick(func(r scaleRun) float64 { return Percentile(r.q2d, .99) }).Med
	q2sP99 := 1000 * pick(func(r scaleRun) float64 { return Percentile(r.q2s, .99) }).Med
	perJob := pick(func(r scaleRun) float64 { return r.perJobMB }).Med
	res.Leads = complete == c.Jobs*len(runs) && p99 < 100 && perJob < 5
	name := fmt.Sprintf("case 4 (scale, %d nodes, jobs at once)", c.Nodes)
	if c.Interval > 0 {
		name = fmt.Sprintf("case 4s (scale, %d nodes, a job every %s)", c.Nodes, c.Interval)
	}
	res.Ratio = fmt.Sprintf("%s: %d/%d jobs complete; submit-to-dispatch p99 %.1f ms (target < 100 ms; queue-to-start p99 %.1f ms); %.2f MB RSS per running job (target < 5 MB)",
		name, complete, c.Jobs*len(runs), p99, q2sP99, perJob)
	fmt.Fprintf(w, "**ratio:** %s\n\n", res.Ratio)
	return res, nil
}

// needs checks that the lab can run here (ErrSkipped if not) and returns
// busybox's path.
func (c ScaleCase) needs() (busybox string, err error) {
	if _, err := os.Stat(c.Labctl); err != nil {
		return "", fmt.Errorf("%w: %s missing (make build)", ErrSkipped, c.Labctl)
	}
	if out, _ := exec.Command(c.Labctl, "serve", "--help").CombinedOutput(); !strings.Contains(string(out), "--lab") {
		return "", fmt.Errorf("%w: this labctl has no serve command", ErrSkipped)
	}
	busybox, err = exec.LookPath("busybox")
	if err != nil {
		return "", fmt.Errorf("%w: busybox not installed (busybox-static)", ErrSkipped)
	}
	return busybox, nil
}

// round runs the lab once in a fresh directory (env.Work/scale) and logs
// one line about it, starting with label.
func (c ScaleCase) round(ctx context.Context, env *Env, busybox, label string, logw io.Writer) (scaleRun, error) {
	dir := filepath.Join(env.Work, "scale")
	os.RemoveAll(dir)
	job, labFiles, err := c.writeLab(dir, busybox)
	if err != nil {
		return scaleRun{}, err
	}
	run, err := c.runOnce(ctx, dir, env.Self, labFiles, job, logw)
	if err != nil {
		return run, err
	}
	os.RemoveAll(filepath.Join(dir, "nodes")) // 400 disks of ImageSize each
	var hostP99 []string
	for _, xs := range run.hostQ2s {
		hostP99 = append(hostP99, f(Percentile(xs, .99), 3))
	}
	fmt.Fprintf(logw, "  %s wall=%.1fs complete=%d/%d q2s p50=%.3f p99=%.3f dispatch p50=%.3f p99=%.3f submit p99=%.3f daemon cpu=%.1fs db cpu=%.1fs farm cpu=%.1fs rss idle=%.1f peak=%.1f MB running=%d per host: jobs=%v q2s p99=%v\n",
		label, run.wall, run.complete, c.Jobs, Percentile(run.q2s, .5), Percentile(run.q2s, .99), Percentile(run.q2d, .5), Percentile(run.q2d, .99), Percentile(run.submit, .99),
		run.daemonCPU, run.dbCPU, run.treeCPU, run.rssIdleMB, run.rssPeakMB, run.peakRunning, run.perHost, hostP99)
	return run, nil
}

// writeLab writes the lab: boot root, image, device type, and per host
// its devices and lab file (the first is dir/lab.toml when there is one
// host); it returns the job and the lab files.
func (c ScaleCase) writeLab(dir, busybox string) (job string, labFiles []string, err error) {
	job, err = c.writeLabFiles(dir, busybox)
	if err != nil {
		return "", nil, err
	}
	for k := range c.hosts() {
		lf, err := c.writeHostLab(dir, k)
		if err != nil {
			return "", nil, err
		}
		labFiles = append(labFiles, lf)
	}
	return job, labFiles, nil
}

// writeLabFiles writes what the hosts share (boot root, image, device
// type, the fake nodes' programs) and returns the job.
func (c ScaleCase) writeLabFiles(dir, busybox string) (job string, err error) {
	mk := func(p string) error { return os.MkdirAll(filepath.Join(dir, p), 0o755) }
	for _, p := range []string{"root/fake", "device-types", "nodes/bin"} {
		if err := mk(p); err != nil {
			return "", err
		}
	}
	for _, f := range []string{"root/fake/vmlinuz", "root/fake/master.gz"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("not a kernel\n"), 0o644); err != nil {
			return "", err
		}
	}
	if err := farm.WriteBin(filepath.Join(dir, "nodes"), busybox); err != nil {
		return "", err
	}
	// The image: random bytes with an MBR boot signature, so the fake node
	// boots "from disk" once it is written.
	img := farm.Image(c.ImageSize)
	imgPath := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(imgPath, img, 0o644); err != nil {
		return "", err
	}
	sum := sha256.Sum256(img)

	dt := farm.DeviceType("fake-node", "fake/vmlinuz", "fake/master.gz")
	if err := os.WriteFile(filepath.Join(dir, "device-types", "fake-node.toml"), []byte(dt), 0o644); err != nil {
		return "", err
	}
	job = fmt.Sprintf(`name = "scale"
device_type = "fake-node"
timeout = "20m"
[deploy]
image = %q
sha256 = %q
[boot]
password = "test"
[[test]]
name = "hello"
commands = ["echo hello from $(uname -n)"]
`, imgPath, hex.EncodeToString(sum[:]))
	return job, nil
}

// writeHostLab writes host k's devices (its block of the nodes) and lab
// file, and returns the lab file. The lab's shared files are in dir.
func (c ScaleCase) writeHostLab(dir string, k int) (string, error) {
	hd := c.hostDir(dir, k)
	for _, p := range []string{"devices", "state"} {
		if err := os.MkdirAll(filepath.Join(hd, p), 0o755); err != nil {
			return "", err
		}
	}
	for i := range c.Nodes {
		if NodeHost(i, c.Nodes, c.hosts()) != k {
			continue
		}
		name := fmt.Sprintf("node%03d", i+1)
		dev := fmt.Sprintf(`device_type = "fake-node"
mac = "52:54:01:00:%02x:%02x"
[bmc]
host = "127.0.0.1"
port = %d
user = %q
password_env = "LABCTL_BENCH_BMC_PASSWORD"
`, (i+1)>>8, (i+1)&0xff, farmBasePort+i, farm.User)
		if err := os.WriteFile(filepath.Join(hd, "devices", name+".toml"), []byte(dev), 0o644); err != nil {
			return "", err
		}
	}
	lab := fmt.Sprintf(`name = "bench-scale"
device_types = [%q]
devices = ["devices"]
state_dir = "state"
[boot_server]
root = %q
tftp_listen = "127.0.0.1:%d"
http_listen = "127.0.0.1:%d"
http_url = %q
[server]
listen = "127.0.0.1:%d"
[[server.tokens]]
name = "bench"
role = "admin"
token_env = "LABCTL_BENCH_TOKEN"
`, filepath.Join(dir, "device-types"), filepath.Join(dir, "root"), scaleTFTPPort+k, scaleHTTPPort+k, bootURL(k), scaleAPIPort+k)
	if c.Postgres != "" {
		// The lease and poll are labctl's defaults, as a lab runs them.
		lab += fmt.Sprintf(`[store]
url = %q
[host]
name = %q
token_env = "LABCTL_BENCH_HOST_TOKEN"
`, c.Postgres, hostName(k))
	}
	labFile := filepath.Join(hd, "lab.toml")
	if err := os.WriteFile(labFile, []byte(lab), 0o644); err != nil {
		return "", err
	}
	return labFile, nil
}

// runOnce starts the farm and the daemons, runs the jobs and stops them
// all.
func (c ScaleCase) runOnce(ctx context.Context, dir, self string, labFiles []string, job string, logw io.Writer) (scaleRun, error) {
	var run scaleRun
	env := append(os.Environ(), "LABCTL_BENCH_TOKEN="+scaleToken, "LABCTL_BENCH_BMC_PASSWORD="+farmBMCPassword,
		"LABCTL_BENCH_HOST_TOKEN="+scaleHostToken, FarmCPUsEnv+"="+c.FarmCPUs)
	var serveArgs []string
	if c.ProfileDir != "" {
		if err := os.MkdirAll(c.ProfileDir, 0o755); err != nil {
			return run, err
		}
		env = append(env, FarmPprofEnv+"="+farmPprofAddr)
		serveArgs = []string{"--pprof", servePprofAddr}
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	farm, err := c.startFarm(ctx, dir, self, env)
	if err != nil {
		return run, err
	}
	defer farm.stop()

	t0 := time.Now()
	var serves []*benchProc
	var clients []*api.Client
	defer func() {
		for _, s := range serves {
			s.stop()
		}
	}()
	for k, labFile := range labFiles {
		var args []string
		if k == 0 { // the profiles are the first host's
			args = serveArgs
		}
		serve, err := startServe("labctl-serve-"+hostName(k), c.Labctl, labFile, c.DaemonCPUs, env, args...)
		if err != nil {
			return run, err
		}
		serves = append(serves, serve)
		client, err := api.NewClient(apiURL(k), scaleToken, nil)
		if err != nil {
			return run, err
		}
		clients = append(clients, client)
	}
	for k, serve := range serves {
		n := 0
		for i := range c.Nodes {
			if NodeHost(i, c.Nodes, len(serves)) == k {
				n++
			}
		}
		if err := serve.waitIdleHost(ctx, clients[k], c.labHost(k), n); err != nil {
			return run, err
		}
	}
	run.startupS = time.Since(t0).Seconds()
	client := clients[0] // every job is submitted through the first host
	var pids []int
	for _, s := range serves {
		pids = append(pids, s.cmd.Process.Pid)
	}
	sum := func(fn func(pid int) float64) float64 {
		var x float64
		for _, pid := range pids {
			x += fn(pid)
		}
		return x
	}
	rssKB := func() int64 { return int64(sum(func(pid int) float64 { return float64(RSSKB(pid, false)) })) }
	run.rssIdleMB = float64(rssKB()) / 1024
	cpu0, tree0, wait0 := sum(procCPU), farm.group.CPU(), sum(runQueueWait)
	var db0 float64
	if c.db != nil {
		db0 = c.db.CPU()
	}
	fmt.Fprintf(logw, "  %d devices idle on %d hosts after %.1fs; submitting %d jobs\n", c.Nodes, len(serves), run.startupS, c.Jobs)

	// Sample RSS and running jobs while the jobs run.
	var peakKB atomic.Int64
	stopSample := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for {
			peakKB.Store(max(peakKB.Load(), rssKB()))
			select {
			case <-stopSample:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	profiled := c.profile(ctx, stopSample, logw)
	start := time.Now()
	ids := make([]int64, c.Jobs)
	submit := make([]float64, c.Jobs)
	errs := make(chan error, c.Jobs)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range c.Jobs {
		if c.Interval > 0 && i > 0 {
			// A steady stream: the i-th submit at start + i × Interval.
			time.Sleep(time.Until(start.Add(time.Duration(i) * c.Interval)))
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			t := time.Now()
			j, err := client.Submit(ctx, labctl.SubmitRequest{File: "scale.toml", Dir: dir, Spec: job})
			submit[i] = time.Since(t).Seconds()
			if err != nil {
				errs <- err
				return
			}
			ids[i] = j.ID
		})
	}
	wg.Wait()
	run.submitWall = time.Since(start).Seconds()
	close(errs)
	for err := range errs {
		close(stopSample)
		sampler.Wait()
		profiled.Wait()
		return run, fmt.Errorf("submit: %w", err)
	}
	// Wait for all to finish, counting running jobs: every job submitted,
	// and the attempts that retry those that ended incomplete (labctl
	// queues a job again when the lab went wrong under it).
	want := map[int64]bool{}
	for _, id := range ids {
		want[id] = true
	}
	final := map[int64]lastAttempt{} // of each job whose first attempt ended incomplete
	var jobs []labctl.Job
	for {
		if ctx.Err() != nil {
			close(stopSample)
			sampler.Wait()
			profiled.Wait()
			return run, fmt.Errorf("jobs not finished after %s (log: %s)", c.Timeout, serves[0].log.Name())
		}
		jobs, err = client.Jobs(ctx, labctl.JobFilter{Limit: (1 + devices.DefaultRetries) * c.Jobs}) // every attempt
		if err == nil {
			running, finished := 0, 0
			for _, j := range jobs {
				switch j.State {
				case labctl.JobRunning:
					running++
				case labctl.JobFinished:
					// The jobs submitted, not their retries: a retry
					// that ended must not stand in for a first
					// attempt still running.
					if want[j.ID] {
						finished++
					}
				}
			}
			run.peakRunning = max(run.peakRunning, running)
			if finished >= c.Jobs {
				done, err := retriesEnded(ctx, client, jobs, want, final)
				if err == nil && done {
					break
				}
			}
		}
		// A daemon that died leaves its jobs running for ever.
		for k, s := range serves {
			select {
			case <-s.exited:
				close(stopSample)
				sampler.Wait()
				profiled.Wait()
				return run, fmt.Errorf("labctl serve (host %s) exited while the jobs ran (log: %s)", hostName(k), s.log.Name())
			default:
			}
		}
		// Listing every job costs the daemon CPU in proportion to the
		// jobs: the larger the run, the less often it is asked.
		time.Sleep(time.Duration((c.Jobs+399)/400) * 500 * time.Millisecond)
	}
	run.wall = time.Since(start).Seconds()
	close(stopSample)
	sampler.Wait()
	profiled.Wait()
	run.daemonCPU = sum(procCPU) - cpu0
	run.runWait = sum(runQueueWait) - wait0
	run.treeCPU = farm.group.CPU() - tree0
	if c.db != nil {
		run.dbCPU = c.db.CPU() - db0
	}
	run.rssPeakMB = float64(peakKB.Load()) / 1024
	if run.peakRunning > 0 {
		run.perJobMB = (run.rssPeakMB - run.rssIdleMB) / float64(run.peakRunning)
	}
	run.outcomes = map[string]int{}
	run.perHost = make([]int, len(serves))
	run.hostQ2s = make([][]float64, len(serves))
	for _, j := range jobs {
		if !want[j.ID] {
			continue
		}
		if j.Outcome == string(labctl.Complete) {
			run.firstComplete++
		}
		if last, ok := final[j.ID]; ok {
			run.retried++
			fmt.Fprintf(logw, "  job %d %s: %s; its last attempt, job %d: %s %s\n", j.ID, j.Outcome, j.Reason, last.ID, last.Outcome, last.Reason)
			j.Outcome, j.Reason = last.Outcome, last.Reason
		}
		run.outcomes[j.Outcome]++
		host := -1
		for k := range serves {
			if j.Host == c.labHost(k) {
				host = k
				run.perHost[k]++
			}
		}
		if j.Outcome == "complete" {
			run.complete++
		} else {
			run.other++
			fmt.Fprintf(logw, "  job %d %s: %s\n", j.ID, j.Outcome, j.Reason)
			// Keep its log: the next round starts from an empty directory.
			// The host that ran it keeps its log.
			if b, err := os.ReadFile(filepath.Join(c.hostDir(dir, max(host, 0)), "state", "jobs", strconv.FormatInt(j.ID, 10), "job.log")); err == nil {
				kept := filepath.Join(filepath.Dir(dir), "scale-failed", fmt.Sprintf("%s-job%d.log", time.Now().Format("150405"), j.ID))
				if os.MkdirAll(filepath.Dir(kept), 0o755) == nil && os.WriteFile(kept, b, 0o644) == nil {
					fmt.Fprintf(logw, "    its log: %s\n", kept)
				}
			}
		}
		if j.Started != nil {
			q2s := j.Started.Sub(j.Submitted).Seconds()
			run.q2s = append(run.q2s, q2s)
			if host >= 0 {
				run.hostQ2s[host] = append(run.hostQ2s[host], q2s)
			}
		}
		// The dispatcher's own start, after the job was committed
		// running and its worker took it: read from the host's files,
		// not asked of the daemon.
		if f, err := os.Open(filepath.Join(c.hostDir(dir, max(host, 0)), "state", "jobs", strconv.FormatInt(j.ID, 10), "results.json")); err == nil {
			res, err := results.ReadJSON(f)
			f.Close()
			if err == nil && !res.Started.IsZero() {
				run.q2d = append(run.q2d, res.Started.Sub(j.Submitted).Seconds())
			}
		}
	}
	sort.Float64s(run.q2s)
	sort.Float64s(run.q2d)
	for _, xs := range run.hostQ2s {
		sort.Float64s(xs)
	}
	sort.Float64s(submit)
	run.submit = submit
	return run, nil
}

// retriesEnded says whether every job of want that ended incomplete has
// had its retries: its last attempt finished, and either not incomplete or
// the last the lab allows (the bench labs leave [jobs] retries at labctl's
// default). It records the last attempt of each such job in final. jobs is
// the daemon's list, where every job of want is finished.
func retriesEnded(ctx context.Context, client *api.Client, jobs []labctl.Job, want map[int64]bool, final map[int64]lastAttempt) (bool, error) {
	for _, j := range jobs {
		if !want[j.ID] || j.Outcome != string(labctl.Incomplete) || final[j.ID].ended {
			continue
		}
		// GET /jobs/{id} lists every attempt once there is more than one.
		v, err := client.Job(ctx, j.ID)
		if err != nil {
			return false, err
		}
		last := labctl.Attempt{ID: v.ID, State: v.State, Outcome: v.Outcome, Reason: v.Reason}
		if n := len(v.Attempts); n > 0 {
			last = v.Attempts[n-1]
		}
		ended := last.State == labctl.JobFinished &&
			(last.Outcome != string(labctl.Incomplete) || len(v.Attempts) > devices.DefaultRetries)
		final[j.ID] = lastAttempt{last, ended}
		if !ended {
			return false, nil
		}
	}
	return true, nil
}

// lastAttempt is a retried job's last attempt so far, and whether it is
// the last it gets.
type lastAttempt struct {
	labctl.Attempt
	ended bool
}

// procCPU is the CPU seconds of one process (its own threads, not its
// children).
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 13 {
		return 0
	}
	var ticks float64
	for _, k := range []int{11, 12} { // utime, stime
		var v float64
		fmt.Sscan(f[k], &v)
		ticks += v
	}
	return ticks / 100
}

// runQueueWait is the seconds the threads of pid now alive have spent
// runnable but waiting for a CPU (/proc/PID/task/TID/schedstat, second
// field): latency that is the machine's, not the process's own work.
func runQueueWait(pid int) float64 {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0
	}
	var ns float64
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) >= 2 {
			v, _ := strconv.ParseFloat(f[1], 64)
			ns += v
		}
	}
	return ns / 1e9
}

// benchProc is a process the bench starts and must end: in a control
// group and a process group of its own, killed if the bench dies, its
// output in a log file.
type benchProc struct {
	cmd    *exec.Cmd
	group  *Group
	log    *os.File
	exited chan struct{} // closed once the process has exited
	// ask asks the process to end (stop then waits for it).
	ask func()
}

// newProc prepares argv in the control group named group with env, its
// stdout and stderr in logPath; the caller may set pipes, then start.
func newProc(group, logPath string, env []string, argv ...string) (*benchProc, error) {
	log, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	p := &benchProc{group: NewGroup(group), log: log, exited: make(chan struct{})}
	p.cmd = p.group.Command(argv...)
	p.cmd.Env = env
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p.cmd.Stdout, p.cmd.Stderr = log, log
	p.ask = func() { syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM) }
	return p, nil
}

// start starts the process; if it cannot, the group and the log are
// released.
func (p *benchProc) start() error {
	if err := p.cmd.Start(); err != nil {
		p.release()
		return err
	}
	p.group.SetPid(p.cmd.Process.Pid)
	go func() { p.cmd.Wait(); close(p.exited) }()
	return nil
}

// stop asks the process to end, kills its process group if it has not
// after 30 s, then kills whatever it started that is left (a shell in a
// session of its own outlives it), and releases the group and the log.
func (p *benchProc) stop() {
	// Without a control group, what it started is found only while it
	// lives (the tree of its pid).
	var tree []int
	if p.group.dir == "" {
		tree = p.group.Pids()
	}
	p.ask()
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
	for _, pid := range append(tree, p.group.Pids()...) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	p.release()
}

// release removes the group and closes the log.
func (p *benchProc) release() {
	p.group.Remove()
	p.log.Close()
}

// startServe starts `labctl serve --lab labFile` in the control group
// named group, its output in serve.log beside labFile; cpus, if set, is
// the CPU list (taskset -c) it is pinned to.
func startServe(group, labctlBin, labFile, cpus string, env []string, args ...string) (*benchProc, error) {
	argv := append([]string{labctlBin, "serve", "--lab", labFile}, args...)
	if cpus != "" {
		busybox, err := exec.LookPath("busybox")
		if err != nil {
			return nil, err
		}
		argv = append([]string{busybox, "taskset", "-c", cpus}, argv...)
	}
	p, err := newProc(group, filepath.Join(filepath.Dir(labFile), "serve.log"), env, argv...)
	if err != nil {
		return nil, err
	}
	if err := p.start(); err != nil {
		return nil, err
	}
	return p, nil
}

// waitIdle waits until the daemon p reports n devices idle (their health
// checks passed). A device whose start-up check failed (one CPU plays
// every fake node: on a loaded machine a BMC can miss its answer) is
// checked again, up to recheckTries times, as an operator would ask.
func (p *benchProc) waitIdle(ctx context.Context, client *api.Client, n int) error {
	return p.waitIdleHost(ctx, client, "", n)
}

// waitIdleHost waits until the daemon p reports n of host's devices idle
// (host "": a lab of one host, whose devices name none).
func (p *benchProc) waitIdleHost(ctx context.Context, client *api.Client, host string, n int) error {
	asked := map[string]int{}
	var rechecks sync.WaitGroup
	defer rechecks.Wait()
	for {
		devs, err := client.Devices(ctx)
		idle := 0
		for _, d := range devs {
			switch {
			case d.Host != host:
			case d.State == labctl.DeviceIdle:
				idle++
			case d.State == labctl.DeviceOffline && d.Health != nil && !d.Health.OK && asked[d.Name] < recheckTries:
				asked[d.Name]++
				rechecks.Go(func() { client.CheckHealth(ctx, d.Name) })
			}
		}
		if err == nil && idle == n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d devices idle (last error: %v) when %w (log: %s)", idle, n, err, ctx.Err(), p.log.Name())
		case <-p.exited:
			return fmt.Errorf("labctl serve exited at start (log: %s)", p.log.Name())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// recheckTries is how often waitIdle asks a device whose health check
// failed to be checked again.
const recheckTries = 3

// startFarm starts the farm that plays the lab's nodes (written by
// writeLab into dir) and waits until it is ready. Its stop powers every
// node off and ends it.
func (c ScaleCase) startFarm(ctx context.Context, dir, self string, env []string) (*benchProc, error) {
	// Each node asks the boot server of its own host.
	var urls []string
	for k := range c.hosts() {
		urls = append(urls, bootURL(k))
	}
	p, err := newProc("labctl-farm", filepath.Join(dir, "farm.log"), env, self, "farm", filepath.Join(dir, "nodes"),
		strconv.Itoa(c.Nodes), strconv.Itoa(farmBasePort), strings.Join(urls, ","))
	if err != nil {
		return nil, err
	}
	// Closing its stdin powers every node off (their shells end), then
	// the farm exits.
	in, err := p.cmd.StdinPipe()
	if err != nil {
		p.release()
		return nil, err
	}
	p.ask = func() { in.Close() }
	// Its stdout says "ready": a pipe of the bench's own, read to its end
	// (the farm's exit), which the process's Wait does not close under
	// the reader.
	r, w, err := os.Pipe()
	if err != nil {
		p.release()
		return nil, err
	}
	p.cmd.Stdout = w
	err = p.start()
	w.Close()
	if err != nil {
		r.Close()
		return nil, err
	}
	ready := make(chan bool, 1)
	go func() {
		defer r.Close()
		line := make([]byte, 6)
		_, err := io.ReadFull(r, line)
		ready <- err == nil && string(line) == "ready\n"
		io.Copy(io.Discard, r)
	}()
	select {
	case ok := <-ready:
		if ok {
			return p, nil
		}
		err = fmt.Errorf("the farm did not start (log: %s)", p.log.Name())
	case <-ctx.Done():
		err = fmt.Errorf("the farm not ready: %w (log: %s)", ctx.Err(), p.log.Name())
	}
	p.stop()
	return nil, err
}

// profileSlice is the length of one CPU profile the case takes: profiles
// are taken back to back while the jobs run, each a file of its own
// (go tool pprof merges them).
const profileSlice = 10 * time.Second

// profile takes CPU profiles of the daemon and of the farm, back to back,
// until stop closes, then their heap profiles, and an execution trace of
// the daemon's first seconds, into c.ProfileDir; nothing if the case does
// not profile.
func (c ScaleCase) profile(ctx context.Context, stop <-chan struct{}, logw io.Writer) *sync.WaitGroup {
	var wg sync.WaitGroup
	if c.ProfileDir == "" {
		return &wg
	}
	// An execution trace of the daemon's first seconds of jobs: where
	// the submits and the starts wait (go tool trace -pprof=sched).
	wg.Go(func() {
		if err := fetchTo(ctx, "http://"+servePprofAddr+"/debug/pprof/trace?seconds=5", filepath.Join(c.ProfileDir, "serve-start.trace")); err != nil {
			fmt.Fprintf(logw, "  trace serve: %v\n", err)
		}
	})
	for _, p := range []struct{ name, addr string }{{"serve", servePprofAddr}, {"farm", farmPprofAddr}} {
		wg.Go(func() {
			get := func(path, file string) {
				if err := fetchTo(ctx, "http://"+p.addr+path, filepath.Join(c.ProfileDir, file)); err != nil {
					fmt.Fprintf(logw, "  profile %s: %v\n", p.name, err)
				}
			}
			for i := 1; ; i++ {
				select {
				case <-stop:
					get("/debug/pprof/heap", p.name+"-heap.pprof")
					return
				default:
				}
				get(fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(profileSlice/time.Second)), fmt.Sprintf("%s-cpu-%03d.pprof", p.name, i))
			}
		})
	}
	return &wg
}

// fetchTo writes the body of a GET of url to file.
func fetchTo(ctx context.Context, url, file string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
