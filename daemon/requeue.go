package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/dispatcher"
	"github.com/labctl/labctl/results"
	"github.com/labctl/labctl/store"
)

// A job that ends incomplete (the lab went wrong: a BMC that did not
// answer, a node that did not boot, the daemon stopping or dying under
// it) is queued again, up to its retries (the job file's retries, or the
// lab's [jobs] retries): each attempt is a job of its own, with its own
// ID, log and results, linked in the store to the attempt it retries
// (store.RetryJob), so that the record keeps every attempt. The next
// attempt has the same job file and submitter, keeps the first attempt's
// place in the queue, and goes to a device other than those its attempts
// failed on when one is free. A test that failed, and a job canceled or
// out of time, are never retried.

// retry queues the next attempt of a job that just ended on device, if it
// ended incomplete and has retries left. It runs before the job's
// watchers hear of its end, so that they find the next attempt
// (labctl.Job.RetriedAs) and follow it.
func (d *Daemon) retry(j *job, device string, res *results.Job) {
	if res == nil || res.Outcome != string(labctl.Incomplete) {
		return
	}
	sctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	rec := j.rec
	rec.RunDevice = device
	next, err := d.nextAttempt(sctx, rec)
	if err != nil {
		d.log.Error("queue the job again", "job", rec.ID, "err", err)
		return
	}
	if next == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.jobs[next.rec.ID] != nil {
		// This host read it from the store's queue first (followQueue).
		next.cancel(nil)
		return
	}
	d.jobs[next.rec.ID] = next
	d.enqueueLocked(next)
	d.observeQueuedLocked(next.rec)
	d.scheduleLocked()
}

// nextAttempt records the next attempt of a job that ended incomplete and
// returns it, not yet queued; nil if the job has no retries left (or was
// retried already).
func (d *Daemon) nextAttempt(ctx context.Context, rec store.Job) (*job, error) {
	spec, err := parseStored(rec)
	if err != nil {
		return nil, err
	}
	attempts, err := d.store.Attempts(ctx, rec.ID)
	if err != nil {
		return nil, err
	}
	retries := spec.RetriesOr(d.cfg.Lab.Jobs.Retries)
	if len(attempts) > retries {
		if retries > 0 {
			d.log.Info("job not retried: no retries left", "job", rec.ID, "attempts", len(attempts))
		}
		return nil, nil
	}
	nrec, err := d.store.RetryJob(ctx, rec.ID, store.Job{
		Name: rec.Name, File: rec.File, Dir: rec.Dir, Spec: rec.Spec,
		Device: rec.Device, DeviceType: rec.DeviceType, Tags: rec.Tags, Priority: rec.Priority,
		Submitter: rec.Submitter, Submitted: d.now(),
	})
	if errors.Is(err, store.ErrConflict) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	next := d.newJob(nrec, spec)
	next.seq = attempts[0].ID
	next.avoid = failedOn(append(attempts, rec))
	note := fmt.Sprintf("job %d: incomplete: the lab went wrong, so it runs again as job %d (attempt %d of at most %d)",
		rec.ID, nrec.ID, len(attempts)+1, retries+1)
	d.log.Info("job queued again", "job", rec.ID, "as", nrec.ID, "attempt", len(attempts)+1, "avoid", next.avoid)
	if f, err := os.OpenFile(filepath.Join(d.jobDir(rec.ID), "job.log"), os.O_WRONLY|os.O_APPEND, 0); err == nil {
		l := dispatcher.NewLog(f, d.now, nil)
		l.Event(note)
		l.Close()
	}
	return next, nil
}

// restoreAttempts gives a queued job that retries another, loaded from
// the store, its place in the queue and the devices to avoid.
func (d *Daemon) restoreAttempts(ctx context.Context, j *job) error {
	attempts, err := d.store.Attempts(ctx, j.rec.ID)
	if err != nil {
		return err
	}
	if len(attempts) > 1 {
		j.seq = attempts[0].ID
		j.avoid = failedOn(attempts)
	}
	return nil
}

// failedOn lists the devices the incomplete attempts ran on.
func failedOn(attempts []store.Job) []string {
	var out []string
	for _, a := range attempts {
		if a.RunDevice != "" && (a.Outcome == string(labctl.Incomplete) || a.State == store.Running) && !slices.Contains(out, a.RunDevice) {
			out = append(out, a.RunDevice)
		}
	}
	return out
}

// attemptsView fills in a job's attempts: the one it retries, the one
// that retries it, and all of them when there is more than one.
func (d *Daemon) attemptsView(ctx context.Context, v *labctl.Job) error {
	attempts, err := d.store.Attempts(ctx, v.ID)
	if err != nil || len(attempts) < 2 {
		return err
	}
	for i, a := range attempts {
		if a.ID == v.ID {
			if i > 0 {
				v.RetryOf = attempts[i-1].ID
			}
			if i+1 < len(attempts) {
				v.RetriedAs = attempts[i+1].ID
			}
		}
		at := labctl.Attempt{ID: a.ID, Device: a.RunDevice, State: a.State, Outcome: a.Outcome, Reason: a.Reason}
		if !a.Started.IsZero() {
			t := a.Started
			at.Started = &t
		}
		if !a.Finished.IsZero() {
			t := a.Finished
			at.Finished = &t
		}
		v.Attempts = append(v.Attempts, at)
	}
	return nil
}
