package main

// The browser UI against the simulated lab: `labctl serve` (the real
// binary) on one simlab node, watched and driven from a real headless
// Chromium (web/webtest). `go test -run TestLabWeb ./cmd/labctl`; one job
// long (~2 min under TCG).

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/simlab"
	"github.com/labctl/labctl/simlab/simlabtest"
	"github.com/labctl/labctl/web/webtest"
)

// goTo shows a page of the UI (a route in the URL's fragment).
func goTo(t *testing.T, tab *webtest.Tab, route string) {
	t.Helper()
	if _, err := webtest.Eval[bool](tab, fmt.Sprintf("(location.hash = %q, true)", route)); err != nil {
		t.Fatalf("tab %s: go to %s: %v", tab.Name, route, err)
	}
}

// terminalAnswered is JavaScript that is true once the page's terminal
// shows a line with the command and, after it, a line starting with
// answer.
func terminalAnswered(command, answer string) string {
	return fmt.Sprintf(`(() => {
		const rows = document.querySelector("#term .xterm-rows");
		if (!rows) return false;
		const lines = rows.innerText.split("\n").map((l) => l.trim()).filter(Boolean);
		const i = lines.findLastIndex((l) => l.includes(%q));
		return i >= 0 && lines.slice(i + 1).some((l) => l.startsWith(%q));
	})()`, command, answer)
}

// scrapeMetrics reads the daemon's Prometheus metrics.
func scrapeMetrics(t *testing.T, server, token string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", server+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %s: %s", resp.Status, b)
	}
	return string(b)
}

// metricValue is the value of the sample of series ("" if none).
func metricValue(text, series string) string {
	for line := range strings.SplitSeq(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

// TestLabWeb: one simulated node, `labctl serve`, two people in Chromium:
//   - the admin logs in with a token; the lab page lists the node idle;
//   - a job submitted with the CLI shows on the lab page as it starts;
//     its page streams the log live (console text with its colours) to
//     complete, with every step and its output;
//   - the job kept the node on: on the console page the admin types
//     uname -a into the node's shell and sees the answer;
//   - a viewer (a second browser context, its own login) sees the same
//     output, read-only, with no power button; typing is refused; the API
//     refuses the viewer's power request (403) even with its CSRF token;
//   - Prometheus metrics scraped before and after count the job and its
//     phases;
//   - another site's form posting to the API with the admin's cookie is
//     refused, and the node is not touched.
//
// With LABCTL_SCREENSHOT_DIR set (make web-screenshots), the lab, job and
// console pages are saved there as web-lab.png, web-job.png and
// web-console.png (the README's pictures).
func TestLabWeb(t *testing.T) {
	t.Parallel()
	// This repository's device types: the ones the labctl under test reads.
	deviceTypes, err := filepath.Abs(filepath.Join("..", "..", "device-types"))
	if err != nil {
		t.Fatal(err)
	}
	lab := simlabtest.StartLab(t, 1, simlab.Options{DeviceTypes: deviceTypes})
	t.Cleanup(func() { killStrays(lab) })
	node := lab.Nodes[0]
	bin := labctlBinary(t)
	start := time.Now()
	step := func(what string) { t.Logf("%5.1fs %s", time.Since(start).Seconds(), what) }

	// A viewer token beside the lab's admin token.
	cfg, err := os.ReadFile(lab.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	const viewerToken = "viewer-token-0123456789"
	if err := os.WriteFile(filepath.Join(lab.Dir, "viewer.token"), []byte(viewerToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	text := string(cfg) + "\n[[server.tokens]]\nname = \"vera\"\nrole = \"viewer\"\ntoken_file = \"viewer.token\"\n"
	if err := os.WriteFile(lab.ConfigPath, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	adminToken, client := labAdminClient(t, lab)
	server := client.Server()
	startServeProc(t, bin, lab.ConfigPath, client)
	waitLabDevice(t, client, node.Name, labctl.DeviceIdle, 2*time.Minute)
	step("the device is idle")

	out := filepath.Join("..", "..", "build", "test-output", t.Name())
	shots := os.Getenv("LABCTL_SCREENSHOT_DIR")
	shoot := func(tab *webtest.Tab, name string) {
		if shots == "" {
			return
		}
		if err := tab.Screenshot(filepath.Join(shots, name)); err != nil {
			t.Errorf("screenshot %s: %v", name, err)
		}
	}
	b := webtest.Start(t, out)
	admin := b.NewTab("admin")
	admin.Login(server, adminToken)
	row := fmt.Sprintf(`tr[data-device=%q]`, node.Name)
	admin.Run("the lab page lists the node idle", time.Minute,
		webtest.WaitText(row+" td.state", "idle"),
		webtest.WaitText("#live", "live"))
	step("logged in; the lab page lists the node idle")

	metricsBefore := scrapeMetrics(t, server, adminToken)

	// A job that keeps the node on, submitted with the CLI.
	steps := "[[test]]\nname = \"kernel\"\ncommands = [\"uname -r\"]\n" +
		"[[test]]\nname = \"colour\"\ncommands = [\"printf '\\\\033[32mall-green\\\\033[0m\\\\n'\"]\n" +
		"[[test]]\nname = \"disk\"\ncommands = [\"grep vda /proc/partitions\"]\n"
	jobPath := labJobFile(t, lab, "web", fmt.Sprintf("device = %q\nkeep_powered_on = true", node.Name), steps)
	code, submitted := runClient(t, bin, server, adminToken, "submit", jobPath)
	m := regexp.MustCompile(`(?m)^(\d+)$`).FindStringSubmatch(submitted)
	if code != 0 || m == nil {
		t.Fatalf("labctl submit: exit %d: %s", code, submitted)
	}
	id, _ := strconv.ParseInt(m[1], 10, 64)
	admin.Run("the job shows on the lab page, with its phase", 2*time.Minute,
		webtest.WaitJS(fmt.Sprintf(`document.querySelector('%s a[href="#/job/%d"]')`, row, id)),
		webtest.WaitJS(fmt.Sprintf(`document.querySelector('%s [data-phase]')`, row)))
	shoot(admin, "web-lab.png")
	step(fmt.Sprintf("job %d shows on the lab page", id))

	goTo(t, admin, fmt.Sprintf("#/job/%d", id))
	admin.Run("the log streams while the job runs", 3*time.Minute,
		webtest.WaitJS(`document.querySelector("#outcome")?.textContent === "running" && document.querySelector("#log").textContent.includes("power on")`))
	step("the job page streams the log while it runs")
	admin.Run("the job completes", 8*time.Minute, webtest.WaitText("#outcome", "complete"))
	step("the job page says complete")
	for _, s := range []string{"kernel", "colour", "disk"} {
		if got := admin.Text(fmt.Sprintf(`tr[data-step=%q]`, s)); !strings.Contains(got, "pass") {
			t.Errorf("step %s: row %q, want it passed", s, got)
		}
	}
	if got := admin.Text(`tr[data-step="disk"]`); !strings.Contains(got, "vda") {
		t.Errorf("step disk: row %q, want its output", got)
	}
	// The console's colours are rendered, not shown as escapes.
	// (The text may come in two console records, so in two spans.)
	colour, err := webtest.Eval[string](admin, `(() => {
		for (const s of document.querySelectorAll("#log span")) {
			const t = s.textContent.trim();
			if (t && "all-green".includes(t) && s.style.color) return s.style.color;
		}
		return ""; })()`)
	if err != nil || colour == "" {
		t.Errorf("the step's green text is not coloured in the log (%q, %v)", colour, err)
	}
	if logText := admin.Text("#log"); strings.Contains(logText, `\e[`) || strings.Contains(logText, "\x1b[") {
		t.Error("the log shows escape sequences")
	}
	shoot(admin, "web-job.png")

	// Prometheus, before and after: the job counted, its phases observed.
	metricsAfter := scrapeMetrics(t, server, adminToken)
	for series, want := range map[string][2]string{
		`labctl_jobs_finished_total{device_type="simlab-qemu",outcome="complete"}`:            {"", "1"},
		`labctl_jobs_started_total{device_type="simlab-qemu"}`:                                {"", "1"},
		`labctl_job_phase_duration_seconds_count{device_type="simlab-qemu",phase="deploy"}`:   {"", "1"},
		`labctl_job_phase_duration_seconds_count{device_type="simlab-qemu",phase="boot"}`:     {"", "1"},
		`labctl_job_phase_duration_seconds_count{device_type="simlab-qemu",phase="test"}`:     {"", "1"},
		`labctl_job_phase_duration_seconds_count{device_type="simlab-qemu",phase="finalize"}`: {"", "1"},
	} {
		if b, a := metricValue(metricsBefore, series), metricValue(metricsAfter, series); b != want[0] || a != want[1] {
			t.Errorf("%s: %q before the job, %q after; want %q and %q", series, b, a, want[0], want[1])
		}
	}
	if v := metricValue(metricsAfter, `labctl_job_phase_duration_seconds_sum{device_type="simlab-qemu",phase="deploy"}`); v == "" || v == "0" {
		t.Errorf("deploy duration sum %q, want > 0", v)
	}

	// The console, after the job: the node is on, its shell logged in.
	goTo(t, admin, "#/console/"+node.Name)
	admin.Run("the admin's console opens", time.Minute,
		chromedp.WaitVisible(chromedp.CSS(`[data-console="open"]`)),
		chromedp.WaitVisible(chromedp.CSS("#power-cycle")))
	viewer := b.NewTab("viewer")
	viewer.Login(server, viewerToken)
	goTo(t, viewer, "#/console/"+node.Name)
	viewer.Run("the viewer's console opens read-only", time.Minute,
		chromedp.WaitVisible(chromedp.CSS(`[data-console="open"]`)),
		webtest.WaitJS(`document.querySelector("#console-state").dataset.write === "no"`))
	if n, err := webtest.Eval[int](viewer, `document.querySelectorAll("#power-cycle, #break").length`); err != nil || n != 0 {
		t.Errorf("the viewer's console page has %d power or break buttons (%v), want none", n, err)
	}
	step("admin and viewer on the console")

	admin.Run("type uname -a", time.Minute,
		chromedp.Focus(chromedp.CSS("#term .xterm-helper-textarea")),
		webtest.Type("uname -a", true))
	admin.Run("the admin sees the answer", time.Minute, webtest.WaitJS(terminalAnswered("uname -a", "Linux ")))
	viewer.Run("the viewer sees the answer", time.Minute, webtest.WaitJS(terminalAnswered("uname -a", "Linux ")))
	shoot(admin, "web-console.png")
	step("uname -a answered in both browsers")

	viewer.Run("the viewer's typing is refused", time.Minute,
		chromedp.Focus(chromedp.CSS("#term .xterm-helper-textarea")),
		webtest.Type("x", false),
		webtest.WaitText("#notices", "refused"))
	status, err := webtest.Eval[string](viewer, fmt.Sprintf(`(async () => {
		const s = await (await fetch("/ui/session")).json();
		const r = await fetch("/api/v1/devices/%s/power", {method: "POST",
			headers: {"X-Labctl-Csrf": s.csrf, "Content-Type": "application/json"}, body: '{"op":"cycle"}'});
		return r.status + " " + (await r.text()); })()`, node.Name))
	if err != nil || !strings.HasPrefix(status, "403 ") || !strings.Contains(status, "needs role operator") {
		t.Errorf("the viewer's power request: %q, %v; want 403 naming the role", status, err)
	}
	step("the viewer was refused input and power")

	// The device page: health checks, recent jobs, the console's last
	// lines; controls by role.
	goTo(t, viewer, "#/device/"+node.Name)
	viewer.Run("the viewer's device page", time.Minute,
		webtest.WaitText("#health-history", "passed"),
		webtest.WaitJS(fmt.Sprintf(`document.querySelector('#device-jobs a[href="#/job/%d"]')`, id)),
		webtest.WaitText("#console-tail", "Linux"))
	if n, err := webtest.Eval[int](viewer, `document.querySelectorAll("#controls button").length`); err != nil || n != 0 {
		t.Errorf("the viewer's device page has %d controls (%v), want none", n, err)
	}
	goTo(t, admin, "#/device/"+node.Name)
	admin.Run("the admin's device page has the controls", time.Minute,
		chromedp.WaitVisible(chromedp.CSS("#power-off")), chromedp.WaitVisible(chromedp.CSS("#maintenance")))
	step("device pages")

	// Another origin's form, with the admin's cookie (same site: the
	// browser sends it), and without the CSRF token.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><form id="f" method="post" enctype="text/plain" action="%s/api/v1/devices/%s/maintenance">
<input name='{"reason":"evil","x":"' value='"}'></form><script>document.getElementById("f").submit()</script>`, server, node.Name)
	}))
	defer evil.Close()
	admin.Run("another site's form is refused", time.Minute,
		chromedp.Navigate(evil.URL),
		webtest.WaitJS(fmt.Sprintf(`location.href.startsWith(%q)`, server+"/api/")),
		webtest.WaitText("body", "forbidden"))
	if d, err := client.Device(t.Context(), node.Name); err != nil || d.Maintenance || d.State == labctl.DeviceMaintenance {
		t.Errorf("after another site's form: %+v, %v: the node must not go to maintenance", d, err)
	}
	step("another site's form was refused")

	// The job kept the node on: off now, before the lab goes.
	if _, err := client.Power(t.Context(), node.Name, labctl.PowerRequest{Op: "off"}); err != nil {
		t.Errorf("power off: %v", err)
	}
}
