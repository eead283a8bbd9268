package metrics_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/daemon"
	"github.com/labctl/labctl/daemon/daemontest"
	"github.com/labctl/labctl/metrics"
)

// promtool returns the path of promtool (Debian's prometheus package),
// skipping the test without it unless the whole suite runs (make test).
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("LABCTL_REQUIRE_SIMLAB") != "" {
			t.Fatalf("promtool not found (make deps installs Debian's prometheus package): %v", err)
		}
		t.Skip("promtool not found: apt-get install prometheus")
	}
	return p
}

// scrape gets /metrics with the lab's token.
func scrape(t *testing.T, url string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", url+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+daemontest.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %s: %s", resp.Status, body)
	}
	return string(body)
}

// value returns the value of the sample line that starts with series
// ("" if there is none).
func value(text, series string) string {
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			return rest
		}
	}
	return ""
}

// TestScrapeCountsAJob scrapes a daemon before and after a job on a
// simulated node (the whole pipeline): the job is counted, its phases
// observed, the queue wait recorded, and promtool finds the exposition
// well-formed and following Prometheus's naming rules.
func TestScrapeCountsAJob(t *testing.T) {
	tool := promtool(t)
	var l *daemontest.Lab
	m := metrics.New(metrics.Sources{
		Daemon:   func() daemon.Snapshot { return l.Daemon.Snapshot() },
		Consoles: func(ctx context.Context) ([]labctl.ConsoleInfo, error) { return l.Daemon.Consoles(ctx) },
	})
	l = daemontest.Start(t, daemontest.Options{Nodes: 1, API: true, Observers: []daemon.Observer{m}, Metrics: m.Handler()})
	l.WaitIdle()

	before := scrape(t, l.URL)
	if v := value(before, `labctl_device_state{device="node1",device_type="sim",state="idle"}`); v != "1" {
		t.Errorf("before: node1 idle = %q, want 1\n%s", v, before)
	}
	if v := value(before, `labctl_jobs_finished_total{device_type="sim",outcome="complete"}`); v != "" {
		t.Errorf("before: complete jobs = %q, want none", v)
	}
	if v := value(before, `labctl_health_checks_total{device_type="sim",result="pass"}`); v != "1" {
		t.Errorf("before: health checks passed = %q, want 1 (start-up)", v)
	}

	j := l.Submit(daemontest.JobText(t, `device = "node1"`))
	if end := l.Wait(j.ID); end.Outcome != string(labctl.Complete) {
		t.Fatalf("job ended %s: %s", end.Outcome, end.Reason)
	}
	l.WaitIdle()
	after := scrape(t, l.URL)
	for series, want := range map[string]string{
		`labctl_jobs_started_total{device_type="sim"}`:                                "1",
		`labctl_jobs_finished_total{device_type="sim",outcome="complete"}`:            "1",
		`labctl_queue_wait_seconds_count{device_type="sim"}`:                          "1",
		`labctl_job_phase_duration_seconds_count{device_type="sim",phase="deploy"}`:   "1",
		`labctl_job_phase_duration_seconds_count{device_type="sim",phase="boot"}`:     "1",
		`labctl_job_phase_duration_seconds_count{device_type="sim",phase="test"}`:     "1",
		`labctl_job_phase_duration_seconds_count{device_type="sim",phase="finalize"}`: "1",
		`labctl_image_write_duration_seconds_count{device_type="sim"}`:                "1",
		`labctl_queue_jobs`: "0",
		`labctl_devices{device_type="sim",state="idle"}`:                        "1",
		`labctl_device_state{device="node1",device_type="sim",state="running"}`: "0",
		`labctl_console_session_events_total{event="lost"}`:                     "0",
	} {
		if got := value(after, series); got != want {
			t.Errorf("after: %s = %q, want %s", series, got, want)
		}
	}
	if v := value(after, `labctl_job_phase_duration_seconds_sum{device_type="sim",phase="deploy"}`); v == "" || v == "0" {
		t.Errorf("after: deploy duration sum = %q, want > 0", v)
	}

	cmd := exec.Command(tool, "check", "metrics")
	cmd.Stdin = strings.NewReader(after)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out.String())
	}
}

// TestScrapeNeedsAToken: /metrics is an API route: no token, no metrics.
func TestScrapeNeedsAToken(t *testing.T) {
	m := metrics.New(metrics.Sources{})
	l := daemontest.Start(t, daemontest.Options{Nodes: 1, Fake: true, API: true, Metrics: m.Handler()})
	resp, err := http.Get(l.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /metrics without a token: %s, want 401", resp.Status)
	}
}

// TestAlertRules checks the example alert rules with promtool.
func TestAlertRules(t *testing.T) {
	tool := promtool(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, tool, "check", "rules", "../examples/monitoring/alerts.yml").CombinedOutput()
	if err != nil {
		t.Errorf("promtool check rules: %v\n%s", err, out)
	}
}
