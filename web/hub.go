package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/daemon"
	"github.com/labctl/labctl/sol"
)

// Event is a change in the lab, as the pages hear it over the live
// stream (GET /api/v1/stream, server-sent events). It says what changed
// and, for a change of a device or a job, the device or job as it is
// now: the lab page updates that device's row, the jobs page that job's,
// without asking the API again.
type Event struct {
	Kind    string `json:"kind"` // job.queued, job.start, job.phase, job.end, device.state, device.health, console
	Job     int64  `json:"job,omitempty"`
	Name    string `json:"name,omitempty"` // job.queued, job.start: the job's name
	Device  string `json:"device,omitempty"`
	State   string `json:"state,omitempty"`   // device.state: the new state; job.phase: the phase; console: what happened
	Outcome string `json:"outcome,omitempty"` // job.end
	// At is when it happened (job.start: the job's start; job.phase: when
	// the job entered the phase).
	At time.Time `json:"at"`
	// View is the device as GET /api/v1/devices/NAME shows it, without
	// its health history, when the stream sent the event (every kind
	// but console).
	View *labctl.Device `json:"view,omitempty"`
	// JobView is the job as GET /api/v1/jobs lists it (without its
	// results) when the stream sent the event (job.* kinds).
	JobView *labctl.Job `json:"job_view,omitempty"`
}

// Lab looks devices and jobs up for the live streams' events: the
// daemon (labctl.Service).
type Lab interface {
	Device(ctx context.Context, name string) (labctl.Device, error)
	Job(ctx context.Context, id int64) (labctl.Job, error)
}

// Hub fans the daemon's events out to the browsers' live streams. It is a
// daemon.Observer: publishing never waits for a browser. Each stream has
// a bounded queue; a tab that does not keep up loses events and is told
// how many (a "missed" event), and then reloads what it shows.
type Hub struct {
	buffer int // events per stream
	max    int // streams at once
	lab    atomic.Pointer[Lab]

	mu      sync.Mutex
	streams map[*stream]struct{}
}

type stream struct {
	ch chan *published
	mu sync.Mutex
	// missed counts the events dropped since the stream last said so.
	missed int64
}

// NewHub makes a hub whose streams queue buffer events each, at most max
// streams at once.
func NewHub(buffer, max int) *Hub {
	return &Hub{buffer: buffer, max: max, streams: map[*stream]struct{}{}}
}

var errTooManyStreams = errors.New("too many live streams")

func (h *Hub) subscribe() (*stream, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.streams) >= h.max {
		return nil, fmt.Errorf("%w: %w (%d): close some tabs", labctl.ErrUnavailable, errTooManyStreams, h.max)
	}
	s := &stream{ch: make(chan *published, h.buffer)}
	h.streams[s] = struct{}{}
	return s, nil
}

func (h *Hub) unsubscribe(s *stream) {
	h.mu.Lock()
	delete(h.streams, s)
	h.mu.Unlock()
}

// SetLab gives the hub the daemon its events come from: the streams
// then send, with an event about a device or a job, its view.
func (h *Hub) SetLab(l Lab) { h.lab.Store(&l) }

// published is an event on its way to the streams. The first stream to
// send it looks its views up, for all: one lookup per event, however
// many tabs are open.
type published struct {
	e    Event
	once sync.Once
}

// viewLookup bounds the lookup of an event's views.
const viewLookup = 10 * time.Second

// withViews is the event with the views of its device and job, each
// nil if there is none.
func (h *Hub) withViews(p *published) Event {
	p.once.Do(func() {
		l := h.lab.Load()
		if l == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), viewLookup)
		defer cancel()
		if p.e.Device != "" && p.e.Kind != "console" {
			if v, err := (*l).Device(ctx, p.e.Device); err == nil {
				v.HealthHistory = nil
				p.e.View = &v
			}
		}
		if p.e.Job != 0 {
			if v, err := (*l).Job(ctx, p.e.Job); err == nil {
				v.Result = nil
				p.e.JobView = &v
			}
		}
	})
	return p.e
}

// Streams is the number of live streams.
func (h *Hub) Streams() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.streams)
}

// publish queues e on every stream, dropping it (counted) where the
// queue is full.
func (h *Hub) publish(e Event) {
	p := &published{e: e}
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.streams {
		select {
		case s.ch <- p:
		default:
			s.mu.Lock()
			s.missed++
			s.mu.Unlock()
		}
	}
}

// takeMissed returns and clears the stream's count of dropped events.
func (s *stream) takeMissed() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.missed
	s.missed = 0
	return n
}

// JobQueued implements daemon.QueueObserver.
func (h *Hub) JobQueued(j daemon.JobQueued) {
	h.publish(Event{Kind: "job.queued", Job: j.ID, Name: j.Name, At: j.Submitted})
}

// JobStarted implements daemon.Observer.
func (h *Hub) JobStarted(j daemon.JobStart) {
	h.publish(Event{Kind: "job.start", Job: j.ID, Name: j.Name, Device: j.Device, At: j.Started})
}

// JobPhase implements daemon.PhaseObserver.
func (h *Hub) JobPhase(p daemon.JobPhase) {
	h.publish(Event{Kind: "job.phase", Job: p.ID, Device: p.Device, State: p.Phase, At: p.At})
}

// JobEnded implements daemon.Observer.
func (h *Hub) JobEnded(j daemon.JobEnd) {
	h.publish(Event{Kind: "job.end", Job: j.ID, Device: j.Device, Outcome: j.Outcome, At: j.Finished})
}

// DeviceChanged implements daemon.Observer.
func (h *Hub) DeviceChanged(c daemon.DeviceChange) {
	h.publish(Event{Kind: "device.state", Device: c.Device, State: c.To, At: c.At})
}

// HealthChecked implements daemon.Observer.
func (h *Hub) HealthChecked(c daemon.HealthCheck) {
	h.publish(Event{Kind: "device.health", Device: c.Device, At: time.Now()})
}

// ConsoleChanged implements daemon.Observer.
func (h *Hub) ConsoleChanged(device string, c sol.SessionChange) {
	h.publish(Event{Kind: "console", Device: device, State: fmt.Sprint(c), At: time.Now()})
}

// streamHeartbeat is how often a quiet stream sends a comment, so that
// proxies keep it and a gone tab is noticed.
const streamHeartbeat = 15 * time.Second

// streamWriteTimeout drops a tab that takes no bytes for this long.
const streamWriteTimeout = time.Minute

// ServeHTTP serves one live stream as server-sent events: "hello" first,
// then one "change" per Event (its device's and job's views looked up as
// it is first sent, on a stream's goroutine: never under the daemon's
// lock), "missed" (data {"missed": N}) when events were dropped for this
// tab, and a comment when quiet.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s, err := h.subscribe()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer h.unsubscribe(s)
	h.serve(w, r, s)
}

func (h *Hub) serve(w http.ResponseWriter, r *http.Request, s *stream) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	send := func(event string, v any) error {
		rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
			return err
		}
		return rc.Flush()
	}
	if send("hello", map[string]any{"buffer": h.buffer}) != nil {
		return
	}
	tick := time.NewTicker(streamHeartbeat)
	defer tick.Stop()
	var err error
	for {
		select {
		case <-r.Context().Done():
			return
		case p := <-s.ch:
			if n := s.takeMissed(); n > 0 {
				if send("missed", map[string]int64{"missed": n}) != nil {
					return
				}
			}
			if send("change", h.withViews(p)) != nil {
				return
			}
		case <-tick.C:
			if n := s.takeMissed(); n > 0 {
				err = send("missed", map[string]int64{"missed": n})
			} else {
				rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
				if _, err = fmt.Fprint(w, ": quiet\n\n"); err == nil {
					err = rc.Flush()
				}
			}
			if err != nil {
				return
			}
		}
	}
}

var (
	_ daemon.PhaseObserver = (*Hub)(nil)
	_ daemon.QueueObserver = (*Hub)(nil)
)
