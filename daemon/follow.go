package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/labctl/labctl"
)

// How a follower learns about new log lines: the dispatcher's events wake
// it at once, console output shows up within followTick (it reaches the
// file through the job log's own subscription, which tells nobody).
const (
	followTick      = 250 * time.Millisecond
	followHeartbeat = 15 * time.Second
	followChunk     = 1 << 20
)

// Follow streams a job's log, progress and end (labctl.Service).
func (d *Daemon) Follow(ctx context.Context, id int64, opts labctl.FollowOptions, send func(labctl.Event) error) error {
	if d.host != nil {
		if elsewhere, err := d.followElsewhere(ctx, id, opts, send); elsewhere {
			return err
		}
	}
	path := filepath.Join(d.jobDir(id), "job.log")
	offset := opts.Offset
	var last labctl.JobProgress
	sentProgress := false
	// Every phase the job enters reaches the follower, also one that began
	// and ended between two looks (a quick finalize).
	var seen *job
	phasesSent := 0
	sendPhases := func(j *job) error {
		for _, ph := range j.phasesSince(phasesSent) {
			phasesSent++
			if ph == last.Phase && sentProgress {
				continue
			}
			p := labctl.JobProgress{Phase: ph}
			if err := send(labctl.Event{Progress: &p}); err != nil {
				return err
			}
			last, sentProgress = p, true
		}
		return nil
	}
	tick := time.NewTicker(followTick)
	defer tick.Stop()
	heartbeat := time.NewTicker(followHeartbeat)
	defer heartbeat.Stop()
	beat := false
	for {
		d.mu.Lock()
		j := d.jobs[id]
		d.mu.Unlock()
		if j == nil {
			if seen != nil {
				if err := sendPhases(seen); err != nil {
					return err
				}
			}
			return d.followEnd(ctx, id, path, offset, opts, send)
		}
		seen = j
		p, news := j.progress()
		if !opts.NoLog {
			var err error
			if offset, err = sendLog(path, offset, false, send); err != nil {
				return err
			}
		}
		if err := sendPhases(j); err != nil {
			return err
		}
		if p.Phase != "" && (!sentProgress || beat || !sameProgress(p, last)) {
			if err := send(labctl.Event{Progress: &p}); err != nil {
				return err
			}
			last, sentProgress = p, true
		} else if beat {
			// Keep the connection visibly alive while the job waits.
			if err := send(labctl.Event{Progress: &labctl.JobProgress{Phase: "queued"}}); err != nil {
				return err
			}
		}
		beat = false
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-j.done:
		case <-news:
		case <-tick.C:
		case <-heartbeat.C:
			beat = true
		}
	}
}

// followEnd sends the rest of the log and the ended job.
func (d *Daemon) followEnd(ctx context.Context, id int64, path string, offset int64, opts labctl.FollowOptions, send func(labctl.Event) error) error {
	v, err := d.endView(ctx, id)
	if err != nil {
		return err
	}
	if v.State != labctl.JobFinished {
		// Between the store and the queue (a submit in flight): look again.
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(50 * time.Millisecond):
		}
		return d.Follow(ctx, id, labctl.FollowOptions{Offset: offset, NoLog: opts.NoLog}, send)
	}
	if !opts.NoLog {
		if _, err := sendLog(path, offset, true, send); err != nil {
			return err
		}
	}
	return send(labctl.Event{End: &v})
}

// endView is the job as Job gives it, read once for all the followers
// asking at the same time (a job's end wakes them together).
func (d *Daemon) endView(ctx context.Context, id int64) (labctl.Job, error) {
	ch := d.endViews.DoChan(strconv.FormatInt(id, 10), func() (any, error) {
		// Not the first asker's context: the others share the answer.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
		defer cancel()
		return d.Job(sctx, id)
	})
	select {
	case <-ctx.Done():
		return labctl.Job{}, context.Cause(ctx)
	case r := <-ch:
		if r.Err != nil {
			return labctl.Job{}, r.Err
		}
		return r.Val.(labctl.Job), nil
	}
}

func sameProgress(a, b labctl.JobProgress) bool {
	if a.Phase != b.Phase || (a.Transfer == nil) != (b.Transfer == nil) {
		return false
	}
	return a.Transfer == nil || *a.Transfer == *b.Transfer
}

// sendLog sends the log from offset on, in whole lines (and, if final, the
// last partial one), and returns the new offset.
func sendLog(path string, offset int64, final bool, send func(labctl.Event) error) (int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return offset, nil
	}
	if err != nil {
		return offset, fmt.Errorf("job log: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return offset, fmt.Errorf("job log: %w", err)
	}
	if fi.Size() <= offset {
		return offset, nil
	}
	// Only as much memory as there is new log, up to a chunk.
	buf := make([]byte, min(fi.Size()-offset, followChunk))
	for {
		n, err := f.ReadAt(buf, offset)
		if err != nil && !errors.Is(err, io.EOF) {
			return offset, fmt.Errorf("job log: %w", err)
		}
		chunk := buf[:n]
		if n == len(buf) || !final {
			if i := bytes.LastIndexByte(chunk, '\n'); i >= 0 {
				chunk = chunk[:i+1]
			} else if n < len(buf) {
				chunk = nil // a partial line: wait for its end
			}
		}
		if len(chunk) == 0 {
			return offset, nil
		}
		if err := send(labctl.Event{Log: string(chunk), Offset: offset}); err != nil {
			return offset, err
		}
		offset += int64(len(chunk))
		if n < len(buf) {
			return offset, nil
		}
	}
}
