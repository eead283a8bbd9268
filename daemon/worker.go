package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/dispatcher"
	"github.com/labctl/labctl/results"
	"github.com/labctl/labctl/store"
)

// storeTimeout bounds one store write that must happen even while the
// daemon stops (recording how a job ended).
const storeTimeout = 30 * time.Second

// runJob takes the job off the queue in the store (unless it was stored
// claimed for the device: Submit), runs it on the device and records how
// it ended. A job that ended incomplete is followed by a health check of
// the device, before it takes another job.
func (d *Daemon) runJob(ctx context.Context, dev *device, j *job) {
	d.mu.Lock()
	claimed := j.rec.State == store.Running
	d.mu.Unlock()
	if !claimed {
		var ok bool
		if j, ok = d.takeOffQueue(ctx, dev, j); !ok {
			return
		}
	}
	d.mu.Lock()
	id, started := j.rec.ID, j.rec.Started
	d.mu.Unlock()
	j.event("")
	d.observeStart(j, dev, started)
	latency := started.Sub(j.rec.Submitted)
	d.log.Info("job started", "job", id, "name", j.rec.Name, "device", dev.name, "queued", latency.Round(time.Microsecond))

	dir := d.jobDir(id)
	if err := moveAside(dir); err != nil {
		d.log.Warn("job directory", "job", id, "err", err)
	}
	set := dev.cfg.Settings
	session, release, err := d.consoles.AcquireFor(j.ctx, dev.name, fmt.Sprintf("job %d", id), dev.node.Console, set.Timeouts.Power)
	if err != nil {
		d.log.Warn("console did not open", "job", id, "device", dev.name, "err", err)
	}
	res := d.run(j.ctx, dispatcher.Job{
		ID: strconv.FormatInt(id, 10), Spec: j.spec, Device: dev.name, Settings: set,
		Power: dev.node.Power, Console: session, Netboot: dev.node.Netboot,
		Dir: dir, CacheDir: d.cacheDir, Images: d.imagePolicy(), Progress: observedProgress{j, d, dev.name}, Events: j.event,
		SaveTo: dispatcher.SavePath(d.cfg.Lab.Images.SaveDir, j.spec),
		Log:    d.log.With("job", id, "device", dev.name), Now: d.now,
	})
	release()
	d.finishRunning(j, res)
	d.log.Info("job ended", "job", id, "device", dev.name, "outcome", res.Outcome, "reason", res.Reason)
	d.retry(j, dev.name, res)
	d.jobEnded(dev, j, res)
	d.mu.Lock()
	c := dev.check
	d.mu.Unlock()
	if c != nil {
		// The health check after an incomplete job, on this worker, before
		// anything else: the device is not free until it passes.
		d.runCheck(ctx, dev, c)
	}
}

// takeOffQueue takes a job given to dev off the store's queue (claim) and
// returns the job dev runs: j, or (several hosts) another queued job the
// claim named; false if none: the device is given back, and a job
// canceled meanwhile ends.
func (d *Daemon) takeOffQueue(ctx context.Context, dev *device, j *job) (*job, bool) {
	id := j.rec.ID
	wctx := context.WithoutCancel(ctx)
	if j.ctx.Err() != nil {
		// Canceled after it was given to this device, before it started.
		d.finishQueued(j, context.Cause(j.ctx))
		d.jobEnded(dev, j, nil)
		return nil, false
	}
	d.mu.Lock()
	others := d.candidatesLocked(dev, j)
	d.mu.Unlock()
	taken, started, err := d.claim(wctx, j, others, dev)
	d.mu.Lock()
	dev.claiming = false
	if err != nil && !errors.Is(err, store.ErrConflict) {
		// The store may have committed the claim of any of them.
		for _, c := range append(others, j) {
			c.unsure = true
		}
	}
	// A refused claim says which of the jobs it named are gone (another
	// host took them): they leave this host's queue now, not at its next
	// read of the store's queue, so that the next claim does not name
	// them again. (j, if gone, ends below as any conflict does.) One an
	// earlier claim may have taken for this host (its answer was lost:
	// unsure) stays, for a claim of it to find out (claim).
	var refused *store.ClaimRefusedError
	errors.As(err, &refused)
	for _, c := range others {
		switch {
		case c == taken:
		case refused != nil && slices.Contains(refused.Gone, c.rec.ID) && !c.unsure && c.ctx.Err() == nil:
			d.forgetLocked(c)
		default:
			d.requeueLocked(c)
		}
	}
	if err == nil && taken != j {
		// Another host took j (or is taking it): dev runs the candidate
		// the store gave it instead, and j goes back to the queue (a
		// read of the store's queue drops it if it is gone).
		dev.job, taken.dev, j.dev = taken, dev, nil
		d.requeueLocked(j)
		d.refreshLocked(dev, "")
		j, id = taken, taken.rec.ID
	}
	if err == nil && len(others) > 0 {
		d.scheduleLocked()
	}
	d.mu.Unlock()
	if err != nil {
		if errors.Is(err, store.ErrConflict) {
			// Canceled meanwhile, or (several hosts) another host took it.
			d.log.Info("job not taken off the queue: it changed", "job", id, "device", dev.name, "err", err)
		} else {
			d.log.Error("take job off the queue", "job", id, "device", dev.name, "err", err)
		}
		d.mu.Lock()
		dev.job, j.dev, dev.busy = nil, nil, false
		if errors.Is(err, store.ErrConflict) {
			// Someone else finished or took it: the device is free for
			// the next queued job now, not when the queue next changes.
			// In a lab of several hosts the others likely took more of
			// this host's queued jobs: a read of the store's queue drops
			// them; meanwhile the next claim names several jobs and
			// takes the first one free.
			d.forgetLocked(j)
			d.refreshLocked(dev, "")
			if d.host != nil {
				d.host.queueChanged(store.QueueNews{Whole: true})
			}
			d.scheduleLocked()
		} else {
			// The store failed: the job stays queued there; keep it
			// queued here and try again a little later.
			d.enqueueLocked(j)
			time.AfterFunc(claimRetry, func() {
				d.mu.Lock()
				defer d.mu.Unlock()
				d.scheduleLocked()
			})
		}
		d.refreshLocked(dev, "")
		d.mu.Unlock()
		return nil, false
	}
	d.mu.Lock()
	j.rec.State, j.rec.RunDevice, j.rec.Started, j.rec.Host = store.Running, dev.name, started, d.hostName()
	d.mu.Unlock()
	return j, true
}

// forgetLocked drops a queued job this host will not run (another host
// took it, or it ended elsewhere) and wakes those waiting on it, who read
// how it went from the store.
func (d *Daemon) forgetLocked(j *job) {
	delete(d.jobs, j.rec.ID)
	close(j.done)
}

// claimRetry is how long a job waits in the queue after the store failed
// to take it off the queue, before it is given a device again.
const claimRetry = time.Second

// maxCandidates is how many queued jobs besides its own a worker of a
// host of several names in its claim, at most: a host that loses its job
// to another host (they all hold the lab's queue, in one order, so they
// go for the same oldest jobs) takes the next one free in the same round
// trip, rather than after a read of the queue.
const maxCandidates = 8

// candidatesLocked takes out of the queue the jobs dev may claim if
// another host has j, in queue order: an even share, among the workers
// of this host about to claim, of the queued jobs dev fits (at most
// maxCandidates). None in a lab of one host, where no one else takes
// jobs. The caller gives back those it did not take (requeueLocked) and
// clears dev.claiming.
func (d *Daemon) candidatesLocked(dev *device, j *job) []*job {
	if d.host == nil {
		return nil
	}
	waiting := 1 // dev's worker, and those given a job that have not claimed yet
	for _, o := range d.devices {
		if o != dev && o.job != nil && o.job.rec.State == store.Queued && !o.claiming {
			waiting++
		}
	}
	var fit []*job
	for _, q := range d.queue {
		if q.ctx.Err() == nil && q.spec.Fits(dev.name, dev.cfg.DeviceType, dev.cfg.Tags) && !slices.Contains(q.avoid, dev.name) && d.mayTakeLocked(dev, q) {
			fit = append(fit, q)
		}
	}
	out := fit[:min(len(fit), maxCandidates, (len(fit)+waiting-1)/waiting)]
	for _, q := range out {
		d.dequeueLocked(q)
	}
	dev.claiming = true
	return out
}

// requeueLocked puts back in the queue a job a claim named but did not
// take; one canceled meanwhile (Cancel waits for it) ends canceled.
func (d *Daemon) requeueLocked(j *job) {
	if j.ctx.Err() == nil {
		d.enqueueLocked(j)
		return
	}
	delete(d.jobs, j.rec.ID)
	go func() {
		d.finishQueued(j, context.Cause(j.ctx))
		close(j.done)
	}()
}

// claim takes off the queue in the store, for dev, j or else the first
// of others still free, and returns the job taken and its start. A claim
// that failed with an error after the store had committed it (a
// timeout) makes the next claim find the job running already: if it
// runs on dev, it is this daemon's own claim (one daemon per state
// directory) of a job that has not started, and the job goes ahead. A
// job running under another claim (another host of the lab) is a plain
// conflict: its claimer runs it.
func (d *Daemon) claim(ctx context.Context, j *job, others []*job, dev *device) (*job, time.Time, error) {
	started := d.now()
	sctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	ids := []int64{j.rec.ID}
	for _, c := range others {
		ids = append(ids, c.rec.ID)
	}
	id, err := d.store.ClaimFirst(sctx, ids, dev.name, started)
	if err == nil {
		if id == j.rec.ID {
			return j, started, nil
		}
		for _, c := range others {
			if c.rec.ID == id {
				return c, started, nil
			}
		}
		return nil, started, fmt.Errorf("the store claimed job %d, which the claim did not name", id)
	}
	d.mu.Lock()
	unsure := j.unsure
	d.mu.Unlock()
	if !errors.Is(err, store.ErrConflict) || !unsure {
		return nil, started, err
	}
	rec, rerr := d.store.Job(sctx, j.rec.ID)
	if rerr != nil || rec.State != store.Running || rec.Host != d.hostName() {
		return nil, started, err
	}
	if rec.RunDevice == dev.name {
		d.log.Warn("job was taken off the queue by an earlier try whose answer was lost", "job", j.rec.ID, "device", dev.name)
		return j, rec.Started, nil
	}
	d.endLostAnswer(j, rec)
	return nil, started, err
}

// endLostAnswer ends a job the store holds running under this daemon's
// claim for a device that does not run it (rec): a claim committed but
// its answer was lost. It must not run elsewhere now; it ends, once.
func (d *Daemon) endLostAnswer(j *job, rec store.Job) {
	reason := fmt.Sprintf("did not start: the store lost the answer when it was given to %s; submit it again", rec.RunDevice)
	now := d.now()
	d.mu.Lock()
	j.rec.State, j.rec.RunDevice, j.rec.Started = store.Finished, rec.RunDevice, rec.Started
	j.rec.Outcome, j.rec.Reason, j.rec.Finished = string(labctl.Incomplete), reason, now
	final := j.rec
	d.mu.Unlock()
	d.recordEnd(final, store.Running, store.Finish{Outcome: string(labctl.Incomplete), Reason: reason, At: now})
}

// settleClaim gives back the device held for a job, j, whose claimed
// insert, sub, failed without a clear answer, once the store says whether
// it holds the job: one running on that device under this host's claim
// since sub.Started, which nothing runs, ends (its submitter heard an
// error and submits again). The device takes no job until then; the
// store is asked again every claimRetry while it fails.
func (d *Daemon) settleClaim(j *job, sub store.Job) {
	defer j.cancel(nil)
	for {
		ctx, cancel := context.WithTimeout(d.base, storeTimeout)
		recs, err := d.store.Jobs(ctx, store.JobFilter{States: []string{store.Running}, Device: sub.RunDevice})
		cancel()
		if err == nil {
			for _, rec := range recs {
				if rec.Host == d.hostName() && rec.Started.Equal(sub.Started) && rec.Submitted.Equal(sub.Submitted) && rec.Name == sub.Name {
					d.log.Warn("job was stored claimed but the store lost the answer: it ends without starting", "job", rec.ID, "device", rec.RunDevice)
					d.mu.Lock()
					j.rec = rec
					d.mu.Unlock()
					d.endLostAnswer(j, rec)
				}
			}
			break
		}
		select {
		case <-d.base.Done():
			// Stopping: the next start's recovery ends the job if the
			// store holds it.
			return
		case <-time.After(claimRetry):
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.releaseLocked(j)
}

// finishRunning records how a running job ended (see recordEnd: a store
// that cannot write does not lose it).
func (d *Daemon) finishRunning(j *job, res *results.Job) {
	body, err := resultJSON(res)
	if err != nil {
		d.log.Error("encode results", "job", j.rec.ID, "err", err)
	}
	d.mu.Lock()
	j.rec.State, j.rec.Outcome, j.rec.Reason, j.rec.Finished, j.rec.Result = store.Finished, res.Outcome, res.Reason, res.Finished, body
	rec := j.rec
	d.mu.Unlock()
	d.recordEnd(rec, store.Running, store.Finish{Outcome: res.Outcome, Reason: res.Reason, At: res.Finished, Result: body})
}

// finishQueued records a job canceled before it started.
func (d *Daemon) finishQueued(j *job, cause error) {
	now := d.now()
	reason := "canceled"
	if cause != nil && !errors.Is(cause, context.Canceled) {
		reason += ": " + cause.Error()
	}
	d.mu.Lock()
	j.rec.State, j.rec.Outcome, j.rec.Reason, j.rec.Finished = store.Finished, string(labctl.Canceled), reason, now
	rec := j.rec
	d.mu.Unlock()
	d.recordEnd(rec, store.Queued, store.Finish{Outcome: string(labctl.Canceled), Reason: reason, At: now})
}

// jobEnded frees the device (or starts its health check after an
// incomplete job) and tells the job's watchers.
func (d *Daemon) jobEnded(dev *device, j *job, res *results.Job) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.jobs, j.rec.ID)
	dev.job, j.dev = nil, nil
	why := fmt.Sprintf("job %d ended %s", j.rec.ID, j.rec.Outcome)
	lost := errors.Is(context.Cause(j.ctx), errClaimLost)
	if res != nil && (res.Outcome == string(labctl.Incomplete) || lost) && !d.stopping {
		// Infrastructure error (or another host ended the job while this
		// one was cut off): the device proves itself before the next job.
		dev.healthy, dev.healthReason = false, fmt.Sprintf("job %d ended %s: %s", j.rec.ID, res.Outcome, res.Reason)
		dev.recover = true
		dev.check = &check{why: fmt.Sprintf("after incomplete job %d", j.rec.ID), recover: true, done: make(chan struct{})}
	} else {
		dev.busy = false
	}
	d.refreshLocked(dev, why)
	close(j.done)
	j.cancel(nil)
	d.scheduleLocked()
}

// runCheck runs a health check on the device and records its result; a
// passing device takes jobs again.
func (d *Daemon) runCheck(ctx context.Context, dev *device, c *check) {
	if ctx.Err() != nil {
		d.requeue(dev, task{check: c})
		return
	}
	select {
	case d.checkSlots <- struct{}{}:
	case <-ctx.Done():
		d.requeue(dev, task{check: c})
		return
	}
	h := d.healthCheck(ctx, dev, c)
	<-d.checkSlots
	d.mu.Lock()
	defer d.mu.Unlock()
	dev.check, dev.busy = nil, false
	why := "health check passed"
	if ctx.Err() == nil || h.OK {
		why = d.recordHealthLocked(dev, h)
		d.observeHealthLocked(dev, h)
	}
	if c.why != "" {
		why += " (" + c.why + ")"
	}
	d.refreshLocked(dev, why)
	c.result = h
	close(c.done)
	d.scheduleLocked()
}

// jobDir is where a job's log and results go.
func (d *Daemon) jobDir(id int64) string {
	return filepath.Join(d.jobsDir, strconv.FormatInt(id, 10))
}

// moveAside renames a job directory left from an earlier store (job IDs
// start again from 1 when the database is new), so that a job's directory
// holds only its own files.
func moveAside(dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	old := fmt.Sprintf("%s.old-%d", dir, time.Now().Unix())
	if err := os.Rename(dir, old); err != nil {
		return fmt.Errorf("move aside %s: %w", dir, err)
	}
	return nil
}

// waitCheck waits for a check's result (or ctx).
func waitCheck(ctx context.Context, c *check) (labctl.Health, error) {
	select {
	case <-c.done:
		return c.result, nil
	case <-ctx.Done():
		return labctl.Health{}, fmt.Errorf("waiting for the health check: %w", context.Cause(ctx))
	}
}
