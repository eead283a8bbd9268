package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/labctl/labctl/store/pgtest"
)

// HostsCase runs case 4's lab (its fake nodes, its jobs submitted at
// once) three ways, rotated each round: one `labctl serve` on its SQLite
// file, one on PostgreSQL, and Hosts of them on one PostgreSQL database,
// the nodes split over their lab files. Every job is submitted through
// the first host, so in a lab of several hosts most of them start on
// another host than the one that took the submit.
type HostsCase struct {
	// Scale is the lab, the jobs and the CPU pinning; its Rounds are the
	// case's and its Hosts and Postgres are set per setup.
	Scale ScaleCase
	// Hosts is the number of hosts of the several-host setup.
	Hosts int
}

// hostsSetup is one way of running the lab.
type hostsSetup struct {
	name     string
	hosts    int
	postgres bool
}

// setups are the ways the case runs the lab: the first is the SQLite
// host the ratio divides by, the last the several hosts.
func (c HostsCase) setups() []hostsSetup {
	return []hostsSetup{
		{"1 host, SQLite", 1, false},
		{"1 host, PostgreSQL", 1, true},
		{fmt.Sprintf("%d hosts, one PostgreSQL", c.Hosts), c.Hosts, true},
	}
}

// Run starts a PostgreSQL server (Debian's, as store/pgtest starts it
// for the store's tests: a temporary cluster on a loopback port), pinned
// to the daemons' CPUs and counted in a control group of its own, then
// runs every setup each round on a fresh database.
func (c HostsCase) Run(ctx context.Context, env *Env, w, logw io.Writer) (CaseResult, error) {
	res := CaseResult{Name: "hosts"}
	busybox, err := c.Scale.needs()
	if err != nil {
		return res, err
	}
	setups := c.setups()
	pg, err := pgtest.Start()
	if err != nil {
		return res, fmt.Errorf("PostgreSQL (Debian's postgresql package: make deps): %w", err)
	}
	db := NewGroup("postgres")
	defer db.Remove()
	defer pg.Stop()
	server := processTree(pg.Pid())
	if err := db.Add(server...); err != nil {
		return res, err
	}
	for _, pid := range server {
		if err := PinToCPUs(pid, c.Scale.DaemonCPUs); err != nil {
			return res, fmt.Errorf("PostgreSQL: %w", err)
		}
	}

	runs := make([][]scaleRun, len(setups))
	for r := range c.Scale.Rounds {
		for _, i := range rotate([]int{0, 1, 2}, r) {
			s := setups[i]
			sc := c.Scale
			sc.Hosts, sc.Postgres, sc.db = s.hosts, "", nil
			if s.postgres {
				if sc.Postgres, err = pg.NewDatabase(); err != nil {
					return res, fmt.Errorf("PostgreSQL: %w", err)
				}
				sc.db = db
			}
			run, err := sc.round(ctx, env, busybox, fmt.Sprintf("r%d %s:", r+1, s.name), logw)
			if err != nil {
				return res, fmt.Errorf("%s: %w", s.name, err)
			}
			runs[i] = append(runs[i], run)
		}
	}
	return c.report(w, setups, runs), nil
}

// report writes the table of the setups' runs (runs[i]: setup i's, one
// per round) and the ratio: each round's several-host p99 over its
// SQLite p99, over the rounds.
func (c HostsCase) report(w io.Writer, setups []hostsSetup, runs [][]scaleRun) CaseResult {
	res := CaseResult{Name: "hosts"}
	pinned := "daemons, PostgreSQL and fake nodes share every CPU"
	if c.Scale.DaemonCPUs != "" {
		pinned = fmt.Sprintf("daemons and PostgreSQL pinned to CPU %s, fake nodes to CPU %s", c.Scale.DaemonCPUs, c.Scale.FarmCPUs)
	}
	fmt.Fprintf(w, "### Case hosts: one lab, one or %d hosts, SQLite or PostgreSQL: %d fake nodes, %d jobs submitted at once through the first host; %s (%d rounds)\n\n",
		c.Hosts, c.Scale.Nodes, c.Scale.Jobs, pinned, c.Scale.Rounds)
	fmt.Fprintf(w, "Case 4's lab and jobs (fake nodes played by one `labctl-bench farm`, a %s image per job), run three ways, the order rotated each round: "+
		"one `labctl serve` on its SQLite file; one on PostgreSQL; %d on one PostgreSQL database, each with its own lab file holding a contiguous block of the nodes, "+
		"its own boot server and API, labctl's default lease and poll (15 s, 1 s). Every job is submitted through the first host (64 clients at once), "+
		"so in the lab of several hosts about %d in %d jobs start on a host that learns of them from the database (its NOTIFY, else its poll). "+
		"PostgreSQL is Debian's server as the store's tests start it (store/pgtest: a temporary cluster on a loopback port, synchronous_commit and fsync off; "+
		"SQLite runs WAL with synchronous=NORMAL: neither flushes each commit), a fresh database per run; its CPU is the server and every backend (a control group). "+
		"Daemon CPU is every labctl serve process. Queue-to-start is a job's Started minus its Submitted as the API reports them, "+
		"submit-to-dispatch its results.json Started (the dispatcher's start, after every commit) minus Submitted (case 4).\n\n",
		sizeName(c.Scale.ImageSize), c.Hosts, c.Hosts-1, c.Hosts)
	head := []string{"figure"}
	for _, s := range setups {
		head = append(head, s.name+" median [min–max]")
	}
	t := &Table{Head: head}
	row := func(label string, dec int, fn func(scaleRun) float64) {
		cells := []string{label}
		for i := range setups {
			var xs []float64
			for _, r := range runs[i] {
				xs = append(xs, fn(r))
			}
			cells = append(cells, Summarize(xs).Format(dec))
		}
		t.Add(cells...)
	}
	complete := make([]int, len(setups))
	cells := []string{"jobs complete (each by its last attempt)"}
	firsts := []string{"first attempts complete (retried)"}
	for i := range setups {
		first, retried := 0, 0
		for _, r := range runs[i] {
			complete[i] += r.complete
			first += r.firstComplete
			retried += r.retried
		}
		cells = append(cells, fmt.Sprintf("%d of %d", complete[i], c.Scale.Jobs*len(runs[i])))
		firsts = append(firsts, fmt.Sprintf("%d of %d (%d)", first, c.Scale.Jobs*len(runs[i]), retried))
	}
	t.Add(cells...)
	t.Add(firsts...)
	cells = []string{"jobs run by each host (last round)"}
	for i := range setups {
		var per []string
		if n := len(runs[i]); n > 0 {
			for _, x := range runs[i][n-1].perHost {
				per = append(per, fmt.Sprint(x))
			}
		}
		cells = append(cells, strings.Join(per, " / "))
	}
	t.Add(cells...)
	cells = []string{"queue-to-start p99 ms of each host's jobs (last round)"}
	for i := range setups {
		var per []string
		if n := len(runs[i]); n > 0 {
			for _, xs := range runs[i][n-1].hostQ2s {
				per = append(per, f(1000*Percentile(xs, .99), 1))
			}
		}
		cells = append(cells, strings.Join(per, " / "))
	}
	t.Add(cells...)
	ms := func(xs func(scaleRun) []float64, q float64) func(scaleRun) float64 {
		return func(r scaleRun) float64 { return 1000 * Percentile(xs(r), q) }
	}
	q2s := func(r scaleRun) []float64 { return r.q2s }
	submit := func(r scaleRun) []float64 { return r.submit }
	row("queue-to-start p50 ms", 1, ms(q2s, .5))
	row("**queue-to-start p99 ms**", 1, ms(q2s, .99))
	row("queue-to-start max ms", 1, ms(q2s, 1))
	q2d := func(r scaleRun) []float64 { return r.q2d }
	row("submit-to-dispatch p50 ms", 1, ms(q2d, .5))
	row("submit-to-dispatch p99 ms", 1, ms(q2d, .99))
	row("submit request p50 ms", 1, ms(submit, .5))
	row("submit request p99 ms", 1, ms(submit, .99))
	row("**submits per second** (jobs ÷ first submit to last answered)", 0, func(r scaleRun) float64 { return float64(c.Scale.Jobs) / r.submitWall })
	row("all jobs, submit to last finish s", 1, func(r scaleRun) float64 { return r.wall })
	row("**daemon CPU ms per job** (every labctl serve)", 1, func(r scaleRun) float64 { return 1000 * r.daemonCPU / float64(c.Scale.Jobs) })
	row("PostgreSQL CPU ms per job (server and backends)", 1, func(r scaleRun) float64 { return 1000 * r.dbCPU / float64(c.Scale.Jobs) })
	row("daemon run-queue wait s (runnable, not running: CPU taken by others)", 1, func(r scaleRun) float64 { return r.runWait })
	row("farm CPU s (every fake node)", 1, func(r scaleRun) float64 { return r.treeCPU })
	row("daemons' RSS peak MB (summed)", 1, func(r scaleRun) float64 { return r.rssPeakMB })
	row("start-up: serve to every device idle s", 1, func(r scaleRun) float64 { return r.startupS })
	t.Write(w)

	// The ratio of each round's runs (the setups of a round ran back to
	// back, under the same load), over the rounds. The targets are judged
	// on submit-to-dispatch: a job stored claimed at submit has both its
	// queue-to-start stamps before its one commit, so that figure leaves
	// the commit out (microseconds on one host).
	sqlite, several := runs[0], runs[2]
	var ratios, p99s, q2sP99s []float64
	for r := range min(len(sqlite), len(several)) {
		a, b := Percentile(several[r].q2d, .99), Percentile(sqlite[r].q2d, .99)
		if b > 0 {
			ratios = append(ratios, a/b)
		}
		p99s = append(p99s, 1000*a)
		q2sP99s = append(q2sP99s, 1000*Percentile(several[r].q2s, .99))
	}
	ratio, p99, q2sP99 := Summarize(ratios), Summarize(p99s), Summarize(q2sP99s)
	allComplete := true
	for i := range setups {
		allComplete = allComplete && complete[i] == c.Scale.Jobs*len(runs[i])
	}
	res.Leads = allComplete && ratio.Med <= 2 && p99.Med < 100
	ratioText := "–"
	if !math.IsNaN(ratio.Med) {
		ratioText = fmt.Sprintf("%.2fx [%.2f–%.2f]", ratio.Med, ratio.Min, ratio.Max)
	}
	res.Ratio = fmt.Sprintf("case hosts (%d hosts on one PostgreSQL vs 1 host on SQLite, %d fake nodes): submit-to-dispatch p99 %d hosts ÷ 1 SQLite host %s (target ≤ 2x); "+
		"%d-host p99 %s ms (target < 100 ms; queue-to-start p99 %s ms); jobs complete %d/%d, %d/%d, %d/%d",
		c.Hosts, c.Scale.Nodes, c.Hosts, ratioText, c.Hosts, p99.Format(1), q2sP99.Format(1),
		complete[0], c.Scale.Jobs*len(runs[0]), complete[1], c.Scale.Jobs*len(runs[1]), complete[2], c.Scale.Jobs*len(runs[2]))
	fmt.Fprintf(w, "**ratio:** %s\n\n", res.Ratio)
	return res
}
