package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/dispatcher"
	"github.com/labctl/labctl/internal/statedir"
	"github.com/labctl/labctl/jobs"
	"github.com/labctl/labctl/results"
	"github.com/labctl/labctl/store"
)

// restartReason is why a job that was running when the daemon died ends.
const restartReason = "daemon restarted while the job ran"

// recoverJobs ends the jobs that were running when the daemon died and
// puts the queued ones back in the queue.
func (d *Daemon) recoverJobs(ctx context.Context) error {
	running, err := d.store.Jobs(ctx, store.JobFilter{States: []string{store.Running}})
	if err != nil {
		return fmt.Errorf("daemon: recover: %w", err)
	}
	for _, rec := range running {
		if !d.ownedLocally(rec) {
			continue // another host's
		}
		res := d.crashedResult(rec)
		body, err := resultJSON(res)
		if err != nil {
			return fmt.Errorf("daemon: recover job %d: %w", rec.ID, err)
		}
		if err := d.store.FinishJob(ctx, rec.ID, store.Running, store.Finish{
			Outcome: res.Outcome, Reason: res.Reason, At: res.Finished, Result: body,
		}); err != nil {
			return fmt.Errorf("daemon: recover job %d: %w", rec.ID, err)
		}
		d.log.Warn("job was running when the daemon stopped", "job", rec.ID, "device", rec.RunDevice, "outcome", res.Outcome, "reason", res.Reason)
		if dev := d.devices[rec.RunDevice]; dev != nil {
			// Whatever the job did to the node, undo it before the next one.
			dev.recover = true
		}
		if res.Outcome == string(labctl.Incomplete) {
			// The daemon's restart cut it short: the lab's failure. The
			// next attempt is loaded with the queue below.
			rec.Outcome = res.Outcome
			if _, err := d.nextAttempt(ctx, rec); err != nil {
				return fmt.Errorf("daemon: recover job %d: %w", rec.ID, err)
			}
		}
	}

	queued, err := d.store.Jobs(ctx, store.JobFilter{States: []string{store.Queued}})
	if err != nil {
		return fmt.Errorf("daemon: load the queue: %w", err)
	}
	for _, rec := range queued {
		spec, err := parseStored(rec)
		if err == nil {
			err = d.checkPlacement(spec)
		}
		if err != nil {
			// The lab changed under the job (a device went away).
			d.log.Warn("queued job cannot run any more", "job", rec.ID, "err", err)
			if ferr := d.store.FinishJob(ctx, rec.ID, store.Queued, store.Finish{
				Outcome: string(labctl.Incomplete), Reason: "cannot run in this lab any more: " + err.Error(), At: d.now(),
			}); ferr != nil {
				return fmt.Errorf("daemon: load the queue: %w", ferr)
			}
			continue
		}
		if d.host != nil && !d.fitsHere(spec) {
			d.host.ignored[rec.ID] = true // another host's devices take it
			continue
		}
		j := d.newJob(rec, spec)
		if err := d.restoreAttempts(ctx, j); err != nil {
			return fmt.Errorf("daemon: load the queue: %w", err)
		}
		d.jobs[rec.ID] = j
		d.enqueueLocked(j)
	}
	if len(running)+len(queued) > 0 {
		d.log.Info("recovered the queue", "ended", len(running), "queued", len(d.queue))
	}
	return nil
}

// crashedResult is the record of a job the daemon lost track of: the one
// its dispatcher wrote if it got that far (the daemon died between the
// job's end and recording it), else an incomplete one. Either way it is
// written to the job directory, with a note at the end of the job log.
func (d *Daemon) crashedResult(rec store.Job) *results.Job {
	dir := d.jobDir(rec.ID)
	if f, err := os.Open(filepath.Join(dir, "results.json")); err == nil {
		res, err := results.ReadJSON(f)
		f.Close()
		if err == nil && res.ID == strconv.FormatInt(rec.ID, 10) && res.Outcome != "" {
			return res
		}
	}
	now := d.now()
	spec, err := parseStored(rec)
	if err != nil {
		spec = &jobs.Job{Name: rec.Name}
	}
	res := dispatcher.NewRecord(strconv.FormatInt(rec.ID, 10), spec, rec.RunDevice, rec.Started)
	end := dispatcher.End{Outcome: labctl.Incomplete, Reason: restartReason, Action: "restart"}
	if err := dispatcher.EndRecord(res, end, now, dir); err != nil {
		d.log.Error("write results", "job", rec.ID, "err", err)
	}
	if f, err := os.OpenFile(filepath.Join(dir, "job.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, statedir.FileMode); err == nil {
		l := dispatcher.NewLog(f, func() time.Time { return now }, nil)
		l.Event(fmt.Sprintf("job %d: incomplete: %s (the node is powered off and its device checked before the next job)", rec.ID, restartReason))
		l.Close()
	}
	return res
}

// resultJSON encodes a job record for the store.
func resultJSON(res *results.Job) ([]byte, error) {
	if res == nil {
		return nil, nil
	}
	return json.Marshal(res)
}
