package main

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labctl/labctl/daemon/daemontest"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/dispatcher"
	"github.com/labctl/labctl/results"
)

// submit --wait follows a job the lab retries to its last attempt and
// exits with that attempt's outcome; labctl job lists the attempts;
// reserve, devices and release show and change who holds a device.
func TestRetryAndReserveCommands(t *testing.T) {
	t.Parallel()
	var runs atomic.Int32
	run := func(_ context.Context, j dispatcher.Job) *results.Job {
		now := time.Now()
		res := &results.Job{ID: j.ID, Name: j.Spec.Name, Device: j.Device, Outcome: "complete", Started: now, Finished: now}
		if runs.Add(1) == 1 {
			res.Outcome, res.Reason = "incomplete", "deploy: bmc: no answer"
		}
		return res
	}
	l := daemontest.Start(t, daemontest.Options{Nodes: 2, Fake: true, API: true, Run: run,
		Settings: func(c *devices.Config) { c.Jobs.Retries = 1 }})
	l.WaitIdle()
	vars := map[string]string{"LABCTL_SERVER": l.URL, "LABCTL_TOKEN": daemontest.Token}

	code, out, stderr := runLabctl(t, vars, "submit", "--wait", jobFile(t, "flaky", `device_type = "sim"`, helloStep))
	if code != 0 || !strings.Contains(stderr, "runs it again as job 2") || !strings.Contains(out, "COMPLETE") {
		t.Errorf("submit --wait of a job the lab retried: exit %d\n%s%s", code, out, stderr)
	}
	if code, out, _ := runLabctl(t, vars, "job", "1"); code != 0 || !strings.Contains(out, "attempts:") || !strings.Contains(out, "job 2 on node") || !strings.Contains(out, "bmc: no answer") {
		t.Errorf("labctl job 1: exit %d\n%s", code, out)
	}

	if code, out, _ := runLabctl(t, vars, "reserve", "node1", "--for", "1h", "--reason", "bisecting"); code != 0 || !strings.Contains(out, "reserved: by ci until") || !strings.Contains(out, "bisecting") {
		t.Errorf("reserve: exit %d\n%s", code, out)
	}
	if code, out, _ := runLabctl(t, vars, "devices"); code != 0 || !strings.Contains(out, "ci until") {
		t.Errorf("devices: exit %d\n%s", code, out)
	}
	if code, _, _ := runLabctl(t, vars, "reserve", "node1"); code != 64 {
		t.Errorf("reserve without --for: exit %d, want 64", code)
	}
	if code, out, _ := runLabctl(t, vars, "release", "node1"); code != 0 || out != "node1: released\n" {
		t.Errorf("release: exit %d %q", code, out)
	}
	if code, _, stderr := runLabctl(t, vars, "release", "node1"); code != 1 || !strings.Contains(stderr, "not reserved") {
		t.Errorf("release of a free device: exit %d %q", code, stderr)
	}
}
