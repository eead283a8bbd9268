package web

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/daemon"
	"github.com/labctl/labctl/daemon/daemontest"
)

// TestHubHearsTheDaemon: a job run by the daemon reaches a live stream
// as its joining the queue and its start (with its name), each phase it
// enters, and its end; the device's events carry its view as the daemon
// shows it at the time, the job's events the job's.
func TestHubHearsTheDaemon(t *testing.T) {
	hub := NewHub(256, 10)
	l := daemontest.Start(t, daemontest.Options{Nodes: 1, Observers: []daemon.Observer{hub}})
	hub.SetLab(l.Daemon)
	l.WaitIdle()
	s, err := hub.subscribe()
	if err != nil {
		t.Fatal(err)
	}
	defer hub.unsubscribe(s)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	events := streamEvents(ctx, hub, s, 256)

	job := l.Submit(daemontest.JobText(t, `device = "node1"`))
	var phases []string
	var queued, start, end *Event
	sawRunning := false
	for end == nil {
		var line string
		select {
		case line = <-events:
		case <-ctx.Done():
			t.Fatalf("no job end on the stream: phases %v", phases)
		}
		kind, data, _ := strings.Cut(line, " ")
		if kind != "change" {
			continue
		}
		var e Event
		if err := json.Unmarshal([]byte(data), &e); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if e.Device == "node1" && e.Kind != "console" && (e.View == nil || e.View.Name != "node1") {
			t.Errorf("%s event without node1's view: %s", e.Kind, data)
		}
		if strings.HasPrefix(e.Kind, "job.") && (e.JobView == nil || e.JobView.ID != job.ID || e.JobView.Result != nil) {
			t.Errorf("%s event without the job's view (or with its results): %s", e.Kind, data)
		}
		switch e.Kind {
		case "job.queued":
			queued = &e
		case "job.start":
			if queued == nil {
				t.Error("the job started before the stream heard it was queued")
			}
			start = &e
		case "job.phase":
			if e.Job != job.ID || e.At.IsZero() {
				t.Errorf("phase event %s", data)
			}
			phases = append(phases, e.State)
		case "job.end":
			end = &e
		case "device.state":
			if e.State == labctl.DeviceRunning && e.View != nil && e.View.Job == job.ID {
				sawRunning = true
			}
		}
	}
	if start == nil || start.Job != job.ID || start.Name != job.Name || start.At.IsZero() {
		t.Errorf("job start %+v, want job %d named %q", start, job.ID, job.Name)
	}
	for _, p := range []string{"deploy", "test", "finalize"} {
		if !slices.Contains(phases, p) {
			t.Errorf("phases on the stream %v lack %s", phases, p)
		}
	}
	if !sawRunning {
		t.Error("no device.state event showed node1 running the job")
	}
	if end.Job != job.ID || end.Outcome != string(labctl.Complete) || end.JobView.State != labctl.JobFinished || end.JobView.Outcome != string(labctl.Complete) {
		t.Errorf("job end %+v, view %+v", end, end.JobView)
	}
	if queued == nil || queued.Name != job.Name || !queued.At.Equal(job.Submitted) || queued.JobView.Submitter != job.Submitter {
		t.Errorf("job queued %+v, want job %d named %q submitted at %v", queued, job.ID, job.Name, job.Submitted)
	}
}
