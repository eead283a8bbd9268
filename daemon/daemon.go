// Package daemon is the core of `labctl serve`: it owns the lab. It keeps
// the job queue, gives each job to a free healthy device, runs it there
// (dispatcher.Run) on a worker of that device, tracks each device's state
// and health, owns the nodes' console sessions (console.Broker) and
// recovers from its own crashes. It implements labctl.Service.
//
// Queue: jobs wait in priority order (high, normal, low), first come first
// served within a priority. A job names a device, or a device type and
// tags; it goes to an idle device that fits (of several, the one idle the
// longest). The job file's timeouts count from the job's start on its
// node, not from its submission: waiting in the queue costs a job nothing. Scheduling happens in memory, at once, whenever something
// changes (a submit, a device coming free): nothing polls. A worker then
// takes the job off the queue in the store with one guarded UPDATE (see
// package store) before it touches the node, so a job is never run twice,
// and a job is in the store before its submitter hears its ID, so it is
// never lost.
//
// Devices are idle, running (a job), checking (its health check),
// offline (the check failed: no jobs until one passes) or maintenance (an
// admin took it out; survives restarts). The health check (the device
// type's [health]) runs at start-up, after every job that ended incomplete
// (the lab went wrong) and on demand.
//
// A lab that heals itself: idle and offline devices are checked again
// after the lab's [health] interval (periodic.go); a job that ends
// incomplete is queued again up to its retries (requeue.go); a person may
// reserve a device (reserve.go); a job that waits longer than its
// queue_timeout ends canceled (clock.go).
//
// Crash safety: a job that was running when the daemon died (kill -9) is
// ended incomplete ("daemon restarted") when the daemon starts again,
// unless its results show it had finished; its node is then powered off,
// its PXE entry set back to local boot, and its device health-checked
// before it takes another job. Queued jobs stay queued. On an orderly
// shutdown running jobs are stopped (their nodes finalized) and end
// incomplete ("daemon stopped").
package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/console"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/dispatcher"
	"github.com/labctl/labctl/results"
	"github.com/labctl/labctl/store"
)

// RunFunc runs one job to its end; dispatcher.Run is the real one.
type RunFunc func(ctx context.Context, j dispatcher.Job) *results.Job

// defaultHealthChecks is how many health checks of a lab of n devices run
// at once: one per 8 devices, at least 16 and at most 256. A check mostly
// waits on a BMC, so a fixed bound would make start-up grow with the lab,
// while every device at once would send all the BMC session setups (and,
// with master_boot, all the PXE boots) in the same instant.
func defaultHealthChecks(n int) int {
	return min(max(n/8, 16), 256)
}

// Config is what a Daemon is made of.
type Config struct {
	Lab   *devices.Lab
	Nodes labctl.Nodes
	Store store.Store
	Log   *slog.Logger
	// Run runs a job; nil means dispatcher.Run.
	Run RunFunc
	// HealthChecks bounds the health checks that run at once (start-up
	// checks every device); 0 means defaultHealthChecks.
	HealthChecks int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// RetentionEvery is how often the lab's [retention] removes old
	// jobs (it also runs at start-up); 0 means hourly.
	RetentionEvery time.Duration
	// Observers hear job starts and ends, device state changes, health
	// checks and console drops (metrics, webhooks; see Observer).
	Observers []Observer
	// Host makes the daemon one host of a lab whose hosts share the
	// store (see HostConfig); nil: the lab's only host.
	Host *HostConfig
}

// Daemon is the lab daemon. Create it with New, run it with Serve; its
// methods (labctl.Service) may be called before Serve runs: jobs then queue
// until the workers start.
type Daemon struct {
	cfg      Config
	log      *slog.Logger
	store    store.Store
	run      RunFunc
	now      func() time.Time
	consoles *console.Broker // the nodes' console sessions; Serve closes it
	jobsDir  string
	cacheDir string

	checkSlots chan struct{}   // health checks running
	base       context.Context // parent of every job's context
	stop       context.CancelCauseFunc
	persistNow chan struct{} // device states to write
	clock      chan struct{} // wakes keepTime: a deadline may have moved
	reserveMu  sync.Mutex    // one reservation change at a time (memory and store)
	ends       *unsavedEnds  // job ends the store has not taken yet
	// endViews: a job's followers, woken together by its end, read the
	// ended job once between them.
	endViews singleflight.Group

	mu       sync.Mutex
	devices  map[string]*device
	names    []string               // sorted
	byType   map[string][]*device   // by device type, sorted by name
	idle     map[string][]idleEntry // by device type, in the order they became idle
	queue    []*job                 // queued jobs in the order they run
	jobs     map[int64]*job         // queued and running jobs
	serving  bool                   // the workers run
	stopping bool
	dirty    map[string]bool // devices whose state the store has not seen yet

	audits auditQueue // audit entries stored on the side

	host *hostState // nil: the lab's only host
	adds uint64     // jobs put in the queue so far (job.added)
}

// New loads the daemon's state from the store: queued jobs go back into
// the queue, jobs that were running when the daemon died are ended
// incomplete (their devices are recovered when Serve starts), devices in
// maintenance stay there.
func New(ctx context.Context, cfg Config) (*Daemon, error) {
	if cfg.Lab == nil || cfg.Nodes == nil || cfg.Store == nil {
		return nil, errors.New("daemon: Lab, Nodes and Store are required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Run == nil {
		cfg.Run = dispatcher.Run
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HealthChecks <= 0 {
		cfg.HealthChecks = defaultHealthChecks(len(cfg.Lab.Devices))
	}
	if cfg.RetentionEvery <= 0 {
		cfg.RetentionEvery = time.Hour
	}
	base, stop := context.WithCancelCause(context.Background())
	d := &Daemon{
		cfg: cfg, log: cfg.Log, store: cfg.Store, run: cfg.Run, now: cfg.Now,
		jobsDir:    filepath.Join(cfg.Lab.StateDir, "jobs"),
		cacheDir:   filepath.Join(cfg.Lab.StateDir, "cache"),
		checkSlots: make(chan struct{}, cfg.HealthChecks),
		base:       base, stop: stop,
		persistNow: make(chan struct{}, 1),
		clock:      make(chan struct{}, 1),
		ends:       newUnsavedEnds(),
		devices:    map[string]*device{},
		byType:     map[string][]*device{},
		idle:       map[string][]idleEntry{},
		jobs:       map[int64]*job{},
		dirty:      map[string]bool{},
	}
	d.consoles = newConsoles(d)
	if cfg.Host != nil {
		hs, ok := cfg.Store.(hostStore)
		if !ok {
			return nil, fmt.Errorf("daemon: host %s: the store %T cannot hold several hosts", cfg.Host.Name, cfg.Store)
		}
		h := *cfg.Host
		if h.Name == "" {
			return nil, errors.New("daemon: a host of a lab needs a name")
		}
		if h.Lease <= 0 {
			h.Lease = 15 * time.Second
		}
		if h.Poll <= 0 {
			h.Poll = time.Second
		}
		if h.Poll*2 > h.Lease {
			return nil, fmt.Errorf("daemon: host %s: poll %s must be at most half the lease %s", h.Name, h.Poll, h.Lease)
		}
		hs.SetHost(h.Name)
		d.host = &hostState{cfg: h, st: hs, started: cfg.Now(), peers: map[string]Peer{}, ignored: map[int64]bool{}, nudge: make(chan struct{}, 1)}
	}
	if err := d.checkWritable(ctx); err != nil {
		return nil, err
	}
	if err := d.loadDevices(ctx); err != nil {
		return nil, err
	}
	if err := d.loadReservations(ctx); err != nil {
		return nil, err
	}
	if d.host != nil {
		if err := d.joinLab(ctx); err != nil {
			return nil, err
		}
	}
	if err := d.recoverJobs(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

// loadDevices builds a device for each device of the lab, with the
// maintenance state the store remembers.
func (d *Daemon) loadDevices(ctx context.Context) error {
	saved, err := d.store.Devices(ctx)
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	byName := map[string]store.Device{}
	for _, s := range saved {
		byName[s.Name] = s
	}
	now := d.now()
	for _, cfg := range d.cfg.Lab.Devices {
		dev := &device{cfg: cfg, name: cfg.Name, tasks: make(chan task, 1), since: now,
			healthReason: "not checked since the daemon started"}
		dev.node, dev.nodeErr = d.cfg.Nodes.Node(cfg.Name)
		if dev.nodeErr != nil {
			dev.healthReason = dev.nodeErr.Error()
		}
		if s, ok := byName[cfg.Name]; ok && s.Maintenance {
			dev.maintenance, dev.maintReason = true, s.MaintenanceReason
			d.consoles.Park(cfg.Name, true)
		}
		d.devices[cfg.Name] = dev
		d.names = append(d.names, cfg.Name)
		d.byType[cfg.DeviceType] = append(d.byType[cfg.DeviceType], dev)
		d.refreshLocked(dev, "")
	}
	slices.Sort(d.names)
	for _, list := range d.byType {
		slices.SortFunc(list, func(a, b *device) int { return cmp.Compare(a.name, b.name) })
		for i, dev := range list {
			dev.order = i
		}
	}
	return nil
}

// Serve runs the workers (one per device) until ctx ends. It starts with
// the recovery of devices whose job was cut short by a crash and a health
// check of every device not in maintenance. When ctx ends, running jobs
// are stopped (each node is finalized: powered off, PXE entry local) and
// end incomplete; queued jobs stay queued for the next start. Serve
// returns once every worker has stopped.
func (d *Daemon) Serve(ctx context.Context) error {
	d.mu.Lock()
	if d.serving {
		d.mu.Unlock()
		return errors.New("daemon: Serve called twice")
	}
	d.serving = true
	d.mu.Unlock()
	if d.host != nil {
		// Again, with the API's address, which is known now.
		if err := d.joinLab(ctx); err != nil {
			return err
		}
	}
	stopJobs := context.AfterFunc(ctx, func() {
		d.mu.Lock()
		d.stopping = true
		d.mu.Unlock()
		d.stop(dispatcher.ErrShutdown)
	})
	defer stopJobs()

	persistCtx, stopPersisting := context.WithCancel(context.WithoutCancel(ctx))
	persisted := make(chan struct{})
	go func() {
		defer close(persisted)
		d.persist(persistCtx)
	}()
	endsSaved := make(chan struct{})
	go func() {
		defer close(endsSaved)
		d.saveEnds(persistCtx)
	}()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.retainEvery(ctx)
	}()
	d.mu.Lock()
	for _, name := range d.names {
		dev := d.devices[name]
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.work(ctx, dev)
		}()
	}
	for _, name := range d.names {
		dev := d.devices[name]
		if dev.maintenance && !dev.recover {
			continue
		}
		why := "start-up"
		if dev.recover {
			why = "recovery after a daemon restart"
		}
		d.requestCheckLocked(dev, why)
	}
	d.scheduleLocked()
	d.mu.Unlock()
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.keepTime(ctx)
	}()
	if d.host != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.keepHost(ctx)
		}()
	}
	d.log.Info("daemon serving", "devices", len(d.names))

	<-ctx.Done()
	wg.Wait()
	// The jobs are finalized: their consoles may go.
	d.consoles.Close()
	d.audits.wait()
	stopPersisting()
	<-persisted
	<-endsSaved
	d.log.Info("daemon stopped")
	return nil
}

// work is a device's worker: it runs the device's tasks (jobs, health
// checks) one after the other until ctx ends.
func (d *Daemon) work(ctx context.Context, dev *device) {
	for {
		select {
		case <-ctx.Done():
			d.dropPending(ctx, dev)
			return
		case t := <-dev.tasks:
			if ctx.Err() != nil && !d.storedClaimed(t) {
				d.requeue(dev, t)
				d.dropPending(ctx, dev)
				return
			}
			if t.job != nil {
				d.runJob(ctx, dev, t.job)
			} else {
				d.runCheck(ctx, dev, t.check)
			}
		}
	}
}

// dropPending releases a task given to a worker that stops before
// running it: a job stays queued (in the store too), a check waiter hears
// that it did not run. A job stored claimed runs, cut short at once, as
// any running job when the daemon stops.
func (d *Daemon) dropPending(ctx context.Context, dev *device) {
	select {
	case t := <-dev.tasks:
		if d.storedClaimed(t) {
			d.runJob(ctx, dev, t.job)
			return
		}
		d.requeue(dev, t)
	default:
	}
}

// storedClaimed reports whether a task is a job stored claimed for its
// device (Submit): it is running in the store, and cannot go back to the
// queue.
func (d *Daemon) storedClaimed(t task) bool {
	if t.job == nil {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return t.job.rec.State == store.Running
}

func (d *Daemon) requeue(dev *device, t task) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if t.job != nil {
		dev.job, t.job.dev = nil, nil
		d.enqueueLocked(t.job)
	}
	if t.check != nil {
		t.check.result = labctl.Health{At: d.now(), Detail: "not run: " + dispatcher.ErrShutdown.Error()}
		close(t.check.done)
		dev.check = nil
	}
	dev.busy = false
	d.refreshLocked(dev, "")
}

// persist writes device states to the store as they change, until ctx
// ends (then once more). States the store refused stay to be written and
// are tried again, less often while it keeps refusing: a maintenance flag
// set during an outage must survive the next restart.
func (d *Daemon) persist(ctx context.Context) {
	var retry <-chan time.Time
	wait := persistRetry
	failing := false
	for {
		select {
		case <-d.persistNow:
		case <-retry:
		case <-ctx.Done():
		}
		d.mu.Lock()
		var batch []store.Device
		for name := range d.dirty {
			batch = append(batch, d.devices[name].record())
		}
		clear(d.dirty)
		d.mu.Unlock()
		if len(batch) > 0 {
			wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
			err := d.store.SetDevices(wctx, batch)
			cancel()
			switch {
			case err != nil:
				if !failing {
					d.log.Error("record device states; trying again until the store takes them", "devices", len(batch), "err", err)
				}
				failing = true
				d.mu.Lock()
				for _, rec := range batch {
					d.dirty[rec.Name] = true
				}
				d.mu.Unlock()
				retry = time.After(wait)
				wait = min(2*wait, persistRetryMax)
			case failing:
				d.log.Info("recorded the device states the store had refused", "devices", len(batch))
				failing, retry, wait = false, nil, persistRetry
			}
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// How soon device states the store refused are tried again: at first, and
// at the longest while it goes on refusing.
const (
	persistRetry    = 500 * time.Millisecond
	persistRetryMax = 30 * time.Second
)
