package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/internal/statedir"
	"github.com/labctl/labctl/store"
)

// How often the daemon tries again to record the end of a job the store
// refused: at first soon, then less and less often.
const (
	endRetryFirst = 100 * time.Millisecond
	endRetryMax   = 30 * time.Second
)

// A job's end is never lost to a store that cannot write (a full disk, a
// read-only database): the daemon keeps the ends the store refused, in
// the order the jobs ended, shows them through the API as if recorded,
// and records them one after the other, with backoff, until the store
// takes them. Meanwhile submits are refused (labctl.ErrUnavailable, with
// the store's error): a job the store cannot record must not be accepted.
// Reads keep working as far as the store can read.
type unsavedEnds struct {
	mu     sync.Mutex
	list   []unsavedEnd        // oldest first
	recs   map[int64]store.Job // the finished records, by job ID
	reason string              // the store's last error, while list is not empty
	wake   chan struct{}
}

// unsavedEnd is an end to record: FinishJob(id, from, fin).
type unsavedEnd struct {
	id   int64
	from string
	fin  store.Finish
}

func newUnsavedEnds() *unsavedEnds {
	return &unsavedEnds{recs: map[int64]store.Job{}, wake: make(chan struct{}, 1)}
}

// record returns the end of a job the store has not taken yet.
func (u *unsavedEnds) record(id int64) (store.Job, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	rec, ok := u.recs[id]
	return rec, ok
}

// unavailable says why the daemon cannot take jobs now ("" if it can).
func (u *unsavedEnds) unavailable() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.list) == 0 {
		return ""
	}
	return fmt.Sprintf("the store cannot record jobs (%d job ends wait to be recorded): %s", len(u.list), u.reason)
}

// waiting reports whether ends wait: a new end then goes after them.
func (u *unsavedEnds) waiting() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.list) > 0
}

func (u *unsavedEnds) add(rec store.Job, e unsavedEnd, err error) {
	u.mu.Lock()
	u.list = append(u.list, e)
	u.recs[e.id] = rec
	if err != nil {
		u.reason = err.Error()
	}
	u.mu.Unlock()
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

func (u *unsavedEnds) first() (unsavedEnd, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.list) == 0 {
		return unsavedEnd{}, false
	}
	return u.list[0], true
}

// done drops the first end (recorded, or beyond recording).
func (u *unsavedEnds) done(id int64) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.list = slices.DeleteFunc(u.list, func(e unsavedEnd) bool { return e.id == id })
	delete(u.recs, id)
	if len(u.list) == 0 {
		u.reason = ""
	}
	return len(u.list)
}

func (u *unsavedEnds) failed(err error) {
	u.mu.Lock()
	u.reason = err.Error()
	u.mu.Unlock()
}

// recordEnd records how a job ended: rec is its final record. If the
// store refuses, or ends already wait, the end waits in memory (see
// unsavedEnds); it never fails.
func (d *Daemon) recordEnd(rec store.Job, from string, fin store.Finish) {
	d.observeEnd(rec)
	e := unsavedEnd{id: rec.ID, from: from, fin: fin}
	if !d.ends.waiting() {
		err := d.finishInStore(e)
		if err == nil {
			return
		}
		if !retryable(err) {
			d.log.Error("record the end of a job", "job", rec.ID, "err", err)
			return
		}
		d.log.Error("record the end of a job: the store refused; keeping it until the store takes it", "job", rec.ID, "outcome", fin.Outcome, "err", err)
		d.ends.add(rec, e, err)
		return
	}
	d.log.Warn("end of a job waits for the store", "job", rec.ID, "outcome", fin.Outcome)
	d.ends.add(rec, e, nil)
}

// finishInStore writes an end. A write whose answer was lost (a timeout
// after the store had committed it) makes the next try find the job
// already finished: FinishJob's guarded UPDATE refuses it, and if the
// store holds this very end, it was recorded once, which is success.
func (d *Daemon) finishInStore(e unsavedEnd) error {
	sctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	err := d.store.FinishJob(sctx, e.id, e.from, e.fin)
	if errors.Is(err, store.ErrConflict) {
		if rec, rerr := d.store.Job(sctx, e.id); rerr == nil && rec.State == store.Finished &&
			rec.Outcome == e.fin.Outcome && rec.Reason == e.fin.Reason && rec.Finished.Equal(e.fin.At) {
			return nil
		}
	}
	return err
}

// retryable reports whether a store error may go away (the store could
// not write) rather than say the end cannot be recorded at all (the job
// is gone or in another state).
func retryable(err error) bool {
	return !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound)
}

// saveEnds records the ends the store refused, oldest first, until ctx
// ends; then it tries each once more.
func (d *Daemon) saveEnds(ctx context.Context) {
	wait := endRetryFirst
	for {
		e, ok := d.ends.first()
		if !ok {
			select {
			case <-d.ends.wake:
				continue
			case <-ctx.Done():
				return
			}
		}
		err := d.finishInStore(e)
		switch {
		case err == nil:
			left := d.ends.done(e.id)
			d.log.Info("recorded the end of a job the store had refused", "job", e.id, "outcome", e.fin.Outcome, "waiting", left)
			wait = endRetryFirst
			if left == 0 {
				d.mu.Lock()
				d.scheduleLocked()
				d.mu.Unlock()
			}
			continue
		case !retryable(err):
			d.ends.done(e.id)
			d.log.Error("record the end of a job", "job", e.id, "err", err)
			continue
		}
		d.ends.failed(err)
		if ctx.Err() != nil {
			d.log.Error("the store did not take the ends of jobs before the daemon stopped; "+
				"the next start ends them from their results.json", "err", err, "ends", d.ends.unavailable())
			return
		}
		d.log.Warn("the store still refuses the end of a job", "job", e.id, "retry in", wait, "err", err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
		wait = min(2*wait, endRetryMax)
	}
}

// checkWritable makes sure the daemon can record what happens: it writes
// to the store and to the state directory, and tightens the modes of an
// existing state directory (logging what it changed). The daemon does
// not start if either write fails.
func (d *Daemon) checkWritable(ctx context.Context) error {
	dir := d.cfg.Lab.StateDir
	if err := os.MkdirAll(d.jobsDir, statedir.DirMode); err != nil {
		return fmt.Errorf("daemon: state directory %s cannot be written: %w", dir, err)
	}
	changes, err := statedir.Tighten(dir)
	for _, c := range changes {
		d.log.Warn("state directory: others could read this; tightened", "path", c.Path, "from", c.From, "to", c.To)
	}
	if err != nil {
		return fmt.Errorf("daemon: state directory %s: tighten its modes: %w", dir, err)
	}
	if err := probeDir(d.jobsDir); err != nil {
		return fmt.Errorf("daemon: state directory %s cannot be written: %w", dir, err)
	}
	sctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	if err := d.store.CheckWrite(sctx); err != nil {
		return fmt.Errorf("daemon: %w (is the database file or its directory read-only, or the disk full?)", err)
	}
	return nil
}

// probeDir writes, syncs and removes a small file in dir.
func probeDir(dir string) error {
	f, err := os.CreateTemp(dir, ".write-probe-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(make([]byte, 4096))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// unavailable is the error of a submit while the store cannot record it.
func unavailable(reason string) error {
	return fmt.Errorf("%w: %s", labctl.ErrUnavailable, reason)
}
