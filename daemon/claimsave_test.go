package daemon_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/daemon"
	"github.com/labctl/labctl/daemon/daemontest"
	"github.com/labctl/labctl/sol"
	"github.com/labctl/labctl/store"
)

// jobEvents is an observer that records the jobs' queued and started
// events, in order.
type jobEvents struct {
	mu   sync.Mutex
	list []string
}

func (e *jobEvents) add(s string) {
	e.mu.Lock()
	e.list = append(e.list, s)
	e.mu.Unlock()
}
func (e *jobEvents) JobQueued(q daemon.JobQueued)             { e.add("queued " + q.Name) }
func (e *jobEvents) JobStarted(s daemon.JobStart)             { e.add("started " + s.Name + " on " + s.Device) }
func (e *jobEvents) JobEnded(daemon.JobEnd)                   {}
func (e *jobEvents) DeviceChanged(daemon.DeviceChange)        {}
func (e *jobEvents) HealthChecked(daemon.HealthCheck)         {}
func (e *jobEvents) ConsoleChanged(string, sol.SessionChange) {}
func (e *jobEvents) events() []string                         { e.mu.Lock(); defer e.mu.Unlock(); return slices.Clone(e.list) }

// A job submitted while a device that fits it is idle is stored claimed
// for that device: it is never queued in the store and no worker claims
// it; the observers still hear it queued, then started. A job submitted
// while the device is busy is stored queued and claimed when the device
// is free, as before.
func TestSubmitClaimsAtSave(t *testing.T) {
	t.Parallel()
	r := newFakeRunner()
	cs := &flakyStore{}
	ev := &jobEvents{}
	l := daemontest.Start(t, daemontest.Options{Nodes: 1, Fake: true, Run: r.run, Observers: []daemon.Observer{ev},
		WrapStore: cs.wrap})
	l.WaitIdle()
	a := l.Submit(daemontest.JobText(t, "name = \"a\"\ndevice_type = \"sim\"\n"))
	if a.State != labctl.JobRunning || a.Device != "node1" {
		t.Errorf("submit to an idle device answered %s on %q, want running on node1", a.State, a.Device)
	}
	r.waitStarted(t, 1)
	b := l.Submit(daemontest.JobText(t, "name = \"b\"\ndevice = \"node1\"\n"))
	if got := cs.createdAs(a.ID); got != store.Running {
		t.Errorf("job a was stored %s, want running (claimed at once)", got)
	}
	if got := cs.createdAs(b.ID); got != store.Queued {
		t.Errorf("job b, submitted while node1 was busy, was stored %s, want queued", got)
	}
	if n := cs.claims.Load(); n != 0 {
		t.Errorf("%d claims before b could start, want none", n)
	}
	r.release <- "complete"
	r.waitStarted(t, 2)
	r.release <- "complete"
	for _, id := range []int64{a.ID, b.ID} {
		if j := l.Wait(id); j.Outcome != "complete" {
			t.Errorf("job %d: %s (%s)", id, j.Outcome, j.Reason)
		}
	}
	if n := cs.claims.Load(); n != 1 {
		t.Errorf("%d claims in all, want 1 (b's)", n)
	}
	if rec := stored(t, l, a.ID); rec.RunDevice != "node1" || rec.Started.Before(rec.Submitted) {
		t.Errorf("stored a: on %q, submitted %v, started %v", rec.RunDevice, rec.Submitted, rec.Started)
	}
	want := []string{"queued a", "started a on node1", "queued b", "started b on node1"}
	if got := ev.events(); !slices.Equal(got, want) {
		t.Errorf("events %q, want %q", got, want)
	}
}

// The scheduler decides: a job that a job ahead of it in the queue would
// take the device from is not claimed at save, and neither is a job for
// a device reserved for someone else.
func TestSubmitClaimsOnlyWhatSchedulerGives(t *testing.T) {
	t.Parallel()
	r := newFakeRunner()
	cs := &flakyStore{}
	l := daemontest.Start(t, daemontest.Options{Nodes: 2, Fake: true, Run: r.run,
		WrapStore: cs.wrap})
	l.WaitIdle()
	hold := l.Submit(daemontest.JobText(t, "name = \"hold\"\ndevice = \"node1\"\n"))
	r.waitStarted(t, 1)
	// node1 is busy: waiting asks for it, and is queued.
	waiting := l.Submit(daemontest.JobText(t, "name = \"waiting\"\ndevice = \"node1\"\n"))
	alice := labctl.WithRole(labctl.WithCaller(ctx(t), "alice"), labctl.RoleSubmitter)
	if _, err := l.Daemon.Reserve(alice, "node2", labctl.ReserveRequest{For: time.Hour, Reason: "debugging"}); err != nil {
		t.Fatal(err)
	}
	// node2 is idle but reserved by alice: another's job for any sim
	// device waits.
	other := l.Submit(daemontest.JobText(t, "name = \"other\"\ndevice_type = \"sim\"\n"))
	for _, j := range []labctl.Job{hold, waiting, other} {
		want := store.Queued
		if j.ID == hold.ID {
			want = store.Running
		}
		if got := cs.createdAs(j.ID); got != want {
			t.Errorf("job %s stored %s, want %s", j.Name, got, want)
		}
	}
	r.release <- "complete"
	r.waitStarted(t, 2)
	if got := r.order(); !slices.Equal(got, []string{"hold", "waiting"}) {
		t.Errorf("started %v, want hold then waiting", got)
	}
}

// A claim the store does not take (the host's lease did not hold) leaves
// the job queued, as any: the device is given back and its worker claims
// the job.
func TestSubmitClaimRefused(t *testing.T) {
	t.Parallel()
	r := newFakeRunner()
	cs := &flakyStore{}
	cs.refuseClaims.Store(true)
	l := daemontest.Start(t, daemontest.Options{Nodes: 1, Fake: true, Run: r.run,
		WrapStore: cs.wrap})
	l.WaitIdle()
	a := l.Submit(daemontest.JobText(t, "name = \"a\"\ndevice = \"node1\"\n"))
	r.waitStarted(t, 1)
	r.release <- "complete"
	if j := l.Wait(a.ID); j.Outcome != "complete" || j.Device != "node1" {
		t.Errorf("job a: %s on %q (%s)", j.Outcome, j.Device, j.Reason)
	}
	if got, n := cs.createdAs(a.ID), cs.claims.Load(); got != store.Queued || n != 1 {
		t.Errorf("job a stored %s and claimed %d times, want queued, then one claim", got, n)
	}
}

// A claimed insert that committed but whose answer was lost: the submit
// fails, the job the store holds claimed never starts and ends
// incomplete, and the device takes work again.
func TestSubmitClaimAnswerLost(t *testing.T) {
	t.Parallel()
	r := newFakeRunner()
	cs := &flakyStore{}
	cs.loseClaimedCreate.Store(1)
	l := daemontest.Start(t, daemontest.Options{Nodes: 1, Fake: true, Run: r.run,
		WrapStore: cs.wrap})
	l.WaitIdle()
	_, err := l.Daemon.Submit(ctx(t), labctl.SubmitRequest{File: "job.toml", Dir: "/", Spec: daemontest.JobText(t, "name = \"lost\"\ndevice = \"node1\"\n")})
	if !errors.Is(err, labctl.ErrUnavailable) {
		t.Fatalf("submit whose answer was lost = %v, want ErrUnavailable", err)
	}
	var lost store.Job
	waitFor(t, "the job stored claimed to end", func() bool {
		jobs, err := l.Store.Jobs(context.Background(), store.JobFilter{})
		if err != nil || len(jobs) != 1 {
			return false
		}
		lost = jobs[0]
		return lost.State == store.Finished
	})
	if lost.Outcome != "incomplete" || !strings.Contains(lost.Reason, "lost the answer") {
		t.Errorf("job stored claimed, answer lost: %s %q, want incomplete, the answer lost", lost.Outcome, lost.Reason)
	}
	next := l.Submit(daemontest.JobText(t, "name = \"next\"\ndevice = \"node1\"\n"))
	r.waitStarted(t, 1)
	r.release <- "complete"
	if j := l.Wait(next.ID); j.Outcome != "complete" {
		t.Errorf("next job: %s (%s)", j.Outcome, j.Reason)
	}
	if got := r.order(); !slices.Equal(got, []string{"next"}) {
		t.Errorf("started %v, want next only", got)
	}
}
