package daemon

import (
	"fmt"
	"slices"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/store"
)

// device is one device of the lab and what the daemon knows about it.
// Fields after the first group are guarded by Daemon.mu.
type device struct {
	cfg     *devices.Device
	name    string
	node    *labctl.Node // nil if nodeErr
	nodeErr error        // the device's parts could not be built (config)
	tasks   chan task    // to its worker; holds at most one (see busy)

	state  string // derived by refreshLocked
	reason string
	since  time.Time

	maintenance  bool
	maintReason  string
	healthy      bool   // its last health check passed
	healthReason string // why it is not healthy
	health       *labctl.Health
	// healthHistory are its last health checks since the daemon
	// started, oldest first (at most healthHistory).
	healthHistory []labctl.Health
	job           *job   // the job it runs (assigned or running)
	check         *check // the health check it runs (or is about to)
	busy          bool   // a task is on its way to or running on the worker
	claiming      bool   // its worker is taking its job off the store's queue
	manual        int    // power or bootdev requests in flight
	recover       bool   // power off and PXE local before the next check (a crash cut its job short)
	idleReason    string // why it is idle: the last thing that ended
	failures      int    // health checks failed in a row
	reservation   *labctl.Reservation
	// order is its place in Daemon.byType (name order); idleGen counts
	// its turns idle (see idleEntry).
	order   int
	idleGen uint64
}

// idleEntry is a device's turn idle in Daemon.idle: it stands while the
// device is idle in that turn (gen is its idleGen then).
type idleEntry struct {
	dev   *device
	gen   uint64
	since time.Time
}

// valid reports whether the device is still idle in this turn.
func (e idleEntry) valid() bool {
	return e.dev.state == labctl.DeviceIdle && e.dev.idleGen == e.gen
}

// task is one thing for a device's worker to do: a job or a health check.
type task struct {
	job   *job
	check *check
}

// check is a health check asked for: its waiters wait for done.
type check struct {
	why     string
	recover bool
	done    chan struct{}
	result  labctl.Health // set before done is closed
}

// refreshLocked derives the device's state from what it is doing and
// what is known about it, notes the time of a change and schedules the
// store write. why, if set, says why it became idle.
func (d *Daemon) refreshLocked(dev *device, why string) {
	if why != "" {
		dev.idleReason = why
	}
	var state, reason string
	switch {
	case dev.job != nil:
		state, reason = labctl.DeviceRunning, fmt.Sprintf("job %d (%s)", dev.job.rec.ID, dev.job.rec.Name)
		if dev.maintenance {
			reason += "; maintenance when it ends: " + dev.maintReason
		}
	case dev.check != nil:
		state, reason = labctl.DeviceChecking, "health check: "+dev.check.why
	case dev.maintenance:
		state, reason = labctl.DeviceMaintenance, dev.maintReason
	case !dev.healthy:
		state, reason = labctl.DeviceOffline, dev.healthReason
	default:
		state, reason = labctl.DeviceIdle, dev.idleReason
	}
	if state == dev.state && reason == dev.reason {
		return
	}
	if state != dev.state {
		dev.since = d.now()
	}
	if state != dev.state || state != labctl.DeviceRunning {
		d.log.Info("device state", "device", dev.name, "state", state, "reason", reason)
	}
	from := dev.state
	dev.state, dev.reason = state, reason
	if state != from {
		if state == labctl.DeviceIdle {
			d.noteIdleLocked(dev)
		}
		d.observeStateLocked(dev, from)
	}
	d.wakeClock()
	d.dirty[dev.name] = true
	select {
	case d.persistNow <- struct{}{}:
	default:
	}
}

// noteIdleLocked puts a device that has become idle at the end of its
// type's idle order (the order of dev.since), where pickLocked finds the
// device idle the longest without looking at every device. Entries of
// turns that ended are dropped as pickLocked passes them, and all at once
// when they outnumber the type's devices.
func (d *Daemon) noteIdleLocked(dev *device) {
	dev.idleGen++
	t := dev.cfg.DeviceType
	q := append(d.idle[t], idleEntry{dev: dev, gen: dev.idleGen, since: dev.since})
	if len(q) > 2*len(d.byType[t])+16 {
		q = slices.DeleteFunc(q, func(e idleEntry) bool { return !e.valid() })
	}
	d.idle[t] = q
}

// availableLocked reports whether the device can take a job now.
func (d *Daemon) availableLocked(dev *device) bool {
	return d.serving && !d.stopping && !dev.busy && dev.manual == 0 && !dev.maintenance && dev.healthy && dev.nodeErr == nil
}

// record is the device state for the store.
func (dev *device) record() store.Device {
	return store.Device{Name: dev.name, State: dev.state, Reason: dev.reason, Since: dev.since,
		Maintenance: dev.maintenance, MaintenanceReason: dev.maintReason}
}

// healthHistory is how many health checks a device keeps for the API.
const healthHistory = 20

// viewLocked is the device for the API.
func (dev *device) viewLocked() labctl.Device {
	v := labctl.Device{
		Name: dev.name, DeviceType: dev.cfg.DeviceType, Tags: dev.cfg.Tags,
		State: dev.state, Reason: dev.reason, Since: dev.since, Maintenance: dev.maintenance,
	}
	if dev.job != nil {
		v.Job = dev.job.rec.ID
	}
	if dev.health != nil {
		h := *dev.health
		v.Health = &h
	}
	if dev.reservation != nil {
		r := *dev.reservation
		v.Reservation = &r
	}
	return v
}

// requestCheckLocked gives the device a health check, or returns the one
// it already has. It returns nil when a job owns the device.
func (d *Daemon) requestCheckLocked(dev *device, why string) *check {
	if dev.check != nil {
		return dev.check
	}
	if dev.job != nil || dev.busy {
		return nil
	}
	c := &check{why: why, recover: dev.recover, done: make(chan struct{})}
	dev.check, dev.busy = c, true
	dev.tasks <- task{check: c}
	d.refreshLocked(dev, "")
	return c
}
