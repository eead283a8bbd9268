package daemon

import (
	"cmp"
	"context"
	"math"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/jobs"
	"github.com/labctl/labctl/store"
)

// job is a queued or running job. rec and dev are guarded by Daemon.mu;
// the live progress by its own lock.
type job struct {
	rec    store.Job
	spec   *jobs.Job // parsed, with absolute paths
	rank   int       // priority rank: higher runs first
	ctx    context.Context
	cancel context.CancelCauseFunc
	dev    *device       // the device it was given, once it was
	done   chan struct{} // closed when it has finished (rec is final)
	// seq is its place among jobs of its priority: its ID, or a retried
	// job's first attempt's.
	seq int64
	// avoid are the devices earlier attempts failed on: the job goes
	// elsewhere when it can.
	avoid []string
	// deadline is when it stops waiting in the queue (zero: never).
	deadline time.Time
	// added is Daemon.adds when it was last put in the queue.
	added uint64
	// unsure: a claim naming it failed without an answer, so the store
	// may hold it running under this daemon's claim (see claim).
	unsure bool

	pmu      sync.Mutex
	phase    string
	phaseAt  time.Time // when phase began
	phases   []string  // every phase entered, in order: followers see each
	transfer *labctl.Transfer
	image    *labctl.Transfer // the last transfer, kept after its phase
	news     chan struct{}    // closed and replaced when something happens
}

func (d *Daemon) newJob(rec store.Job, spec *jobs.Job) *job {
	ctx, cancel := context.WithCancelCause(d.base)
	j := &job{rec: rec, spec: spec, rank: spec.Priority.Rank(), ctx: ctx, cancel: cancel,
		done: make(chan struct{}), news: make(chan struct{}), seq: rec.ID}
	if t := cmp.Or(spec.QueueTimeout, d.cfg.Lab.Jobs.QueueTimeout); t > 0 {
		j.deadline = rec.Submitted.Add(t)
	}
	return j
}

// Phase implements dispatcher.Progress.
func (j *job) Phase(name string) {
	j.pmu.Lock()
	defer j.pmu.Unlock()
	j.phase, j.transfer, j.phaseAt = name, nil, time.Now()
	j.phases = append(j.phases, name)
	j.notifyLocked()
}

// Transfer implements dispatcher.Progress.
func (j *job) Transfer(done, total int64, elapsed time.Duration) {
	j.pmu.Lock()
	defer j.pmu.Unlock()
	j.transfer = &labctl.Transfer{Done: done, Total: total, Elapsed: elapsed}
	j.image = j.transfer
	j.notifyLocked()
}

// event is the dispatcher's Events hook: a line was added to the job log.
func (j *job) event(string) {
	j.pmu.Lock()
	defer j.pmu.Unlock()
	j.notifyLocked()
}

func (j *job) notifyLocked() {
	close(j.news)
	j.news = make(chan struct{})
}

// phasesSince returns the phases the job entered after the first n.
func (j *job) phasesSince(n int) []string {
	j.pmu.Lock()
	defer j.pmu.Unlock()
	if n >= len(j.phases) {
		return nil
	}
	return slices.Clone(j.phases[n:])
}

// progress returns the job's phase and transfer, and a channel closed on
// the next change.
func (j *job) progress() (labctl.JobProgress, <-chan struct{}) {
	j.pmu.Lock()
	defer j.pmu.Unlock()
	p := labctl.JobProgress{Phase: j.phase}
	if j.transfer != nil {
		t := *j.transfer
		p.Transfer = &t
	}
	return p, j.news
}

// phaseStart is when the job entered its current phase (zero before
// its first).
func (j *job) phaseStart() time.Time {
	j.pmu.Lock()
	defer j.pmu.Unlock()
	return j.phaseAt
}

// enqueueLocked puts a job in its place in the queue: after every job of
// a higher or the same priority submitted before it.
func (d *Daemon) enqueueLocked(j *job) {
	i := sort.Search(len(d.queue), func(i int) bool {
		q := d.queue[i]
		return q.rank < j.rank || (q.rank == j.rank && q.seq > j.seq)
	})
	d.queue = append(d.queue, nil)
	copy(d.queue[i+1:], d.queue[i:])
	d.queue[i] = j
	d.adds++
	j.added = d.adds
	d.wakeClock()
}

// dequeueLocked removes a job from the queue; false if it is not there.
func (d *Daemon) dequeueLocked(j *job) bool {
	for i, q := range d.queue {
		if q == j {
			d.queue = append(d.queue[:i], d.queue[i+1:]...)
			return true
		}
	}
	return false
}

// scheduleLocked gives queued jobs to available devices, in queue order:
// each job the best device that fits it now, if any. It is called whenever
// a job is queued or a device may have come free; it never waits. Its cost
// follows the idle devices it looks at, not the lab's size: once a job
// that asks only for a device type finds none, later jobs of that type
// are not looked at.
func (d *Daemon) scheduleLocked() {
	d.wakeClock()
	if !d.serving || d.stopping || len(d.queue) == 0 {
		return
	}
	var none map[string]bool // device types with no device available
	kept := d.queue[:0]
	for _, j := range d.queue {
		if j.spec.Device == "" && none[j.spec.DeviceType] {
			kept = append(kept, j)
			continue
		}
		dev := d.pickLocked(j)
		if dev == nil {
			if j.spec.Device == "" && len(j.spec.Tags) == 0 {
				if none == nil {
					none = map[string]bool{}
				}
				none[j.spec.DeviceType] = true
			}
			kept = append(kept, j)
			continue
		}
		j.dev, dev.job, dev.busy = dev, j, true
		if j.rec.ID == 0 {
			// Not stored yet (placeLocked): its submitter stores it
			// claimed for dev and hands it to the worker.
			continue
		}
		dev.tasks <- task{job: j}
		d.refreshLocked(dev, "")
	}
	clear(d.queue[len(kept):])
	d.queue = kept
}

// placeLocked returns the device the scheduler gives now a job about to
// be stored (its ID not known yet), or nil if the job would wait: the job
// joins the queue as the newest of its priority for one round of
// scheduleLocked, which holds the device it gets for it (dev.job, busy)
// without handing it to the worker. The caller stores the job claimed for
// that device, then hands it over, or gives the device back (releaseLocked).
func (d *Daemon) placeLocked(j *job) *device {
	if !d.fitsHere(j.spec) {
		return nil
	}
	j.seq = math.MaxInt64
	d.enqueueLocked(j)
	d.scheduleLocked()
	if j.dev == nil {
		d.dequeueLocked(j)
	}
	return j.dev
}

// releaseLocked gives back the device placeLocked held for a job that was
// not stored claimed, and gives it to the queue.
func (d *Daemon) releaseLocked(j *job) {
	dev := j.dev
	dev.job, j.dev, dev.busy = nil, nil, false
	d.refreshLocked(dev, "")
	d.scheduleLocked()
}

// pickLocked chooses the device for a job: the one it names, or of the
// devices of its type with its tags the one idle the longest (one an
// earlier attempt of the job did not fail on, if there is one; of devices
// idle since the same instant, the first by name); nil if none is
// available now. Reserved devices take only their owner's jobs that name
// them. Devices of a type are looked at in the order they became idle
// (Daemon.idle), from the longest idle, until the choice is made.
func (d *Daemon) pickLocked(j *job) *device {
	if j.spec.Device != "" {
		if dev := d.devices[j.spec.Device]; dev != nil && d.availableLocked(dev) && d.mayTakeLocked(dev, j) {
			return dev
		}
		return nil
	}
	q := d.idle[j.spec.DeviceType]
	for len(q) > 0 && !q[0].valid() {
		q[0] = idleEntry{}
		q = q[1:]
	}
	d.idle[j.spec.DeviceType] = q
	// better: a before b in the idle order (entries come in the order of
	// since; equal since: name order).
	better := func(a, b *device) bool {
		return b == nil || a.since.Before(b.since) || (a.since.Equal(b.since) && a.order < b.order)
	}
	var best, avoided *device
	for _, e := range q {
		if best != nil && e.since.After(best.since) {
			break
		}
		dev := e.dev
		if !e.valid() || !d.availableLocked(dev) || !dev.cfg.HasTags(j.spec.Tags) || !d.mayTakeLocked(dev, j) {
			continue
		}
		if slices.Contains(j.avoid, dev.name) {
			if better(dev, avoided) {
				avoided = dev
			}
			continue
		}
		if better(dev, best) {
			best = dev
		}
	}
	if best == nil {
		return avoided
	}
	return best
}
