package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/labctl/labctl/store"
)

// Retention: with the lab's [retention] set, the daemon removes finished
// jobs (their database rows, then their directories) that finished longer
// ago than max_age or lie beyond the newest max_jobs, oldest first, at
// start-up and then every Config.RetentionEvery. Queued and running jobs
// are never removed, nor a job whose end the store has not taken yet (it
// is running there). At start-up it also removes the directories in jobs/
// that belong to no job in the database (left by a removal cut short, or
// by an earlier database).

// retainBatch bounds the jobs removed in one store transaction, so that
// retention never holds the store's writer for long.
const retainBatch = 500

// retainEvery runs retention at once and then periodically until ctx ends.
func (d *Daemon) retainEvery(ctx context.Context) {
	if !d.cfg.Lab.Retention.On() {
		return
	}
	d.retain(ctx)
	d.removeOrphanDirs(ctx)
	t := time.NewTicker(d.cfg.RetentionEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.retain(ctx)
		}
	}
}

// retain removes the finished jobs the lab's retention no longer keeps.
func (d *Daemon) retain(ctx context.Context) {
	r := d.cfg.Lab.Retention
	var before time.Time
	if r.MaxAge > 0 {
		before = d.now().Add(-r.MaxAge)
	}
	removed := 0
	for ctx.Err() == nil {
		// Not cut short by ctx: the rows a batch removes are always
		// followed by their directories.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
		ids, err := d.store.DeleteFinishedJobs(sctx, before, r.MaxJobs, retainBatch)
		cancel()
		if err != nil {
			d.log.Error("retention: remove finished jobs", "err", err)
			break
		}
		for _, id := range ids {
			if err := os.RemoveAll(d.jobDir(id)); err != nil {
				d.log.Warn("retention: remove job directory", "job", id, "err", err)
			}
		}
		removed += len(ids)
		if len(ids) < retainBatch {
			break
		}
	}
	if removed > 0 {
		d.log.Info("retention: removed finished jobs", "jobs", removed, "max_age", r.MaxAge, "max_jobs", r.MaxJobs)
	}
}

// removeOrphanDirs removes the job directories of jobs the database does
// not have.
func (d *Daemon) removeOrphanDirs(ctx context.Context) {
	entries, err := os.ReadDir(d.jobsDir)
	if err != nil {
		d.log.Warn("retention: list job directories", "err", err)
		return
	}
	removed := 0
	for _, e := range entries {
		if ctx.Err() != nil {
			return
		}
		name := e.Name()
		if !e.IsDir() {
			continue
		}
		base, _, aside := strings.Cut(name, ".old-") // moved aside: an earlier database's
		id, err := strconv.ParseInt(base, 10, 64)
		if err != nil {
			continue
		}
		if !aside {
			d.mu.Lock()
			live := d.jobs[id] != nil
			d.mu.Unlock()
			if live {
				continue
			}
			if _, err := d.store.Job(ctx, id); !errors.Is(err, store.ErrNotFound) {
				continue
			}
		}
		if err := os.RemoveAll(filepath.Join(d.jobsDir, name)); err != nil {
			d.log.Warn("retention: remove job directory", "dir", name, "err", err)
			continue
		}
		removed++
	}
	if removed > 0 {
		d.log.Info("retention: removed job directories of jobs the database does not have", "dirs", removed)
	}
}
