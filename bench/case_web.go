package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"golang.org/x/sync/errgroup"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/api"
	"github.com/labctl/labctl/store"
)

// WebCase is the web case: the browser UI in headless Chromium against one
// `labctl serve` with Devices fake nodes (case 4's) and Finished finished
// jobs in its store: the lab and jobs pages' first render and time to
// live updates, then Followers tabs following one running job's log: the
// daemon's CPU and memory against one tab following the same job, and
// how late each tab sees the job end.
type WebCase struct {
	Rounds    int
	Devices   int
	Finished  int
	Followers int
	Lines     int // the followed job prints a line each half second
	// PagesOnly measures the page loads alone, no job followed.
	PagesOnly bool
	Labctl    string
	Timeout   time.Duration
}

const webToken = "labctl-bench-web-token"

// webRun is one round's figures.
type webRun struct {
	labRender, labLive, jobsRender []float64 // seconds, one per page load
	// per follow run: 1 tab, then Followers tabs
	cpu1, cpuN   float64 // daemon CPU s per s of the job's run
	rss1, rssN   float64 // daemon RSS peak MB while followed
	late1, lateN []float64
}

// Run runs the case.
func (c WebCase) Run(ctx context.Context, env *Env, w, logw io.Writer) (CaseResult, error) {
	res := CaseResult{Name: "web"}
	chromium := ""
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			chromium = p
			break
		}
	}
	if chromium == "" {
		return res, fmt.Errorf("%w: chromium not installed (make deps)", ErrSkipped)
	}
	if _, err := os.Stat(c.Labctl); err != nil {
		return res, fmt.Errorf("%w: %s missing (make build)", ErrSkipped, c.Labctl)
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		return res, fmt.Errorf("%w: busybox not installed (busybox-static)", ErrSkipped)
	}
	var runs []webRun
	for r := range c.Rounds {
		run, err := c.round(ctx, env, chromium, busybox, logw)
		if err != nil {
			return res, fmt.Errorf("round %d: %w", r+1, err)
		}
		fmt.Fprintf(logw, "  r%d lab render p50=%.3fs live p50=%.3fs jobs render p50=%.3fs; follow cpu 1 tab=%.4f %d tabs=%.4f core; rss %.1f/%.1f MB; end late p50 %.3f/%.3f s\n",
			r+1, Median(run.labRender), Median(run.labLive), Median(run.jobsRender), run.cpu1, c.Followers, run.cpuN, run.rss1, run.rssN, Median(run.late1), Median(run.lateN))
		runs = append(runs, run)
	}
	all := func(fn func(webRun) []float64) []float64 {
		var xs []float64
		for _, r := range runs {
			xs = append(xs, fn(r)...)
		}
		sort.Float64s(xs)
		return xs
	}
	one := func(fn func(webRun) float64) Stat {
		var xs []float64
		for _, r := range runs {
			xs = append(xs, fn(r))
		}
		return Summarize(xs)
	}
	fmt.Fprintf(w, "### Case web: the browser UI in headless Chromium, %d devices, %d finished jobs; %d tabs following one job (%d rounds)\n\n", c.Devices, c.Finished, c.Followers, c.Rounds)
	fmt.Fprintf(w, "One `labctl serve` with case 4's fake nodes and %d finished jobs put in its store before it starts; Debian's Chromium, headless, "+
		"logged in once. A page load is a new tab opening the page: *render* is from its navigation start to the first frame painted with every device (lab) or its first 100 jobs (jobs) shown, "+
		"*live* to the frame after its live stream said hello, both as the page records them. Tabs not measured wait on a blank page. Then a job on one fake node prints a line every half second for %.0f s, followed by one tab, "+
		"then another such job by %d tabs (each in a browser context of its own: its own login and connections, as separate people's browsers): the daemon's CPU (labctl serve alone) per second of the job's test step, its RSS peak, "+
		"and how late each tab shows the job's end after the daemon ended it (the tab's clock and the daemon's are the machine's).\n\n",
		c.Finished, float64(c.Lines)/2, c.Followers)
	t := &Table{Head: []string{"figure", "median [min–max] / percentiles"}}
	lr, ll, jr := all(func(r webRun) []float64 { return r.labRender }), all(func(r webRun) []float64 { return r.labLive }), all(func(r webRun) []float64 { return r.jobsRender })
	t.Add("**lab page first render s**", fmt.Sprintf("p50 %.3f, p90 %.3f (%d loads)", Percentile(lr, .5), Percentile(lr, .9), len(lr)))
	t.Add("lab page to live s", fmt.Sprintf("p50 %.3f, p90 %.3f", Percentile(ll, .5), Percentile(ll, .9)))
	t.Add("jobs page first render s", fmt.Sprintf("p50 %.3f, p90 %.3f", Percentile(jr, .5), Percentile(jr, .9)))
	if c.PagesOnly {
		t.Write(w)
		res.Ratio = fmt.Sprintf("case web: lab page of %d devices rendered in %.3f s p50 (target < 1 s); followers skipped (page loads only)", c.Devices, Percentile(lr, .5))
		fmt.Fprintf(w, "**ratio:** %s\n\n", res.Ratio)
		return res, nil
	}
	t.Add("daemon CPU, 1 follower (% of one core)", one(func(r webRun) float64 { return 100 * r.cpu1 }).Format(2))
	t.Add(fmt.Sprintf("daemon CPU, %d followers (%% of one core)", c.Followers), one(func(r webRun) float64 { return 100 * r.cpuN }).Format(2))
	extra := one(func(r webRun) float64 { return 100 * (r.cpuN - r.cpu1) })
	t.Add(fmt.Sprintf("**extra daemon CPU for %d followers (%% of one core)**", c.Followers), extra.Format(2))
	t.Add("daemon RSS peak MB, 1 / N followers", fmt.Sprintf("%s / %s", one(func(r webRun) float64 { return r.rss1 }).Format(1), one(func(r webRun) float64 { return r.rssN }).Format(1)))
	l1, lN := all(func(r webRun) []float64 { return r.late1 }), all(func(r webRun) []float64 { return r.lateN })
	t.Add("job end seen late s, 1 follower", fmt.Sprintf("p50 %.3f, max %.3f", Percentile(l1, .5), Percentile(l1, 1)))
	t.Add(fmt.Sprintf("job end seen late s, %d followers", c.Followers), fmt.Sprintf("p50 %.3f, p99 %.3f, max %.3f", Percentile(lN, .5), Percentile(lN, .99), Percentile(lN, 1)))
	base := Percentile(l1, .5)
	t.Add(fmt.Sprintf("extra latency per tab s, %d followers against 1", c.Followers), fmt.Sprintf("p50 %.3f, p99 %.3f", Percentile(lN, .5)-base, Percentile(lN, .99)-base))
	t.Write(w)
	render := Percentile(lr, .5)
	res.Leads = render < 1 && extra.Med < 5
	res.Ratio = fmt.Sprintf("case web: lab page of %d devices rendered in %.3f s p50 (target < 1 s); %d followers cost the daemon %.2f%% of a core more than one (target < 5%%)",
		c.Devices, render, c.Followers, extra.Med)
	fmt.Fprintf(w, "**ratio:** %s\n\n", res.Ratio)
	return res, nil
}

// round sets up the lab, runs the daemon and the browser, measures.
func (c WebCase) round(ctx context.Context, env *Env, chromium, busybox string, logw io.Writer) (webRun, error) {
	var run webRun
	dir := filepath.Join(env.Work, "web")
	os.RemoveAll(dir)
	sc := ScaleCase{Nodes: c.Devices, ImageSize: 1 << 20}
	_, labFiles, err := sc.writeLab(dir, busybox)
	if err != nil {
		return run, err
	}
	labFile := labFiles[0]
	defer os.RemoveAll(filepath.Join(dir, "nodes"))
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	// The devices are case 4's, played by its farm.
	daemonEnv := append(os.Environ(), "LABCTL_BENCH_TOKEN="+webToken, "LABCTL_BENCH_BMC_PASSWORD="+farmBMCPassword)
	farm, err := sc.startFarm(ctx, dir, env.Self, daemonEnv)
	if err != nil {
		return run, err
	}
	defer farm.stop()
	if err := fillFinished(ctx, filepath.Join(dir, "state", "labctl.db"), c.Finished, c.Devices); err != nil {
		return run, err
	}
	lab, err := os.ReadFile(labFile)
	if err != nil {
		return run, err
	}
	if err := os.WriteFile(labFile, []byte(strings.Replace(string(lab), `name = "bench-scale"`, `name = "bench-web"`, 1)), 0o644); err != nil {
		return run, err
	}

	// The daemon.
	serve, err := startServe("labctl-serve-web", c.Labctl, labFile, "", daemonEnv)
	if err != nil {
		return run, err
	}
	defer serve.stop()
	pid := serve.cmd.Process.Pid
	const server = "http://127.0.0.1:18470"
	client, err := api.NewClient(server, webToken, nil)
	if err != nil {
		return run, err
	}
	if err := serve.waitIdle(ctx, client, c.Devices); err != nil {
		return run, err
	}
	fmt.Fprintf(logw, "  %d devices idle, %d finished jobs in the store\n", c.Devices, c.Finished)

	// The browser, logged in.
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-timer-throttling", true), chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true), chromedp.UserDataDir(filepath.Join(dir, "chromium")), chromedp.WindowSize(1400, 900))
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	if err := chromedp.Do(bctx, login(server)); err != nil {
		return run, fmt.Errorf("log in: %w", err)
	}

	// Page loads: a new tab each. The page itself records when it first
	// showed what the load waits for, from its navigation start.
	for range 5 {
		lab, labWall, err := loadPage(bctx, server+"/#/lab", map[string]string{
			"render": fmt.Sprintf(`document.querySelectorAll("#devices tr[data-device]").length === %d`, c.Devices),
			"live":   `document.querySelector("#live")?.textContent.includes("live")`,
		})
		if err != nil {
			return run, fmt.Errorf("lab page: %w", err)
		}
		jobs, jobsWall, err := loadPage(bctx, server+"/#/jobs", map[string]string{
			"render": fmt.Sprintf(`document.querySelectorAll("#jobs tr[data-job]").length === %d`, min(100, c.Finished)),
		})
		if err != nil {
			return run, fmt.Errorf("jobs page: %w", err)
		}
		run.labRender, run.labLive = append(run.labRender, lab["render"]), append(run.labLive, lab["live"])
		run.jobsRender = append(run.jobsRender, jobs["render"])
		fmt.Fprintf(logw, "    lab page: render %.3fs (scripts run %.3fs, API answered %.3fs, rows built in %.3fs), live %.3fs, %.3fs from opening the tab; jobs page: render %.3fs (%.3fs, %.3fs), %.3fs from opening the tab\n",
			lab["render"], lab["dcl"], lab["api"], lab["draw"], lab["live"], labWall, jobs["render"], jobs["dcl"], jobs["api"], jobsWall)
	}

	// Following one job: 1 tab, then Followers tabs.
	spec := fmt.Sprintf(`name = "followed"
device = "node001"
timeout = "10m"
[deploy]
image = %q
sha256 = %q
[boot]
password = "test"
[[test]]
name = "lines"
commands = ["for i in $(seq 1 %d); do echo follow-line-$i; sleep 0.5; done"]
timeout = "5m"
`, filepath.Join(dir, "disk.img"), imageSum(filepath.Join(dir, "disk.img")), c.Lines)
	if c.PagesOnly {
		return run, nil
	}
	for _, tabs := range []int{1, c.Followers} {
		cpu, rss, late, err := c.follow(ctx, bctx, logw, client, server, dir, spec, pid, tabs)
		if err != nil {
			return run, fmt.Errorf("%d followers: %w", tabs, err)
		}
		if tabs == 1 {
			run.cpu1, run.rss1, run.late1 = cpu, rss, late
		} else {
			run.cpuN, run.rssN, run.lateN = cpu, rss, late
		}
	}
	return run, nil
}

// follow opens tabs, each its own browser context (its own login and
// connections, as separate people's browsers), submits the job, sends
// every tab to its page, and measures the daemon while they follow its
// test step to the end.
func (c WebCase) follow(ctx, bctx context.Context, logw io.Writer, client *api.Client, server, dir, spec string, pid, tabs int) (cpu, rssMB float64, late []float64, err error) {
	var tabCtxs []context.Context
	defer func() {
		for _, t := range tabCtxs {
			chromedp.Cancel(t)
		}
	}()
	for i := range tabs {
		tctx, _ := chromedp.NewContext(bctx, chromedp.WithNewBrowserContext())
		tabCtxs = append(tabCtxs, tctx)
		if err := chromedp.Do(tctx, login(server)); err != nil {
			return 0, 0, nil, fmt.Errorf("tab %d: %w", i+1, err)
		}
	}
	// What is measured is the job's test step; a job that ends before it
	// (its fake node fell behind on a busy machine: the deploy timed out)
	// is followed again as the attempt the daemon runs in its place, or
	// submitted again, at most twice.
	j, err := client.Submit(ctx, labctl.SubmitRequest{File: "followed.toml", Dir: dir, Spec: spec})
	if err != nil {
		return 0, 0, nil, err
	}
	for try := 1; ; try++ {
		var again int64
		again, err = followedJob(ctx, client, server, j.ID, tabCtxs)
		if err == nil {
			break
		}
		if again < 0 || try == 3 {
			return 0, 0, nil, err
		}
		if again == 0 {
			if j, err = client.Submit(ctx, labctl.SubmitRequest{File: "followed.toml", Dir: dir, Spec: spec}); err != nil {
				return 0, 0, nil, err
			}
			again = j.ID
		}
		fmt.Fprintf(logw, "    %v; following job %d instead\n", err, again)
		j.ID = again
	}
	t0, cpu0 := time.Now(), procCPU(pid)
	var peak int64
	var end labctl.Job
	for {
		peak = max(peak, RSSKB(pid, false))
		if end, err = client.Job(ctx, j.ID); err != nil {
			return 0, 0, nil, err
		}
		if end.State == labctl.JobFinished {
			break
		}
		select {
		case <-ctx.Done():
			return 0, 0, nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	cpu = (procCPU(pid) - cpu0) / time.Since(t0).Seconds()
	if end.Outcome != string(labctl.Complete) || end.Finished == nil {
		return 0, 0, nil, fmt.Errorf("job %d ended %s: %s", j.ID, end.Outcome, end.Reason)
	}
	// A tab that has not shown the end a minute after the job ended
	// counts as a minute late (and is logged).
	for i, tctx := range tabCtxs {
		wctx, cancel := context.WithTimeout(tctx, time.Until(end.Finished.Add(time.Minute)))
		err := chromedp.Do(wctx, waitJS(`window.benchEnd`))
		var shown int64
		if err == nil {
			shown, err = chromedp.Run(wctx, chromedp.Evaluate[int64](`window.benchEnd`))
		}
		cancel()
		if err != nil {
			fmt.Fprintf(logw, "    tab %d of %d did not show job %d's end within a minute: %v\n", i+1, tabs, j.ID, err)
			late = append(late, 60)
			continue
		}
		late = append(late, float64(shown-end.Finished.UnixMilli())/1000)
	}
	sort.Float64s(late)
	return cpu, float64(peak) / 1024, late, nil
}

// followedJob sends every tab to job id's page and waits until its test
// step runs. If the job ended before, again is the attempt the daemon
// runs in its place (0: none); on any other error it is -1.
func followedJob(ctx context.Context, client *api.Client, server string, id int64, tabCtxs []context.Context) (again int64, err error) {
	for i, tctx := range tabCtxs {
		if err := chromedp.Do(tctx,
			chromedp.Navigate(fmt.Sprintf("%s/#/job/%d", server, id)),
			waitJS(`document.querySelector("#outcome")`),
			chromedp.Evaluate[chromedp.Void](`window.benchEnd = 0; new MutationObserver(() => {
				if (!window.benchEnd && document.querySelector("#outcome")?.textContent === "complete") window.benchEnd = Date.now();
			}).observe(document.body, {subtree: true, childList: true, characterData: true});`)); err != nil {
			return -1, fmt.Errorf("tab %d to the job: %w", i+1, err)
		}
	}
	for {
		jj, err := client.Job(ctx, id)
		if err != nil {
			return -1, err
		}
		if jj.State == labctl.JobFinished {
			return jj.RetriedAs, fmt.Errorf("job %d ended %s before its test step was followed: %s", id, jj.Outcome, jj.Reason)
		}
		if jj.Phase == "test" {
			return 0, nil
		}
		select {
		case <-ctx.Done():
			return -1, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// login logs the tab in with the bench's token, then leaves the page it
// lands on (the lab's) for a blank one: a tab parked on the lab page
// keeps reloading and redrawing it, load that is neither the page load
// nor the following measured.
func login(server string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(
		chromedp.Navigate(server+"/login"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), webToken),
		chromedp.Submit(chromedp.CSS("#token")),
		waitJS(`document.querySelector("#who")?.textContent.includes("(")`),
		chromedp.Navigate("about:blank"))
}

// loadPage opens url in a new tab (closed after) and waits until each of
// conds (name: a JavaScript expression) has come true on the page. It
// returns, per name, the seconds from the page's navigation start to the
// first frame painted after the expression came true, as the page
// records it (a script run before the page's own watches every change
// of its document), and the seconds from asking for the tab to the end.
func loadPage(bctx context.Context, url string, conds map[string]string) (map[string]float64, float64, error) {
	tctx, cancel := chromedp.NewContext(bctx)
	defer cancel()
	t0 := time.Now()
	var script strings.Builder
	script.WriteString("(() => {\n  const conds = {\n")
	for name, expr := range conds {
		fmt.Fprintf(&script, "    %q: () => (%s),\n", name, expr)
	}
	script.WriteString(`  };
  const marks = window.benchMarks = {};
  const check = () => {
    for (const [k, f] of Object.entries(conds)) {
      if (k in marks) continue;
      let ok = false;
      try { ok = !!f(); } catch (e) { /* not there yet */ }
      if (!ok) continue;
      marks[k] = 0;
      requestAnimationFrame(() => setTimeout(() => { marks[k] = performance.now() / 1000; }, 0));
    }
  };
  new MutationObserver(check).observe(document, { subtree: true, childList: true, characterData: true });
})();
`)
	err := chromedp.Do(tctx,
		chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := cdp.Call(ctx, t, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: script.String()})
			return err
		}),
		chromedp.Navigate(url),
		waitJS(fmt.Sprintf(`%s.every((k) => window.benchMarks?.[k] > 0)`, jsNames(conds))))
	if err != nil {
		return nil, 0, err
	}
	// Where the time went, for the log: the page's scripts had run (DOM
	// content loaded), the answers to its first requests for data (those
	// started together) had arrived, and the lab page's first building
	// of its rows took (its "lab draw" measure).
	marks, err := chromedp.Run(tctx, chromedp.Evaluate[map[string]float64](`(() => {
		const data = performance.getEntriesByType("resource").filter((r) => r.name.includes("/api/v1/"));
		const first = data.filter((r) => r.startTime <= (data[0]?.startTime ?? 0) + 50);
		return {...window.benchMarks,
			dcl: performance.getEntriesByType("navigation")[0].domContentLoadedEventEnd / 1000,
			api: Math.max(0, ...first.map((r) => r.responseEnd)) / 1000,
			draw: (performance.getEntriesByName("lab draw", "measure")[0]?.duration ?? 0) / 1000};
	})()`))
	return marks, time.Since(t0).Seconds(), err
}

// jsNames is the names of m as a JavaScript array.
func jsNames[V any](m map[string]V) string {
	var names []string
	for k := range m {
		names = append(names, strconv.Quote(k))
	}
	sort.Strings(names)
	return "[" + strings.Join(names, ", ") + "]"
}

// waitJS waits until the expression is truthy, asking every 20 ms (also
// across page loads).
func waitJS(expr string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		for {
			ok, err := chromedp.Evaluate[bool]("!!("+expr+")")(ctx, t)
			if err == nil && ok {
				return chromedp.Void{}, nil
			}
			select {
			case <-ctx.Done():
				return chromedp.Void{}, errors.Join(ctx.Err(), err)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

// fillFinished puts n finished jobs in a new SQLite store at path, many
// at a time (the store commits concurrent writes together), run on the
// lab's devices (node001 to node<devices>) in turn.
func fillFinished(ctx context.Context, path string, n, devices int) error {
	st, err := store.OpenSQLite(path)
	if err != nil {
		return err
	}
	defer st.Close()
	at := time.Now().Add(-time.Duration(n) * time.Minute)
	outcomes := []string{"complete", "complete", "complete", "failed", "incomplete"}
	var g errgroup.Group
	g.SetLimit(64)
	for i := range n {
		g.Go(func() error {
			sub := at.Add(time.Duration(i) * time.Minute)
			j, err := st.CreateJob(ctx, store.Job{Name: fmt.Sprintf("nightly-%d", i), File: "nightly.toml", Dir: "/", Spec: "name = \"nightly\"\n",
				DeviceType: "fake-node", Priority: "normal", Submitter: "bench", Submitted: sub})
			if err != nil {
				return err
			}
			if err := st.ClaimJob(ctx, j.ID, fmt.Sprintf("node%03d", i%devices+1), sub.Add(time.Second)); err != nil {
				return err
			}
			return st.FinishJob(ctx, j.ID, store.Running, store.Finish{Outcome: outcomes[i%len(outcomes)], At: sub.Add(40 * time.Second)})
		})
	}
	return g.Wait()
}

// imageSum is the sha256 of a file, in hex ("" if it cannot be read).
func imageSum(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
