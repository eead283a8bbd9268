package web

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/daemon"

	"github.com/labctl/labctl/web/webtest"
)

// testOutput is where browser tests leave screenshots and console logs
// when they fail: build/test-output/TEST under the repository.
func testOutput(t *testing.T) string {
	return filepath.Join("..", "build", "test-output", t.Name())
}

// TestBrowserLoginAndCSRF: in Chromium, against the UI and the API over
// a fake lab: the login form, the lab page, and another site's form that
// posts to the API with the logged-in browser's cookie.
func TestBrowserLoginAndCSRF(t *testing.T) {
	h := start(t, Config{})
	b := webtest.Start(t, testOutput(t))
	tab := b.NewTab("operator")

	// A wrong token: back to the form, told so.
	tab.Run("wrong token", time.Minute,
		chromedp.Navigate(h.srv.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), "not-a-token"),
		chromedp.Submit(chromedp.CSS("#token")),
		chromedp.WaitVisible(chromedp.CSS("#failed")))
	tab.Login(h.srv.URL, "operator-secret")
	tab.Run("lab page", time.Minute,
		webtest.WaitText("#who", "alice (operator)"),
		webtest.WaitText(`tr[data-device="node1"] td.state`, "idle"),
		webtest.WaitText("#live", "live"))
	// An event brings its device as it is now: the page asks the API
	// nothing, and keeps a row that did not change (the same element).
	loads := `performance.getEntriesByType("resource").filter((r) => r.name.endsWith("/api/v1/devices")).length`
	draws := `performance.getEntriesByName("lab draw", "measure").length`
	before, err := webtest.Eval[int](tab, loads)
	if err != nil {
		t.Fatal(err)
	}
	drawn, err := webtest.Eval[int](tab, draws)
	if err != nil {
		t.Fatal(err)
	}
	if before != 1 {
		t.Errorf("the lab page read the device list %d times to show it, want once", before)
	}
	if _, err := webtest.Eval[bool](tab, `document.querySelector('tr[data-device="node1"]').kept = true`); err != nil {
		t.Fatal(err)
	}
	h.ui.Hub().HealthChecked(daemon.HealthCheck{Device: "node1"})
	tab.Run("redraw after an event", time.Minute, webtest.WaitJS(fmt.Sprintf("%s > %d", draws, drawn)))
	if kept, err := webtest.Eval[bool](tab, `!!document.querySelector('tr[data-device="node1"]').kept`); err != nil || !kept {
		t.Errorf("an event that changed nothing built node1's row again (%v)", err)
	}
	// A change in the lab shows, in a new row, without reading the lab again.
	h.svc.mu.Lock()
	h.svc.state = labctl.DeviceOffline
	h.svc.mu.Unlock()
	h.ui.Hub().DeviceChanged(daemon.DeviceChange{Device: "node1", From: labctl.DeviceIdle, To: labctl.DeviceOffline, At: time.Now()})
	tab.Run("live update", time.Minute, webtest.WaitText(`tr[data-device="node1"] td.state`, "offline"))
	if kept, err := webtest.Eval[bool](tab, `!!document.querySelector('tr[data-device="node1"]').kept`); err != nil || kept {
		t.Errorf("node1 went offline and its row is the old one (%v)", err)
	}
	// A job's start, phase and end show in the device's row from the
	// events alone.
	h.svc.mu.Lock()
	h.svc.state, h.svc.job = labctl.DeviceRunning, 42
	h.svc.mu.Unlock()
	h.ui.Hub().JobStarted(daemon.JobStart{ID: 42, Name: "nightly", Device: "node1", Started: time.Now()})
	h.ui.Hub().JobPhase(daemon.JobPhase{ID: 42, Device: "node1", Phase: "deploy", At: time.Now()})
	tab.Run("job phase", time.Minute, webtest.WaitJS(`document.querySelector('tr[data-device="node1"] [data-phase="deploy"]')`),
		webtest.WaitText(`tr[data-device="node1"]`, "nightly #42"))
	h.svc.mu.Lock()
	h.svc.state, h.svc.job = labctl.DeviceIdle, 0
	h.svc.mu.Unlock()
	h.ui.Hub().JobEnded(daemon.JobEnd{ID: 42, Device: "node1", Outcome: "complete", Finished: time.Now()})
	tab.Run("job end", time.Minute, webtest.WaitText(`tr[data-device="node1"] td.state`, "idle"))
	if txt := tab.Text(`tr[data-device="node1"]`); strings.Contains(txt, "#42") {
		t.Errorf("node1's row after the job ended: %q", txt)
	}
	if after, err := webtest.Eval[int](tab, loads); err != nil || after != before {
		t.Errorf("the page read the device list %d times after events, want %d (%v)", after, before, err)
	}
	// The token is nowhere in what the page can read.
	if cookie, err := webtest.Eval[string](tab, "document.cookie"); err != nil || strings.Contains(cookie, "operator-secret") || strings.Contains(cookie, CookieName) {
		t.Errorf("document.cookie = %q, %v: the session cookie must be HttpOnly", cookie, err)
	}

	// Another origin (another port of the same host: the same site, so
	// SameSite lets the cookie go) posts a form to the API.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><form id="f" method="post" enctype="text/plain" action="%s/api/v1/devices/node1/maintenance">
<input name='{"reason":"evil","x":"' value='"}'></form><script>document.getElementById("f").submit()</script>`, h.srv.URL)
	}))
	defer evil.Close()
	tab.Run("another site's form", time.Minute,
		chromedp.Navigate(evil.URL),
		webtest.WaitJS(fmt.Sprintf(`location.href.startsWith(%q)`, h.srv.URL+"/api/")),
		webtest.WaitText("body", "forbidden"))
	if got := tab.Text("body"); !strings.Contains(got, "origin") && !strings.Contains(got, CSRFHeader) {
		t.Errorf("the refusal does not say why: %s", got)
	}
	if len(h.svc.calls) != 0 {
		t.Errorf("the API acted on another site's form: %q", h.svc.calls)
	}
	// The same request from the page itself, with its CSRF token, works.
	tab.Run("back to the lab page", time.Minute, chromedp.Navigate(h.srv.URL+"/#/lab"), webtest.WaitText("#who", "alice"))
	status, err := webtest.Eval[int](tab, `(async () => {
		const s = await (await fetch("/ui/session")).json();
		const r = await fetch("/api/v1/devices/node1/maintenance", {method: "POST", headers: {"X-Labctl-Csrf": s.csrf, "Content-Type": "application/json"}, body: '{"reason":"from the page"}'});
		return r.status; })()`)
	if err != nil || status != 200 || len(h.svc.calls) != 1 {
		t.Errorf("the page's own request: %d, %v; calls %q", status, err, h.svc.calls)
	}
}

// TestBrowserJobsPage: the jobs page pages through many jobs by ID,
// shows a queued job's place and reason, shows jobs submitted and ended
// from the live stream without reading its list again, and filters.
func TestBrowserJobsPage(t *testing.T) {
	h := start(t, Config{})
	at := time.Date(2026, 3, 4, 5, 0, 0, 0, time.UTC)
	for i := 1; i <= 250; i++ {
		outcome := "complete"
		if i%10 == 0 {
			outcome = "failed"
		}
		s, f := at.Add(time.Duration(i)*time.Minute), at.Add(time.Duration(i)*time.Minute+30*time.Second)
		h.svc.jobs = append(h.svc.jobs, labctl.Job{ID: int64(i), Name: fmt.Sprintf("nightly-%d", i), Device: "node1", DeviceType: "sim",
			Submitter: "ci", State: labctl.JobFinished, Outcome: outcome, Submitted: s, Started: &s, Finished: &f})
	}
	h.svc.jobs = append(h.svc.jobs,
		labctl.Job{ID: 251, Name: "waits", DeviceType: "sim", Submitter: "alice", State: labctl.JobQueued, Position: 1, Reason: "waiting: node1 runs job 250", Submitted: at})
	b := webtest.Start(t, testOutput(t))
	tab := b.NewTab("viewer")
	tab.Login(h.srv.URL, "viewer-secret")
	rows := `document.querySelectorAll("#jobs tr").length`
	first := `document.querySelector("#jobs tr")?.dataset.job`
	tab.Run("the first page", time.Minute,
		chromedp.Navigate(h.srv.URL+"/#/jobs"),
		webtest.WaitJS(rows+` === 100 && `+first+` === "251"`))
	if got := tab.Text(`tr[data-job="251"]`); !strings.Contains(got, "#1") || !strings.Contains(got, "node1 runs job 250") {
		t.Errorf("the queued job's row %q: want its place and why it waits", got)
	}
	// A job submitted shows from the stream alone, and so does its
	// cancel: the page does not read the list again.
	// The jobs page's reads of the list (the lab page's ask state= first).
	reads := `performance.getEntriesByType("resource").filter((r) => r.name.includes("/api/v1/jobs?limit=")).length`
	read, err := webtest.Eval[int](tab, reads)
	if err != nil || read != 1 {
		t.Errorf("the jobs page read the list %d times to show it, want once (%v)", read, err)
	}
	h.svc.mu.Lock()
	h.svc.jobs = append(h.svc.jobs, labctl.Job{ID: 252, Name: "joins", DeviceType: "sim", Submitter: "alice", State: labctl.JobQueued,
		Position: 2, Reason: "waiting: behind job 251", Submitted: at})
	h.svc.mu.Unlock()
	h.ui.Hub().JobQueued(daemon.JobQueued{ID: 252, Name: "joins", Submitter: "alice", DeviceType: "sim", Submitted: at})
	tab.Run("a job submitted", time.Minute,
		webtest.WaitJS(first+` === "252"`),
		webtest.WaitText(`tr[data-job="252"]`, "#2 waiting: behind job 251"),
		webtest.WaitJS(rows+` === 100`))
	h.svc.mu.Lock()
	h.svc.jobs[251].State, h.svc.jobs[251].Outcome, h.svc.jobs[251].Position = labctl.JobFinished, "canceled", 0
	h.svc.mu.Unlock()
	h.ui.Hub().JobEnded(daemon.JobEnd{ID: 252, Outcome: "canceled", Finished: at})
	tab.Run("the job canceled in the queue", time.Minute, webtest.WaitText(`tr[data-job="252"] td.outcome-canceled`, "canceled"))
	if again, err := webtest.Eval[int](tab, reads); err != nil || again != read {
		t.Errorf("the jobs page read the list %d times after the events, want %d (%v)", again, read, err)
	}
	// A filtered page cannot place a job that leaves its filter: it reads
	// the page again.
	tab.Run("queued only", time.Minute,
		webtest.Choose("#f-state", "queued"),
		webtest.WaitJS(rows+` === 1 && `+first+` === "251"`))
	h.svc.mu.Lock()
	started := at.Add(time.Hour)
	h.svc.jobs[250].State, h.svc.jobs[250].Device, h.svc.jobs[250].Started, h.svc.jobs[250].Position = labctl.JobRunning, "node1", &started, 0
	h.svc.mu.Unlock()
	h.ui.Hub().JobStarted(daemon.JobStart{ID: 251, Name: "waits", Device: "node1", Started: started})
	tab.Run("the queued job started", time.Minute, webtest.WaitJS(rows+` === 0`))
	tab.Run("any state", time.Minute,
		webtest.Choose("#f-state", ""),
		webtest.WaitText(`tr[data-job="251"]`, "running"))
	tab.Run("older", time.Minute,
		chromedp.Click(chromedp.CSS("#older")),
		webtest.WaitJS(rows+` === 100 && `+first+` === "152"`))
	tab.Run("older again: the last page", time.Minute,
		chromedp.Click(chromedp.CSS("#older")),
		webtest.WaitJS(rows+` === 52 && `+first+` === "52"`),
		webtest.WaitJS(`document.querySelector("#older").disabled`))
	tab.Run("newer", time.Minute,
		chromedp.Click(chromedp.CSS("#newer")),
		webtest.WaitJS(first+` === "152"`))
	tab.Run("failed only, on this page", time.Minute,
		webtest.Choose("#f-outcome", "failed"),
		webtest.WaitJS(`(() => { const r = [...document.querySelectorAll("#jobs tr")]; return r.length === 10 && r.every((x) => x.textContent.includes("failed")); })()`))
	tab.Run("running only, from the daemon", time.Minute,
		webtest.Choose("#f-outcome", ""),
		webtest.Choose("#f-state", "running"),
		webtest.WaitJS(rows+` === 1 && `+first+` === "251"`))
}

// TestBrowserXtermOnlyOnTheConsole: the lab and jobs pages do not load
// xterm.js; the console page loads it (once) and opens its terminal.
func TestBrowserXtermOnlyOnTheConsole(t *testing.T) {
	h := start(t, Config{})
	b := webtest.Start(t, testOutput(t))
	tab := b.NewTab("operator")
	tab.Login(h.srv.URL, "operator-secret")
	loaded := `performance.getEntriesByType("resource").filter((r) => r.name.endsWith("/vendor/xterm.js")).length`
	tab.Run("lab page", time.Minute, webtest.WaitText(`tr[data-device="node1"] td.state`, "idle"))
	tab.Run("jobs page", time.Minute, chromedp.Navigate(h.srv.URL+"/#/jobs"), webtest.WaitText("#who", "alice"),
		webtest.WaitJS(`document.querySelector(".pager")`))
	if n, err := webtest.Eval[int](tab, loaded); err != nil || n != 0 {
		t.Errorf("the lab and jobs pages loaded xterm.js %d times (%v)", n, err)
	}
	if typ, _ := webtest.Eval[string](tab, "typeof Terminal"); typ != "undefined" {
		t.Errorf("Terminal is %s on the jobs page", typ)
	}
	// This fake lab has no console: the terminal opens, the connection
	// does not.
	hash := func(route string) chromedp.Action[chromedp.Void] {
		return chromedp.Evaluate[chromedp.Void](fmt.Sprintf("location.hash = %q", route))
	}
	tab.Run("console page", time.Minute, hash("#/console/node1"),
		webtest.WaitJS(`typeof Terminal === "function" && document.querySelector("#term .xterm")`))
	tab.Run("lab page and the console again", time.Minute,
		hash("#/lab"), webtest.WaitJS(`document.querySelector("#devices tr")`),
		hash("#/console/node1"), webtest.WaitJS(`document.querySelector("#term .xterm")`))
	if n, err := webtest.Eval[int](tab, loaded); err != nil || n != 1 {
		t.Errorf("xterm.js loaded %d times (%v), want once", n, err)
	}
}

// TestBrowserJobPageFollowsToTheEnd: the job page shows the log as it
// comes and the end the event stream brings, without asking for the job
// again.
func TestBrowserJobPageFollowsToTheEnd(t *testing.T) {
	h := start(t, Config{})
	at := time.Now().Add(-time.Minute)
	h.svc.jobs = []labctl.Job{{ID: 7, Name: "followed", Device: "node1", DeviceType: "sim", Submitter: "alice",
		State: labctl.JobRunning, Phase: "test", Submitted: at, Started: &at}}
	// The console's output comes in pieces: a colour's escape sequence
	// may be cut between two records.
	stamp := at.Format(time.RFC3339Nano)
	h.svc.log = stamp + " < follow-line-1\\r\\n\n" +
		stamp + " < \\e[3\n" +
		stamp + " < 2mall-gr\n" +
		stamp + " < een\\e[0m plain\\r\\n\n"
	h.svc.end = make(chan struct{})
	b := webtest.Start(t, testOutput(t))
	tab := b.NewTab("viewer")
	tab.Login(h.srv.URL, "viewer-secret")
	tab.Run("the running job", time.Minute,
		chromedp.Navigate(h.srv.URL+"/#/job/7"),
		webtest.WaitText("#log", "follow-line-1"),
		webtest.WaitText("#outcome", "running"))
	if got := tab.Text("#log"); !strings.Contains(got, "all-green plain") || strings.Contains(got, "[3") || strings.Contains(got, "2m") {
		t.Errorf("log %q, want the escape cut between records taken as one", got)
	}
	green, err := webtest.Eval[string](tab, `[...document.querySelectorAll("#log span")].filter((s) => s.style.color).map((s) => s.textContent).join("")`)
	if err != nil || green != "all-green" {
		t.Errorf("coloured text %q (%v), want all-green", green, err)
	}
	h.svc.mu.Lock()
	end := time.Now()
	h.svc.jobs[0].State, h.svc.jobs[0].Outcome, h.svc.jobs[0].Finished = labctl.JobFinished, "complete", &end
	h.svc.mu.Unlock()
	close(h.svc.end)
	tab.Run("its end", time.Minute, webtest.WaitJS(`document.querySelector("#outcome")?.textContent === "complete"`))
	asked, err := webtest.Eval[int](tab, `performance.getEntriesByType("resource").filter((r) => r.name.endsWith("/api/v1/jobs/7")).length`)
	if err != nil || asked != 1 {
		t.Errorf("the page asked for the job %d times (%v), want once, when it opened", asked, err)
	}
}
