package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/labctl/labctl/bench"
)

// runOptions are the flags of `labctl-bench run`.
type runOptions struct {
	quick  bool
	cases  []string
	rounds int
	work   string
	atftpd string
	repo   string // the repository (bin/, examples/, device-types/)
	labctl string // the labctl binary (cases 4 and 5)
	lava   string // Debian's LAVA 2023.01, unpacked (case 5)

	// Case 4 settings (0: the case's own).
	scaleNodes, scaleJobs int
	scaleInterval         time.Duration
	scaleShared           bool
	scaleProfile          string
	hosts                 int // case hosts: the hosts of its several-host setup
	webPagesOnly          bool
	webFollowers          int

	// Case 1 subsets (empty: the case's own lists).
	tftpFiles, tftpClients        []string
	tftpNs, tftpBlks, tftpWindows []int
	// Case 2 subsets (empty: the case's own lists).
	httpClients []string
	httpNs      []int
}

// runRun runs the cases in a private network namespace (dnsmasq's TFTP
// port is fixed at 69; the servers the bench starts and the load it sends
// stay on a loopback no one else uses) and prints the report to stdout.
func runRun(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var o runOptions
	casesFlag := fs.String("cases", "1,2,3,5,6,save,4,4x,4s,hosts,web", "cases to run, in this order: 1 tftp, 2 http, 3 sol typing, 4 scale (jobs at once), 4x case 4 at 2,000 fake nodes, 4s scale (a steady stream), hosts (case 4's lab on one host with SQLite, one with PostgreSQL, several on one PostgreSQL), 5 end to end, 6 boot methods (disk, NFS, ramdisk), save (labctl save throughput), web (the browser UI)")
	fs.BoolVar(&o.quick, "quick", false, "a small version of every case (a few minutes): proves the bench works, measures little")
	fs.IntVar(&o.rounds, "rounds", 0, "rounds per case (default 3, quick 2)")
	fs.StringVar(&o.work, "work", "build/bench", "work directory: served files, configs, logs")
	fs.StringVar(&o.atftpd, "atftpd", "", "atftpd binary (default WORK/atftpd/usr/sbin/atftpd, unpacked from the .deb)")
	fs.StringVar(&o.labctl, "labctl", "", "labctl binary for cases 4 and 5 (default REPO/bin/labctl)")
	fs.StringVar(&o.lava, "lava", "", "Debian's LAVA 2023.01 .debs unpacked here (case 5; default WORK/lava/2023.01)")
	fs.StringVar(&o.repo, "repo", ".", "the labctl repository: bin/labctl, bin/simlab, examples/, device-types/ (case 5)")
	peers := fs.String("peers", "", "cases 1 and 2: only these peers beside labctl (comma-separated: tftpd-hpa, atftpd, dnsmasq, nginx, busybox, labctl-old)")
	tftpFiles := fs.String("tftp-files", "", "case 1: only these files (comma-separated: pxelinux.0, initrd.img)")
	tftpClients := fs.String("tftp-clients", "", "case 1: only these load generators (bench, curl)")
	tftpNs := fs.String("tftp-n", "", "case 1: only these client counts (comma-separated)")
	tftpBlks := fs.String("tftp-blksize", "", "case 1: only these block sizes (0: none asked)")
	tftpWindows := fs.String("tftp-window", "", "case 1: only these window sizes (0: lock-step)")
	httpClients := fs.String("http-clients", "", "case 2: only these load generators (bench, wrk)")
	httpNs := fs.String("http-n", "", "case 2: only these client counts (comma-separated)")
	fs.IntVar(&o.scaleNodes, "scale-nodes", 0, "cases 4 and hosts: fake nodes, and as many jobs (default 400)")
	fs.IntVar(&o.scaleJobs, "scale-jobs", 0, "cases 4 and hosts: jobs (default: one per node)")
	fs.DurationVar(&o.scaleInterval, "scale-interval", 0, "case 4: submit a job every INTERVAL (a steady stream) instead of all at once")
	fs.BoolVar(&o.scaleShared, "scale-shared", false, "cases 4 and hosts: do not pin the daemon and the fake nodes to CPUs of their own")
	fs.IntVar(&o.hosts, "hosts", 3, "case hosts: the number of labctl serve hosts sharing one PostgreSQL (the nodes split over them)")
	fs.StringVar(&o.scaleProfile, "scale-profile", "", "case 4: write CPU profiles of the daemon and of the farm while the jobs run, and their heaps at the end, into `DIR` (go tool pprof)")
	fs.BoolVar(&o.webPagesOnly, "web-pages-only", false, "case web: the page loads only, no job followed (a few minutes)")
	fs.IntVar(&o.webFollowers, "web-followers", 0, "case web: the tabs following one job (0: 50, or 3 with -quick); with -quick, 50 measures how late 50 tabs see a job's end in a few minutes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.hosts < 2 || o.hosts > 64 {
		return fmt.Errorf("-hosts %d: give 2 to 64 hosts (the case compares them with one)", o.hosts)
	}
	o.tftpFiles, o.tftpClients = splitList(*tftpFiles), splitList(*tftpClients)
	o.httpClients = splitList(*httpClients)
	for _, l := range []struct {
		flag, v string
		dst     *[]int
	}{{"tftp-n", *tftpNs, &o.tftpNs}, {"tftp-blksize", *tftpBlks, &o.tftpBlks}, {"tftp-window", *tftpWindows, &o.tftpWindows}, {"http-n", *httpNs, &o.httpNs}} {
		for _, f := range splitList(l.v) {
			n, perr := strconv.Atoi(f)
			if perr != nil || n < 0 {
				return fmt.Errorf("-%s %q: %q is not a count", l.flag, l.v, f)
			}
			*l.dst = append(*l.dst, n)
		}
	}
	if abs, err := filepath.Abs(o.repo); err == nil {
		o.repo = abs
	}
	if o.labctl == "" {
		o.labctl = filepath.Join(o.repo, "bin", "labctl")
	}
	if o.lava == "" {
		o.lava = filepath.Join(o.work, "lava", "2023.01")
	}
	if abs, err := filepath.Abs(o.lava); err == nil {
		o.lava = abs
	}
	o.cases = strings.Split(*casesFlag, ",")
	casesSet := false
	fs.Visit(func(f *flag.Flag) { casesSet = casesSet || f.Name == "cases" })
	if o.quick && !casesSet {
		// Quick mode proves case 4 works once; the stream adds a minute,
		// and 4x is case 4 at another size.
		o.cases = slices.DeleteFunc(o.cases, func(c string) bool { return c == "4s" || c == "4x" })
	}
	if o.rounds == 0 {
		o.rounds = 3
		if o.quick {
			o.rounds = 2
		}
	}
	if !inPrivateNetns() {
		return reexecInNetns(stdout, stderr)
	}
	if err := exec.Command("ip", "link", "set", "lo", "up").Run(); err != nil {
		return fmt.Errorf("bring up loopback in the bench's network namespace: %w", err)
	}
	// tftpd-hpa resolves its -a address with AI_ADDRCONFIG, which fails
	// when 127.0.0.1 is the only IPv4 address; nothing is sent to .2.
	exec.Command("ip", "addr", "add", "127.0.0.2/8", "dev", "lo").Run()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	work, err := filepath.Abs(o.work)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	// Served files are shared (made once, only read); configs, logs and
	// the scale case's lab are this run's own: make test's bench-quick may
	// run beside a make bench.
	env := &bench.Env{Root: filepath.Join(work, "root"), Work: filepath.Join(work, fmt.Sprintf("run.%d", os.Getpid())), Self: self, ATFTPD: o.atftpd,
		Peers: splitList(*peers)}
	if env.ATFTPD == "" {
		env.ATFTPD = filepath.Join(work, "atftpd", "usr", "sbin", "atftpd")
	}
	for _, d := range []string{env.Root, env.Work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		os.Chmod(d, 0o755)
	}
	files := map[string]int64{"pxelinux.0": 100 << 10, "initrd.img": 30 << 20, "disk.img": 512 << 20, "disk-quick.img": 64 << 20}
	for name, size := range files {
		if err := ensureFile(filepath.Join(env.Root, name), size); err != nil {
			return err
		}
	}
	ulimitNoFile()

	fmt.Fprintf(stdout, "# labctl bench (%s)\n\n", map[bool]string{true: "quick: proves the bench works; figures are not comparable", false: "full"}[o.quick])
	fmt.Fprintf(stdout, "Machine: %s; load before start: %s. Servers and load generators share the machine, all traffic on loopback in a private network namespace.\n\n", machine(), loadavg())
	logw := stderr
	var results []bench.CaseResult
	var failed []string
	for _, c := range o.cases {
		t0 := time.Now()
		fmt.Fprintf(logw, "case %s ...\n", c)
		var r bench.CaseResult
		var err error
		switch strings.TrimSpace(c) {
		case "1":
			r, err = tftpCase(o).Run(ctx, env, stdout, logw)
		case "2":
			r, err = httpCase(o).Run(ctx, env, stdout, logw)
		case "3":
			r, err = solCase(o).Run(ctx, stdout, logw)
		case "4":
			r, err = scaleCase(o, 400).Run(ctx, env, stdout, logw)
		case "4x":
			r, err = scaleCase(o, 2000).Run(ctx, env, stdout, logw)
		case "4s":
			sc := scaleCase(o, 400)
			if sc.Interval == 0 {
				// 5 jobs a second: 400 fake nodes' jobs take longer
				// than the stream takes to come round to a node again.
				sc.Interval = 200 * time.Millisecond
			}
			r, err = sc.Run(ctx, env, stdout, logw)
		case "hosts":
			r, err = hostsCase(o).Run(ctx, env, stdout, logw)
		case "5":
			r, err = e2eCase(o).Run(ctx, env, stdout, logw)
		case "6":
			r, err = bootCase(o).Run(ctx, env, stdout, logw)
		case "save":
			r, err = saveCase(o).Run(ctx, env, stdout, logw)
		case "web":
			r, err = webCase(o).Run(ctx, env, stdout, logw)
		default:
			err = fmt.Errorf("unknown case %q", c)
		}
		fmt.Fprintf(logw, "case %s took %s\n", c, time.Since(t0).Round(time.Second))
		if err != nil {
			if errors.Is(err, bench.ErrSkipped) {
				fmt.Fprintf(stdout, "### Case %s: skipped: %v\n\n", c, err)
				results = append(results, bench.CaseResult{Name: c, Ratio: fmt.Sprintf("case %s: skipped: %v", c, err)})
				continue
			}
			fmt.Fprintf(stdout, "### Case %s: FAILED: %v\n\n", c, err)
			failed = append(failed, c)
			continue
		}
		results = append(results, r)
	}
	fmt.Fprintf(stdout, "Logs of this run: %s\n\n", env.Work)
	fmt.Fprintln(stdout, "## Ratios")
	fmt.Fprintln(stdout)
	for _, r := range results {
		mark := "labctl leads"
		if !r.Leads {
			mark = "labctl does NOT meet the target"
		}
		if strings.Contains(r.Ratio, "skipped") {
			mark = "not measured"
		}
		if strings.Contains(r.Ratio, "no target") {
			mark = "figures only"
		}
		// A case's verdict follows its first line; lines after it (case
		// 5's lossy console) carry their own figures and target.
		first, rest, more := strings.Cut(r.Ratio, "\n")
		fmt.Fprintf(stdout, "- %s — %s\n", first, mark)
		if more {
			fmt.Fprintln(stdout, rest)
		}
	}
	fmt.Fprintln(stdout)
	if len(failed) > 0 {
		return fmt.Errorf("cases failed: %s", strings.Join(failed, ", "))
	}
	return nil
}

// The case settings, full and quick.

func tftpCase(o runOptions) bench.TFTPCase {
	c := bench.TFTPCase{Rounds: o.rounds, Files: []string{"pxelinux.0", "initrd.img"}, Ns: []int{1, 50, 400, 1000},
		BlkSizes: []int{0, 1468}, Windows: []int{0, 8, 16}, Cap: 8 * time.Second, CapFrom: 64 << 20, SoloBytes: 32 << 20, Settle: time.Second,
		Generators: []string{bench.GenBench, bench.GenCurl}, CurlNs: []int{400, 1000}}
	if o.quick {
		c = bench.TFTPCase{Rounds: o.rounds, Files: []string{"pxelinux.0"}, Ns: []int{1, 50},
			BlkSizes: []int{0, 1468}, Windows: []int{0, 8}, Cap: 2 * time.Second, CapFrom: 64 << 20, SoloBytes: 2 << 20, Settle: 100 * time.Millisecond,
			Generators: []string{bench.GenBench, bench.GenCurl}, CurlNs: []int{50}}
	}
	if len(o.tftpFiles) > 0 {
		c.Files = o.tftpFiles
	}
	if len(o.tftpClients) > 0 {
		c.Generators = o.tftpClients
	}
	if len(o.tftpNs) > 0 {
		c.Ns, c.CurlNs = o.tftpNs, nil
	}
	if len(o.tftpBlks) > 0 {
		c.BlkSizes = o.tftpBlks
	}
	if len(o.tftpWindows) > 0 {
		c.Windows = o.tftpWindows
	}
	return c
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(v string) []string {
	var out []string
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func solCase(o runOptions) bench.SOLCase {
	c := bench.SOLCase{Rounds: o.rounds, Chars: 200, Fixed: []time.Duration{100 * time.Millisecond, 300 * time.Millisecond, 500 * time.Millisecond},
		EchoDelay: 2 * time.Millisecond, SlowEvery: 40, SlowDelay: 650 * time.Millisecond, MaxUnechoed: 1}
	if o.quick {
		c.Chars, c.SlowEvery = 20, 8
	}
	return c
}

// scaleCase is case 4's lab: nodes fake nodes and as many jobs (quick: 8;
// -scale-nodes and -scale-jobs override either).
func scaleCase(o runOptions, nodes int) bench.ScaleCase {
	c := bench.ScaleCase{Rounds: o.rounds, Nodes: nodes, Jobs: nodes, ImageSize: 2 << 20, Timeout: 30 * time.Minute,
		Labctl: o.labctl}
	if o.quick {
		c.Rounds, c.Nodes, c.Jobs, c.ImageSize, c.Timeout = 1, 8, 8, 1<<20, 5*time.Minute
	}
	if o.scaleNodes > 0 {
		c.Nodes, c.Jobs = o.scaleNodes, o.scaleNodes
	}
	if o.scaleJobs > 0 {
		c.Jobs = o.scaleJobs
	}
	c.Interval = o.scaleInterval
	if o.scaleProfile != "" {
		if abs, err := filepath.Abs(o.scaleProfile); err == nil {
			c.ProfileDir = abs
		}
	}
	// The daemon on CPU 0, the fake nodes on the others: the daemon's
	// latency is then its own, not the fake nodes' CPU time.
	if n := runtime.NumCPU(); n >= 2 && !o.scaleShared {
		c.DaemonCPUs, c.FarmCPUs = "0", "1"
		if n > 2 {
			c.FarmCPUs = fmt.Sprintf("1-%d", n-1)
		}
	}
	return c
}

// hostsCase runs case 4's lab (400 fake nodes and jobs; quick: 24, one
// round) on one host with SQLite, one with PostgreSQL and o.hosts on one
// PostgreSQL.
func hostsCase(o runOptions) bench.HostsCase {
	sc := scaleCase(o, 400)
	sc.Interval = 0
	if o.quick {
		sc.Rounds, sc.Nodes, sc.Jobs = 1, 24, 24
		if o.scaleNodes > 0 {
			sc.Nodes, sc.Jobs = o.scaleNodes, o.scaleNodes
		}
		if o.scaleJobs > 0 {
			sc.Jobs = o.scaleJobs
		}
	}
	return bench.HostsCase{Scale: sc, Hosts: o.hosts}
}

func bootCase(o runOptions) bench.BootCase {
	c := bench.BootCase{Rounds: o.rounds, Repo: o.repo, Labctl: o.labctl, Artifacts: simlabArtifacts(o)}
	if o.quick {
		c.Rounds, c.Methods = 1, []string{"nfs", "ramdisk"}
	}
	return c
}

// saveCase saves a 1 GiB disk a quarter full (quick: 256 MiB, one round).
func saveCase(o runOptions) bench.SaveCase {
	c := bench.SaveCase{Rounds: o.rounds, Repo: o.repo, Labctl: o.labctl, Artifacts: simlabArtifacts(o), DiskMiB: 1024}
	if o.quick {
		c.Rounds, c.DiskMiB = 1, 256
	}
	return c
}

func webCase(o runOptions) bench.WebCase {
	c := bench.WebCase{Rounds: o.rounds, Devices: 400, Finished: 10000, Followers: 50, Lines: 40, Labctl: o.labctl, Timeout: 45 * time.Minute, PagesOnly: o.webPagesOnly}
	if o.quick {
		c.Rounds, c.Devices, c.Finished, c.Followers, c.Lines, c.Timeout = 1, 8, 300, 3, 6, 5*time.Minute
	}
	if o.webFollowers > 0 {
		c.Followers = o.webFollowers
	}
	return c
}

// simlabArtifacts is the simulated lab's artifacts directory (cases 5, 6
// and save): $LABCTL_SIMLAB_ARTIFACTS, else the repository's.
func simlabArtifacts(o runOptions) string {
	if art := os.Getenv("LABCTL_SIMLAB_ARTIFACTS"); art != "" {
		return art
	}
	return filepath.Join(o.repo, "build", "simlab", "artifacts")
}

func e2eCase(o runOptions) bench.E2ECase {
	c := bench.E2ECase{Rounds: o.rounds, Repo: o.repo, Labctl: o.labctl, Artifacts: simlabArtifacts(o),
		LAVA: o.lava, Readback: true, Lossy: true}
	if o.quick {
		c.Rounds, c.LAVA, c.NoLAVA, c.Readback, c.Lossy = 1, "", "quick mode runs labctl only; the full bench runs LAVA", false, false
	}
	return c
}

func httpCase(o runOptions) bench.HTTPCase {
	c := bench.HTTPCase{Rounds: o.rounds, Image: "disk.img", Ns: []int{1, 50, 400}, Duration: 8 * time.Second, Slice: 2 * time.Second, Settle: time.Second,
		Generators: []string{bench.GenBench, bench.GenWrk}}
	if o.quick {
		c = bench.HTTPCase{Rounds: o.rounds, Image: "disk-quick.img", Ns: []int{1, 50}, Duration: time.Second, Settle: 100 * time.Millisecond,
			Generators: []string{bench.GenBench, bench.GenWrk}}
	}
	if len(o.httpClients) > 0 {
		c.Generators = o.httpClients
	}
	if len(o.httpNs) > 0 {
		c.Ns = o.httpNs
	}
	return c
}

// inPrivateNetns reports whether this process is the bench re-run by
// reexecInNetns in a network namespace of its own. (PID 1's namespace is
// no guide: in a container it is not the host's.)
func inPrivateNetns() bool {
	return os.Getenv("LABCTL_BENCH_NETNS") == "1"
}

// reexecInNetns runs this same command again in a new network namespace
// and waits for it.
func reexecInNetns(stdout, stderr io.Writer) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, stdout, stderr
	cmd.Env = append(os.Environ(), "LABCTL_BENCH_NETNS=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("bench (in its network namespace) exited %d", ee.ExitCode())
		}
		return fmt.Errorf("start the bench in a private network namespace (needs root): %w", err)
	}
	return nil
}

// ensureFile makes a file of random bytes of the given size, unless one of
// that size is there.
func ensureFile(path string, size int64) error {
	if fi, err := os.Stat(path); err == nil && fi.Size() == size {
		return os.Chmod(path, 0o644)
	}
	tmp := fmt.Sprintf("%s.tmp.%d", path, os.Getpid())
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	rng := rand.NewChaCha8([32]byte{byte(size), byte(size >> 8), byte(size >> 16), byte(size >> 24)})
	if _, err := io.CopyN(f, rng, size); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ulimitNoFile raises the descriptor limit to its maximum (1000 clients,
// each with a socket, and servers that inherit it).
func ulimitNoFile() {
	var r syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r) == nil && r.Cur < r.Max {
		r.Cur = r.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r)
	}
}

func machine() string {
	cpus := 0
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		cpus = strings.Count(string(b), "processor\t:")
	}
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name\t: "); ok {
				model = v
				break
			}
		}
	}
	var u syscall.Utsname
	syscall.Uname(&u)
	rel := strings.TrimRight(string(slices.Collect(func(yield func(byte) bool) {
		for _, c := range u.Release {
			if c == 0 || !yield(byte(c)) {
				return
			}
		}
	})), "\x00")
	return fmt.Sprintf("%d CPUs (%s), Linux %s", cpus, model, rel)
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
