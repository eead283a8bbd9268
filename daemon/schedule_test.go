package daemon

import (
	"log/slog"
	"testing"
	"time"

	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/jobs"
	"github.com/labctl/labctl/store"
)

// schedLab is a daemon with only what scheduling needs: devices of type
// "t" (by name, with tags), serving, on a clock the test sets.
func schedLab(t *testing.T, tags map[string][]string, names ...string) (*Daemon, *time.Time) {
	t.Helper()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d := &Daemon{log: slog.New(slog.DiscardHandler), now: func() time.Time { return now },
		devices: map[string]*device{}, byType: map[string][]*device{}, idle: map[string][]idleEntry{},
		dirty: map[string]bool{}, persistNow: make(chan struct{}, 1), clock: make(chan struct{}, 1), serving: true}
	for i, name := range names {
		dev := &device{cfg: &devices.Device{Name: name, DeviceType: "t", Tags: tags[name]}, name: name,
			tasks: make(chan task, 1), order: i}
		d.devices[name] = dev
		d.byType["t"] = append(d.byType["t"], dev)
		d.refreshLocked(dev, "") // offline: not checked
	}
	return d, &now
}

// idleAt makes the device healthy and idle at the given time.
func idleAt(d *Daemon, now *time.Time, name string, at time.Time) {
	*now = at
	dev := d.devices[name]
	dev.healthy, dev.busy, dev.job = true, false, nil
	d.refreshLocked(dev, "")
}

func schedJob(id int64, tags []string, avoid ...string) *job {
	return &job{rec: store.Job{ID: id}, spec: &jobs.Job{DeviceType: "t", Tags: tags}, seq: id, avoid: avoid}
}

// take gives the job its device as scheduleLocked does and returns it.
func take(t *testing.T, d *Daemon, j *job) string {
	t.Helper()
	d.queue = append(d.queue, j)
	d.scheduleLocked()
	if j.dev == nil {
		return ""
	}
	<-j.dev.tasks
	return j.dev.name
}

// A job gets the device idle the longest (of devices idle since the same
// instant, the first by name), one its earlier attempts did not fail on if
// there is one, and one with its tags; devices are taken once.
func TestPickLongestIdle(t *testing.T) {
	d, now := schedLab(t, map[string][]string{"e": {"gpu"}}, "a", "b", "c", "d", "e")
	t0 := *now
	idleAt(d, now, "c", t0)
	idleAt(d, now, "b", t0.Add(time.Second)) // b before a in the idle order, same instant
	idleAt(d, now, "a", t0.Add(time.Second))
	idleAt(d, now, "d", t0.Add(2*time.Second))
	idleAt(d, now, "e", t0.Add(3*time.Second))

	for i, want := range []string{"c", "a", "b"} {
		if got := take(t, d, schedJob(int64(i+1), nil)); got != want {
			t.Fatalf("job %d got %q, want %q (longest idle, then by name)", i+1, got, want)
		}
	}
	// d is idle longer than e, but the job's first attempt failed on d.
	if got := take(t, d, schedJob(4, nil, "d")); got != "e" {
		t.Fatalf("a retry got %q, want e (not the device its first attempt failed on)", got)
	}
	// Only e has the tag, and e is taken.
	if got := take(t, d, schedJob(5, []string{"gpu"})); got != "" {
		t.Fatalf("a job asking for gpu got %q with the only gpu device busy", got)
	}
	// When only avoided devices are left, the job takes one.
	if got := take(t, d, schedJob(6, nil, "d")); got != "d" {
		t.Fatalf("a retry got %q, want d (the only device left)", got)
	}
	if len(d.queue) != 1 || d.queue[0].rec.ID != 5 {
		t.Fatalf("queue %v, want job 5 waiting", d.queue)
	}
	// e comes free: the gpu job takes it.
	idleAt(d, now, "e", t0.Add(4*time.Second))
	d.scheduleLocked()
	if len(d.queue) != 0 || d.devices["e"].job == nil || d.devices["e"].job.rec.ID != 5 {
		t.Fatalf("queue %v, e runs %v: want job 5 on e", d.queue, d.devices["e"].job)
	}
}

// With no device free, queued jobs stay queued in their order; with one
// free, the first that fits takes it.
func TestScheduleNoneFree(t *testing.T) {
	d, now := schedLab(t, map[string][]string{"b": {"gpu"}}, "a", "b")
	for i := range 4 {
		tags := []string(nil)
		if i == 2 {
			tags = []string{"gpu"}
		}
		d.queue = append(d.queue, schedJob(int64(i+1), tags))
	}
	d.scheduleLocked()
	if len(d.queue) != 4 {
		t.Fatalf("%d jobs queued with no device available, want 4", len(d.queue))
	}
	idleAt(d, now, "b", now.Add(time.Second))
	d.scheduleLocked()
	if len(d.queue) != 3 || d.devices["b"].job.rec.ID != 1 {
		t.Fatalf("queue %d jobs, b runs job %d: want job 1 on b", len(d.queue), d.devices["b"].job.rec.ID)
	}
	for i, want := range []int64{2, 3, 4} {
		if d.queue[i].rec.ID != want {
			t.Fatalf("queue[%d] is job %d, want %d", i, d.queue[i].rec.ID, want)
		}
	}
}

// A device's turns idle do not pile up in the idle order: it stays within
// a bound of the type's devices however often devices come and go.
func TestIdleOrderBounded(t *testing.T) {
	names := []string{"a", "b", "c"}
	d, now := schedLab(t, nil, names...)
	t0 := *now
	idleAt(d, now, "a", t0) // a stays idle, first in the order
	for i := range 1000 {
		name := names[1+i%2]
		idleAt(d, now, name, t0.Add(time.Duration(i+1)*time.Millisecond))
		dev := d.devices[name]
		dev.busy, dev.job = true, schedJob(int64(i+1), nil)
		d.refreshLocked(dev, "")
	}
	if n, bound := len(d.idle["t"]), 2*len(names)+16; n > bound {
		t.Fatalf("idle order holds %d entries for %d devices, want at most %d", n, len(names), bound)
	}
	if got := take(t, d, schedJob(9999, nil)); got != "a" {
		t.Fatalf("got %q, want a", got)
	}
	if got := take(t, d, schedJob(10000, nil)); got != "" {
		t.Fatalf("got %q with every device busy", got)
	}
}
