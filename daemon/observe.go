package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/results"
	"github.com/labctl/labctl/sol"
	"github.com/labctl/labctl/store"
)

// Observer hears what happens in the lab as it happens: labctl serve's
// metrics and webhooks (Config.Observers). Its methods are called on the
// daemon's workers, some with the daemon's lock held: they must return at
// once (count, or queue the work and drop it when the queue is full) and
// must not call the daemon.
type Observer interface {
	// JobStarted: a job was taken off the queue and starts on a device.
	JobStarted(JobStart)
	// JobEnded: a job ended, whether it ran or not (canceled in the
	// queue, timed out there).
	JobEnded(JobEnd)
	// DeviceChanged: a device's state changed (not at start-up).
	DeviceChanged(DeviceChange)
	// HealthChecked: a device's health check ended.
	HealthChecked(HealthCheck)
	// ConsoleChanged: a device's console session dropped, came back, or
	// was given up on.
	ConsoleChanged(device string, change sol.SessionChange)
}

// JobStart is a job that starts on a device.
type JobStart struct {
	ID         int64
	Name       string
	Device     string
	DeviceType string
	Started    time.Time
	// Waited is its time in the queue: from submit to start.
	Waited time.Duration
}

// PhaseObserver is an Observer that also hears a running job enter each
// phase of its pipeline (the web UI's lab page shows it). Like the
// Observer's, its method must return at once.
type PhaseObserver interface {
	JobPhase(JobPhase)
}

// JobPhase is a running job entering a phase.
type JobPhase struct {
	ID     int64
	Device string
	Phase  string
	At     time.Time // when it entered the phase
}

// QueueObserver is an Observer that also hears a job join the queue:
// submitted, the next attempt of a job that ended incomplete, or one
// submitted at another host (the web UI's jobs page shows it). Its method
// is called with the daemon's lock held and must return at once.
type QueueObserver interface {
	JobQueued(JobQueued)
}

// JobQueued is a job that joined the queue.
type JobQueued struct {
	ID         int64
	Name       string
	Submitter  string
	Device     string // asked for
	DeviceType string
	Submitted  time.Time
}

// JobEnd is a job that ended.
type JobEnd struct {
	ID        int64
	Name      string
	Submitter string
	// Device is the device it ran on ("" if it never started); DeviceType
	// that device's type, or the one the job asked for.
	Device     string
	DeviceType string
	Outcome    string
	Reason     string
	Submitted  time.Time
	Started    time.Time // zero if it never started
	Finished   time.Time
	// Phases are its pipeline's phases and their durations (none if it
	// never ran).
	Phases []results.Phase
	// Image is the last count of image bytes served to the node while it
	// deployed: bytes and the time they took; nil without a deploy.
	Image *labctl.Transfer
	// Notify are the job file's notify URLs.
	Notify []string
}

// DeviceChange is a device's change of state.
type DeviceChange struct {
	Device     string
	DeviceType string
	From, To   string // labctl.DeviceIdle, ...
	Reason     string
	At         time.Time
}

// HealthCheck is a device's ended health check.
type HealthCheck struct {
	Device     string
	DeviceType string
	Health     labctl.Health
}

// Snapshot is what a metrics scrape reads of the daemon's state.
type Snapshot struct {
	// Queued is how many jobs wait in the queue; OldestQueued is when the
	// one waiting longest was submitted (zero when none waits).
	Queued       int
	OldestQueued time.Time
	Devices      []DeviceSnapshot // sorted by name
}

// DeviceSnapshot is one device in a Snapshot.
type DeviceSnapshot struct {
	Name, DeviceType, State string
	// Healthy: its last health check passed.
	Healthy bool
}

// Snapshot returns the queue and the devices' states as they are now.
func (d *Daemon) Snapshot() Snapshot {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := Snapshot{Queued: len(d.queue), Devices: make([]DeviceSnapshot, 0, len(d.names))}
	for _, j := range d.queue {
		if s.OldestQueued.IsZero() || j.rec.Submitted.Before(s.OldestQueued) {
			s.OldestQueued = j.rec.Submitted
		}
	}
	for _, name := range d.names {
		dev := d.devices[name]
		s.Devices = append(s.Devices, DeviceSnapshot{Name: name, DeviceType: dev.cfg.DeviceType, State: dev.state, Healthy: dev.healthy})
	}
	return s
}

// observe calls each observer.
func (d *Daemon) observe(f func(Observer)) {
	for _, o := range d.cfg.Observers {
		f(o)
	}
}

// observeStart tells the observers that a job starts on dev.
func (d *Daemon) observeStart(j *job, dev *device, started time.Time) {
	if len(d.cfg.Observers) == 0 {
		return
	}
	s := JobStart{ID: j.rec.ID, Name: j.rec.Name, Device: dev.name, DeviceType: dev.cfg.DeviceType, Started: started, Waited: started.Sub(j.rec.Submitted)}
	d.observe(func(o Observer) { o.JobStarted(s) })
}

// observeQueuedLocked tells the QueueObservers that a job joined the
// queue (here, or at the host whose devices take it).
func (d *Daemon) observeQueuedLocked(rec store.Job) {
	e := JobQueued{ID: rec.ID, Name: rec.Name, Submitter: rec.Submitter, Device: rec.Device, DeviceType: rec.DeviceType, Submitted: rec.Submitted}
	for _, o := range d.cfg.Observers {
		if qo, ok := o.(QueueObserver); ok {
			qo.JobQueued(e)
		}
	}
}

// observedProgress is a running job's dispatcher.Progress: the job's
// own, and each phase it enters told to the PhaseObservers.
type observedProgress struct {
	*job
	d      *Daemon
	device string
}

func (p observedProgress) Phase(name string) {
	p.job.Phase(name)
	e := JobPhase{ID: p.rec.ID, Device: p.device, Phase: name, At: p.phaseStart()}
	for _, o := range p.d.cfg.Observers {
		if po, ok := o.(PhaseObserver); ok {
			po.JobPhase(e)
		}
	}
}

// observeEnd tells the observers how a job ended; rec is its final
// record.
func (d *Daemon) observeEnd(rec store.Job) {
	if len(d.cfg.Observers) == 0 {
		return
	}
	e := JobEnd{ID: rec.ID, Name: rec.Name, Submitter: rec.Submitter, Device: rec.RunDevice, DeviceType: rec.DeviceType,
		Outcome: rec.Outcome, Reason: rec.Reason, Submitted: rec.Submitted, Started: rec.Started, Finished: rec.Finished}
	d.mu.Lock()
	j := d.jobs[rec.ID]
	if dev := d.devices[rec.RunDevice]; dev != nil {
		e.DeviceType = dev.cfg.DeviceType
	} else if dev := d.devices[rec.Device]; dev != nil {
		e.DeviceType = dev.cfg.DeviceType
	}
	d.mu.Unlock()
	if j != nil {
		e.Notify = j.spec.Notify
		j.pmu.Lock()
		if j.image != nil {
			t := *j.image
			e.Image = &t
		}
		j.pmu.Unlock()
	}
	if len(rec.Result) > 0 {
		var r struct {
			Phases []results.Phase `json:"phases"`
		}
		if err := json.Unmarshal(rec.Result, &r); err == nil {
			e.Phases = r.Phases
		}
	}
	d.observe(func(o Observer) { o.JobEnded(e) })
}

// observeStateLocked tells the observers that a device changed state.
func (d *Daemon) observeStateLocked(dev *device, from string) {
	if len(d.cfg.Observers) == 0 || from == "" {
		return
	}
	c := DeviceChange{Device: dev.name, DeviceType: dev.cfg.DeviceType, From: from, To: dev.state, Reason: dev.reason, At: dev.since}
	d.observe(func(o Observer) { o.DeviceChanged(c) })
}

// observeHealthLocked tells the observers how a health check ended.
func (d *Daemon) observeHealthLocked(dev *device, h labctl.Health) {
	c := HealthCheck{Device: dev.name, DeviceType: dev.cfg.DeviceType, Health: h}
	d.observe(func(o Observer) { o.HealthChecked(c) })
}

// consoleChanges is the console sessions' OnChange for a device.
func (d *Daemon) consoleChanges() func(device string, c sol.SessionChange) {
	return func(device string, c sol.SessionChange) {
		d.observe(func(o Observer) { o.ConsoleChanged(device, c) })
	}
}

// checkNotify refuses a job whose notify URLs point where jobs may not
// connect (the [images] allow_networks rule, as for image URLs).
func (d *Daemon) checkNotify(ctx context.Context, urls []string) error {
	if len(urls) > 0 && !d.cfg.Lab.Notify.On() {
		return fmt.Errorf("notify: this lab sends no job notifications: its lab file has no [notify] secret_file or secret_env to sign them with")
	}
	p := d.imagePolicy()
	for _, u := range urls {
		if err := p.CheckURL(ctx, u); err != nil {
			return fmt.Errorf("notify URL %s refused: %v", u, err)
		}
	}
	return nil
}
