package daemon_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/daemon"
	"github.com/labctl/labctl/daemon/daemontest"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/sol"
)

// stateChanges is an observer that records the devices' state changes.
type stateChanges struct {
	mu   sync.Mutex
	list []daemon.DeviceChange
}

func (c *stateChanges) JobStarted(daemon.JobStart)               {}
func (c *stateChanges) JobEnded(daemon.JobEnd)                   {}
func (c *stateChanges) HealthChecked(daemon.HealthCheck)         {}
func (c *stateChanges) ConsoleChanged(string, sol.SessionChange) {}
func (c *stateChanges) DeviceChanged(d daemon.DeviceChange) {
	c.mu.Lock()
	c.list = append(c.list, d)
	c.mu.Unlock()
}

// seen reports whether a change satisfies cond.
func (c *stateChanges) seen(cond func(daemon.DeviceChange) bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range c.list {
		if cond(d) {
			return true
		}
	}
	return false
}

func device(t *testing.T, l *daemontest.Lab, name string) labctl.Device {
	t.Helper()
	d, err := l.Daemon.Device(ctx(t), name)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Periodic checks take an idle device whose BMC stopped answering offline,
// and bring it back by themselves once it answers again.
func TestPeriodicHealth(t *testing.T) {
	t.Parallel()
	l := daemontest.Start(t, daemontest.Options{Nodes: 1, Fake: true, Run: instantRun,
		Settings: func(c *devices.Config) { c.Health = devices.LabHealth{Interval: 50 * time.Millisecond, Failures: 1} }})
	l.WaitDevice("node1", labctl.DeviceIdle)
	l.Fakes["node1"].Fail(errors.New("bmc: no answer"))
	dev := l.WaitDevice("node1", labctl.DeviceOffline)
	if !strings.Contains(dev.Reason, "no answer") || dev.Health == nil || dev.Health.OK {
		t.Errorf("offline after a periodic check: %+v", dev)
	}
	l.Fakes["node1"].Fail(nil)
	dev = l.WaitDevice("node1", labctl.DeviceIdle)
	if dev.Health == nil || !dev.Health.OK || !strings.Contains(dev.Reason, "periodic") {
		t.Errorf("back after a periodic check: %+v", dev)
	}
}

// With [health] failures = 3 a device in service stays in service after
// one or two failed checks, and goes offline after the third in a row.
func TestHealthFailuresInARow(t *testing.T) {
	t.Parallel()
	changes := &stateChanges{}
	l := daemontest.Start(t, daemontest.Options{Nodes: 1, Fake: true, Run: instantRun, Observers: []daemon.Observer{changes},
		Settings: func(c *devices.Config) { c.Health = devices.LabHealth{Interval: 30 * time.Millisecond, Failures: 3} }})
	l.WaitDevice("node1", labctl.DeviceIdle)
	l.Fakes["node1"].Fail(errors.New("bmc: no answer"))
	waitFor(t, "node1 offline", func() bool { return device(t, l, "node1").State == labctl.DeviceOffline })
	dev := device(t, l, "node1")
	if !strings.Contains(dev.Reason, "3 times in a row") {
		t.Errorf("offline after 3 failed checks: %q", dev.Reason)
	}
	if !changes.seen(func(d daemon.DeviceChange) bool {
		return d.Device == "node1" && d.To == labctl.DeviceIdle && strings.Contains(d.Reason, "in a row; offline after 3")
	}) {
		t.Errorf("node1 never went back to idle after a tolerated failed check: %+v", changes.list)
	}
}

// Periodic checks leave reserved and maintenance devices alone (while the
// others are checked again and again).
func TestPeriodicHealthSkips(t *testing.T) {
	t.Parallel()
	l := daemontest.Start(t, daemontest.Options{Nodes: 3, Fake: true, Run: instantRun,
		Settings: func(c *devices.Config) { c.Health = devices.LabHealth{Interval: 20 * time.Millisecond, Failures: 1} }})
	l.WaitIdle()
	alice := labctl.WithRole(labctl.WithCaller(ctx(t), "alice"), labctl.RoleSubmitter)
	if _, err := l.Daemon.Reserve(alice, "node1", labctl.ReserveRequest{For: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Daemon.Maintenance(ctx(t), "node2", "fan"); err != nil {
		t.Fatal(err)
	}
	before := map[string]time.Time{}
	for _, n := range []string{"node1", "node2", "node3"} {
		before[n] = device(t, l, n).Health.At
	}
	for range 3 {
		at := device(t, l, "node3").Health.At
		waitFor(t, "a periodic check of node3", func() bool { return device(t, l, "node3").Health.At.After(at) })
	}
	for _, n := range []string{"node1", "node2"} {
		if got := device(t, l, n).Health.At; !got.Equal(before[n]) {
			t.Errorf("%s was checked while reserved or in maintenance", n)
		}
	}
}

// A job the lab cut short runs again on another device, as a new job
// linked to the first; the record keeps both attempts; once the retries
// are spent, the last attempt's end is final. A failed test is never
// retried.
func TestRetryIncomplete(t *testing.T) {
	t.Parallel()
	r := newFakeRunner()
	l := daemontest.Start(t, daemontest.Options{Nodes: 2, Fake: true, Run: r.run,
		Settings: func(c *devices.Config) { c.Jobs.Retries = 1 }})
	l.WaitIdle()
	first := l.Submit(daemontest.JobText(t, "name = \"flaky\"\ndevice_type = \"sim\"\n"))
	r.waitStarted(t, 1)
	running, _ := l.Daemon.Job(ctx(t), first.ID)
	r.release <- "incomplete"
	end := l.Wait(first.ID)
	if end.Outcome != "incomplete" || end.RetriedAs == 0 {
		t.Fatalf("first attempt: %+v, want incomplete and retried", end)
	}
	r.waitStarted(t, 2)
	second, _ := l.Daemon.Job(ctx(t), end.RetriedAs)
	if second.State != labctl.JobRunning || second.Device == running.Device || second.RetryOf != first.ID {
		t.Errorf("second attempt %+v: want running on the other device than %s, retry of %d", second, running.Device, first.ID)
	}
	r.release <- "incomplete"
	last := l.Wait(second.ID)
	if last.Outcome != "incomplete" || last.RetriedAs != 0 {
		t.Errorf("last attempt: %+v, want incomplete, not retried (retries = 1)", last)
	}
	j, err := l.Daemon.Job(ctx(t), first.ID)
	if err != nil || len(j.Attempts) != 2 || j.Attempts[0].ID != first.ID || j.Attempts[1].ID != second.ID || j.Attempts[1].Outcome != "incomplete" {
		t.Errorf("attempts of job %d: %+v, %v", first.ID, j.Attempts, err)
	}

	l.WaitIdle()
	failed := l.Submit(daemontest.JobText(t, "name = \"broken\"\ndevice_type = \"sim\"\nretries = 3\n"))
	r.waitStarted(t, 3)
	r.release <- "failed"
	if j := l.Wait(failed.ID); j.Outcome != "failed" || j.RetriedAs != 0 {
		t.Errorf("failed test: %+v, want not retried", j)
	}
	noRetry := l.Submit(daemontest.JobText(t, "name = \"once\"\ndevice_type = \"sim\"\nretries = 0\n"))
	r.waitStarted(t, 4)
	r.release <- "incomplete"
	if j := l.Wait(noRetry.ID); j.Outcome != "incomplete" || j.RetriedAs != 0 {
		t.Errorf("retries = 0: %+v, want not retried", j)
	}
}

// A job cut short by the daemon's own restart is the lab's failure: it
// runs again after the restart.
func TestRetryAfterRestart(t *testing.T) {
	t.Parallel()
	r := newFakeRunner()
	l := daemontest.Start(t, daemontest.Options{Nodes: 1, Fake: true, Run: r.run,
		Settings: func(c *devices.Config) { c.Jobs.Retries = 1 }})
	l.WaitIdle()
	first := l.Submit(daemontest.JobText(t, "name = \"cut\"\ndevice = \"node1\"\n"))
	r.waitStarted(t, 1)
	l.Restart()
	j, err := l.Daemon.Job(ctx(t), first.ID)
	if err != nil || j.Outcome != "incomplete" || j.RetriedAs == 0 {
		t.Fatalf("job running at shutdown: %+v, %v; want incomplete and retried", j, err)
	}
	r.waitStarted(t, 2)
	r.release <- "complete"
	if end := l.Wait(j.RetriedAs); end.Outcome != "complete" || end.RetryOf != first.ID {
		t.Errorf("the retry: %+v", end)
	}
}

// A reservation keeps other people's jobs off a device until its owner
// releases it or it runs out; its owner's jobs that name it run; only its
// owner or an operator may release it; it survives a restart.
func TestReservations(t *testing.T) {
	t.Parallel()
	r := newFakeRunner()
	l := daemontest.Start(t, daemontest.Options{Nodes: 1, Fake: true, Run: r.run})
	l.WaitIdle()
	as := func(name string, role labctl.Role) context.Context {
		return labctl.WithRole(labctl.WithCaller(ctx(t), name), role)
	}
	alice, bob, carol := as("alice", labctl.RoleSubmitter), as("bob", labctl.RoleSubmitter), as("carol", labctl.RoleOperator)
	dev, err := l.Daemon.Reserve(alice, "node1", labctl.ReserveRequest{For: time.Hour, Reason: "bisecting"})
	if err != nil || dev.Reservation == nil || dev.Reservation.Owner != "alice" || dev.Reservation.Reason != "bisecting" {
		t.Fatalf("Reserve = %+v, %v", dev, err)
	}
	if _, err := l.Daemon.Reserve(alice, "node1", labctl.ReserveRequest{}); !errors.Is(err, labctl.ErrInvalid) {
		t.Errorf("Reserve without a duration = %v, want ErrInvalid", err)
	}
	if _, err := l.Daemon.Reserve(bob, "node1", labctl.ReserveRequest{For: time.Hour}); !errors.Is(err, labctl.ErrBusy) || !strings.Contains(err.Error(), "alice") {
		t.Errorf("Reserve by another = %v, want ErrBusy naming alice", err)
	}
	if _, err := l.Daemon.Release(bob, "node1"); !errors.Is(err, labctl.ErrForbidden) {
		t.Errorf("Release by another submitter = %v, want ErrForbidden", err)
	}

	byType := l.Submit(daemontest.JobText(t, "name = \"bytype\"\ndevice_type = \"sim\"\n"))
	named := l.Submit(daemontest.JobText(t, "name = \"named\"\ndevice = \"node1\"\n"))
	if j, _ := l.Daemon.Job(ctx(t), named.ID); j.State != labctl.JobQueued || !strings.Contains(j.Reason, "reserved by alice") {
		t.Errorf("a job for a reserved device: %+v, want queued saying why", j)
	}
	own, err := l.Daemon.Submit(alice, labctl.SubmitRequest{File: "own.toml", Dir: "/", Spec: daemontest.JobText(t, "device = \"node1\"\n")})
	if err != nil {
		t.Fatal(err)
	}
	r.waitStarted(t, 1)
	if got := r.order(); got[0] != "own" {
		t.Errorf("started %v, want the owner's job only", got)
	}
	r.release <- "complete"
	l.Wait(own.ID)

	// Renewing keeps the start and moves the end.
	renewed, err := l.Daemon.Reserve(alice, "node1", labctl.ReserveRequest{For: 2 * time.Hour})
	if err != nil || !renewed.Reservation.Since.Equal(dev.Reservation.Since) || !renewed.Reservation.Until.After(dev.Reservation.Until) || renewed.Reservation.Reason != "bisecting" {
		t.Errorf("renewed: %+v, %v (was %+v)", renewed.Reservation, err, dev.Reservation)
	}
	l.Restart()
	if d := device(t, l, "node1"); d.Reservation == nil || d.Reservation.Owner != "alice" {
		t.Fatalf("after a restart: %+v, want still reserved by alice", d)
	}
	if got := r.order(); len(got) != 1 {
		t.Errorf("after the restart jobs ran on the reserved device: %v", got)
	}
	carol = as("carol", labctl.RoleOperator)
	if d, err := l.Daemon.Release(carol, "node1"); err != nil || d.Reservation != nil {
		t.Fatalf("Release by an operator = %+v, %v", d, err)
	}
	r.waitStarted(t, 2)
	r.release <- "complete"
	r.waitStarted(t, 3)
	r.release <- "complete"
	l.Wait(byType.ID)
	l.Wait(named.ID)
	if _, err := l.Daemon.Release(alice, "node1"); !errors.Is(err, labctl.ErrBusy) {
		t.Errorf("Release of a free device = %v, want ErrBusy", err)
	}

	// A reservation runs out by itself, and the queued job then runs.
	alice = as("alice", labctl.RoleSubmitter)
	if _, err := l.Daemon.Reserve(alice, "node1", labctl.ReserveRequest{For: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	after := l.Submit(daemontest.JobText(t, "name = \"after\"\ndevice_type = \"sim\"\n"))
	r.waitStarted(t, 4)
	if d := device(t, l, "node1"); d.Reservation != nil {
		t.Errorf("a job started while the reservation held: %+v", d.Reservation)
	}
	r.release <- "complete"
	l.Wait(after.ID)
	if rs, err := l.Store.Reservations(ctx(t)); err != nil || len(rs) != 0 {
		t.Errorf("the expired reservation is still stored: %+v, %v", rs, err)
	}
}

// A job that waited longer than its queue_timeout ends canceled, saying
// so; the running job is not touched.
func TestQueueTimeout(t *testing.T) {
	t.Parallel()
	r := newFakeRunner()
	l := daemontest.Start(t, daemontest.Options{Nodes: 1, Fake: true, Run: r.run})
	l.WaitIdle()
	busy := l.Submit(daemontest.JobText(t, "name = \"busy\"\ndevice = \"node1\"\n"))
	r.waitStarted(t, 1)
	waiting := l.Submit(daemontest.JobText(t, "name = \"waiting\"\ndevice = \"node1\"\nqueue_timeout = \"100ms\"\n"))
	patient := l.Submit(daemontest.JobText(t, "name = \"patient\"\ndevice = \"node1\"\n"))
	j := l.Wait(waiting.ID)
	if j.Outcome != "canceled" || !strings.Contains(j.Reason, "in the queue: no matching device became free") {
		t.Errorf("job past its queue timeout: %s %q", j.Outcome, j.Reason)
	}
	if p, _ := l.Daemon.Job(ctx(t), patient.ID); p.State != labctl.JobQueued {
		t.Errorf("a job without a queue timeout: %+v", p)
	}
	r.release <- "complete"
	if j := l.Wait(busy.ID); j.Outcome != "complete" {
		t.Errorf("running job: %+v", j)
	}
	r.waitStarted(t, 2)
	r.release <- "complete"
	l.Wait(patient.ID)
	if got := r.order(); len(got) != 2 {
		t.Errorf("started %v: the timed-out job must not run", got)
	}
}
