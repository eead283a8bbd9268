package daemon_test

import (
	"context"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/labctl/labctl/daemon/daemontest"
	"github.com/labctl/labctl/dispatcher"
	"github.com/labctl/labctl/results"
)

var ctx = daemontest.Context

// fakeRunner is a RunFunc that runs no pipeline: each job waits until the
// test lets it end (or its context ends) and records the order of starts.
type fakeRunner struct {
	mu      sync.Mutex
	started []string    // job names, in start order
	release chan string // an outcome for the next job to end
}

func newFakeRunner() *fakeRunner {
	return &fakeRunner{release: make(chan string)}
}

func (f *fakeRunner) run(ctx context.Context, j dispatcher.Job) *results.Job {
	start := time.Now()
	f.mu.Lock()
	f.started = append(f.started, j.Spec.Name)
	f.mu.Unlock()
	res := &results.Job{ID: j.ID, Name: j.Spec.Name, Device: j.Device, Started: start}
	select {
	case outcome := <-f.release:
		res.Outcome = outcome
		if outcome == "incomplete" {
			res.Reason = "boot: power on: bmc: no answer"
		}
	case <-ctx.Done():
		// As the pipeline ends a job its context stopped.
		end := dispatcher.Stopped(context.Cause(ctx))
		res.Outcome, res.Reason, res.Action = string(end.Outcome), end.Reason, end.Action
	}
	res.Finished = time.Now()
	os.MkdirAll(j.Dir, 0o755)
	res.WriteFiles(j.Dir)
	return res
}

// instantRun is a RunFunc whose jobs complete at once.
func instantRun(_ context.Context, j dispatcher.Job) *results.Job {
	now := time.Now()
	return &results.Job{ID: j.ID, Name: j.Spec.Name, Device: j.Device, Outcome: "complete", Started: now, Finished: now}
}

func (f *fakeRunner) order() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.started)
}

// waitStarted waits until n jobs have started.
func (f *fakeRunner) waitStarted(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for len(f.order()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d jobs started (%v), want %d", len(f.order()), f.order(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
