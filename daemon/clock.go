package daemon

import (
	"context"
	"fmt"
	"time"
)

// What the clock starts: periodic health checks, the end of jobs that
// waited too long in the queue, the end of reservations. One goroutine
// (keepTime) does all three, on one timer set to the earliest deadline;
// whatever may move a deadline (a job queued, a device changing state, a
// reservation) wakes it to look again. Nothing polls.

// wakeClock has keepTime look at the deadlines again.
func (d *Daemon) wakeClock() {
	select {
	case d.clock <- struct{}{}:
	default:
	}
}

// keepTime runs what is due, then sleeps until the next deadline or until
// something changes, until ctx ends.
func (d *Daemon) keepTime(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := d.now()
		d.mu.Lock()
		next := d.periodicChecksLocked(now)
		expired, queueNext := d.queueTimeoutsLocked(now)
		ended, resNext := d.reservationsEndLocked(now)
		if len(ended) > 0 {
			d.scheduleLocked()
		}
		d.mu.Unlock()
		for _, j := range expired {
			d.endWaiting(j, now)
		}
		for _, r := range ended {
			d.forgetReservation(r.device, r.res)
		}
		for _, t := range []time.Time{queueNext, resNext} {
			if !t.IsZero() && (next.IsZero() || t.Before(next)) {
				next = t
			}
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(next.Sub(d.now()), time.Millisecond)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-d.clock:
		case <-timer.C:
		}
	}
}

// errQueueTimeout ends a job that waited longer than its queue_timeout.
type errQueueTimeout struct{ waited time.Duration }

func (e errQueueTimeout) Error() string {
	return fmt.Sprintf("waited %s in the queue: no matching device became free", roundDuration(e.waited))
}

// queueTimeoutsLocked takes the jobs whose queue deadline has passed off
// the queue, and returns them and the next deadline.
func (d *Daemon) queueTimeoutsLocked(now time.Time) (expired []*job, next time.Time) {
	if !d.serving || d.stopping {
		return nil, time.Time{}
	}
	for _, j := range d.queue {
		if j.deadline.IsZero() {
			continue
		}
		if !j.deadline.After(now) {
			expired = append(expired, j)
			continue
		}
		if next.IsZero() || j.deadline.Before(next) {
			next = j.deadline
		}
	}
	for _, j := range expired {
		d.dequeueLocked(j)
		delete(d.jobs, j.rec.ID)
	}
	return expired, next
}

// endWaiting ends a job that waited too long: canceled, with the reason.
func (d *Daemon) endWaiting(j *job, now time.Time) {
	cause := errQueueTimeout{waited: now.Sub(j.rec.Submitted)}
	j.cancel(cause)
	d.finishQueued(j, cause) // the store takes the end now or, if it cannot, later
	close(j.done)
	d.log.Info("job canceled", "job", j.rec.ID, "reason", cause.Error())
}
