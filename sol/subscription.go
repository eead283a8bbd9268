package sol

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Subscription is one reader's view of a Session: every record (output,
// input, events) from the moment it subscribed, in order, through a bounded
// buffer. A subscriber that does not keep up never slows the session: records
// that do not fit are dropped and the subscriber is then told, by an Event
// record with Missed set, how many bytes it lost at that point.
type Subscription struct {
	s     *Session
	limit int

	mu     sync.Mutex
	queue  []Record
	bytes  int   // data bytes in queue
	gap    int64 // bytes dropped since the last queued record
	notify chan struct{}
	end    error // set when the session ends or the subscription is closed
}

const maxQueuedEvents = 1000

// push adds a record, or counts it as missed. Called with the session's
// fan-out lock held, never blocks.
func (sub *Subscription) push(r Record) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if sub.end != nil {
		return
	}
	if r.Dir == Event {
		// Events are rare and say what happened to the session: keep them
		// even over the limit, up to a count.
		if len(sub.queue) >= maxQueuedEvents {
			return
		}
	} else if sub.bytes+len(r.Data) > sub.limit {
		sub.gap += int64(len(r.Data))
		return
	}
	if sub.gap > 0 {
		sub.queue = append(sub.queue, missedRecord(r.Time, sub.gap))
		sub.gap = 0
	}
	sub.queue = append(sub.queue, r)
	if r.Dir != Event {
		sub.bytes += len(r.Data)
	}
	select {
	case sub.notify <- struct{}{}:
	default:
	}
}

func missedRecord(t time.Time, n int64) Record {
	return Record{Time: t, Dir: Event, Data: fmt.Appendf(nil, "missed %d bytes (reader too slow)", n), Missed: n}
}

// finish ends the subscription after what is queued.
func (sub *Subscription) finish(err error) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if sub.end == nil {
		sub.end = err
	}
	select {
	case sub.notify <- struct{}{}:
	default:
	}
}

// Next returns the next record, waiting for one until ctx ends. After the
// session is closed or has given up, Next returns what is queued, then the
// session's error (ErrClosed after Close).
func (sub *Subscription) Next(ctx context.Context) (Record, error) {
	for {
		sub.mu.Lock()
		if len(sub.queue) > 0 {
			r := sub.queue[0]
			sub.queue[0] = Record{}
			sub.queue = sub.queue[1:]
			if r.Dir != Event {
				sub.bytes -= len(r.Data)
			}
			if len(sub.queue) == 0 {
				sub.queue = nil // let the backing array go
			}
			sub.mu.Unlock()
			return r, nil
		}
		if sub.gap > 0 {
			r := missedRecord(time.Now(), sub.gap)
			sub.gap = 0
			sub.mu.Unlock()
			return r, nil
		}
		if sub.end != nil {
			err := sub.end
			sub.mu.Unlock()
			return Record{}, err
		}
		sub.mu.Unlock()
		select {
		case <-sub.notify:
		case <-ctx.Done():
			return Record{}, ctx.Err()
		}
	}
}

// Close stops the subscription; Next then returns ErrClosed.
func (sub *Subscription) Close() {
	sub.s.unsubscribe(sub)
	sub.mu.Lock()
	sub.queue, sub.bytes, sub.gap = nil, 0, 0
	sub.mu.Unlock()
	sub.finish(ErrClosed)
}
