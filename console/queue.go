package console

import (
	"bytes"
	"context"
	"sync"
)

// boundedQueue is a queue that never blocks its producer: items that would
// take it past limit bytes are dropped and counted, and the consumer then
// gets, in their place, an item made by missed that says how many bytes it
// lost there. Items of size 0 (notices) are kept regardless, up to
// maxUnsized of them. It is what keeps a stuck viewer (or a stalled disk)
// from slowing a node's console.
type boundedQueue[T any] struct {
	limit  int
	size   func(T) int
	missed func(n int64) T

	mu     sync.Mutex
	items  []T
	bytes  int   // sized bytes in items
	gap    int64 // dropped since the last queued item
	lost   int64 // dropped in all
	notify chan struct{}
	end    error // set by finish: Next returns it once the queue is empty
}

const maxUnsized = 1000

func newBoundedQueue[T any](limit int, size func(T) int, missed func(int64) T) *boundedQueue[T] {
	return &boundedQueue[T]{limit: limit, size: size, missed: missed, notify: make(chan struct{}, 1)}
}

// push adds x, or drops it if it does not fit. It reports whether x was
// queued.
func (q *boundedQueue[T]) push(x T) bool {
	return q.add(x, false)
}

// pushAlways adds x even over the limit (a replay on attach).
func (q *boundedQueue[T]) pushAlways(x T) {
	q.add(x, true)
}

func (q *boundedQueue[T]) add(x T, always bool) bool {
	n := q.size(x)
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.end != nil {
		return false
	}
	switch {
	case always:
	case n == 0:
		if len(q.items) >= maxUnsized {
			return false
		}
	case q.bytes+n > q.limit:
		q.gap += int64(n)
		q.lost += int64(n)
		return false
	}
	if q.gap > 0 {
		q.items = append(q.items, q.missed(q.gap))
		q.gap = 0
	}
	q.items = append(q.items, x)
	q.bytes += n
	q.signal()
	return true
}

func (q *boundedQueue[T]) signal() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// next returns the next item, waiting until ctx ends. With merge set, the
// queued items are offered to merge, which returns the item to deliver
// and how many of them (at least one) it stands for: output chunks become
// one. Once finished and empty it returns the finish error.
func (q *boundedQueue[T]) next(ctx context.Context, merge func(items []T) (T, int)) (T, error) {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			x, n := q.items[0], 1
			if merge != nil {
				x, n = merge(q.items)
			}
			for range n {
				q.pop()
			}
			if len(q.items) == 0 {
				q.items = nil // let the backing array go
			}
			q.mu.Unlock()
			return x, nil
		}
		if q.gap > 0 {
			x := q.missed(q.gap)
			q.gap = 0
			q.mu.Unlock()
			return x, nil
		}
		if q.end != nil {
			err := q.end
			q.mu.Unlock()
			var zero T
			return zero, err
		}
		q.mu.Unlock()
		select {
		case <-q.notify:
		case <-ctx.Done():
			var zero T
			return zero, ctx.Err()
		}
	}
}

// pop removes the first item; q.mu is held and the queue is not empty.
func (q *boundedQueue[T]) pop() T {
	var zero T
	x := q.items[0]
	q.items[0] = zero
	q.items = q.items[1:]
	q.bytes -= q.size(x)
	return x
}

// finish ends the queue: next returns what is queued (nothing, with
// drop), then err.
func (q *boundedQueue[T]) finish(err error, drop bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.end == nil {
		q.end = err
	}
	if drop {
		q.items, q.bytes, q.gap = nil, 0, 0
	}
	q.signal()
}

// dropped is how many bytes the queue has dropped so far.
func (q *boundedQueue[T]) dropped() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.lost
}

// replayRing keeps a node's recent console output for replay on attach:
// the last maxLines lines (and the line in progress, such as a prompt),
// at most maxBytes in all.
type replayRing struct {
	maxLines, maxBytes int
	lines              [][]byte // complete lines, oldest first, each ending in \n
	partial            []byte
	bytes              int
}

// add appends console output.
func (r *replayRing) add(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			r.partial = append(r.partial, p...)
			r.bytes += len(p)
			break
		}
		line := append(r.partial, p[:i+1]...)
		r.bytes += i + 1
		r.partial = nil
		r.lines = append(r.lines, line)
		p = p[i+1:]
	}
	for len(r.lines) > 0 && (len(r.lines) > r.maxLines || r.bytes > r.maxBytes) {
		r.bytes -= len(r.lines[0])
		r.lines[0] = nil
		r.lines = r.lines[1:]
	}
	if r.bytes > r.maxBytes && len(r.partial) > r.maxBytes {
		// One endless line: keep its end.
		cut := len(r.partial) - r.maxBytes
		r.partial = append([]byte(nil), r.partial[cut:]...)
		r.bytes -= cut
	}
}

// last returns the last n lines (and the line in progress) as one copy.
func (r *replayRing) last(n int) []byte {
	if n <= 0 {
		return nil
	}
	lines := r.lines
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	var out []byte
	for _, l := range lines {
		out = append(out, l...)
	}
	return append(out, r.partial...)
}
