package daemon

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/dispatcher"
	"github.com/labctl/labctl/jobs"
	"github.com/labctl/labctl/store"
)

// A lab of several hosts: one daemon per rack (its lab file holds the
// rack's devices), all on one PostgreSQL store. The queue is the store's:
// a job submitted through any host is recorded there and every host keeps
// in memory the queued jobs its own devices can take, in the one order of
// the lab (priority, then age); it learns of jobs submitted elsewhere,
// and of jobs canceled elsewhere, when the store says the queue changed
// (PostgreSQL's NOTIFY: one naming only new submits has it read their
// rows, any other the whole queue), and of jobs other hosts took when it
// next reads the whole queue (a NOTIFY, a claim of its own that found
// every job it named taken, each HostConfig.Poll). Its workers claim a
// job in the store under the host's lease, so a job runs once however
// many hosts could take it; a claim names the next queued jobs too and
// takes the first one free, so a worker whose job another host took takes
// the next one in the same round trip.
//
// Each Poll the host renews its lease, checks that the store still has
// its running jobs under its claim (a host that was cut off long enough
// for another to end them stops them: it never runs a job whose claim it
// lost), and, once its own lease has held for a whole lease period, ends
// the running jobs of hosts whose lease ran out ("host NAME lost"): the
// store does that in one guarded UPDATE, so each such job ends once,
// whichever hosts try. The lost host, when it starts again, powers those
// nodes off and sets their boot entries back (the recovery health check)
// before it takes work. A database that goes away stops none of this
// host's running jobs: their ends wait in memory (unsavedEnds), and no
// host ends another's jobs until its own lease has held again for a whole
// lease period, long enough for every live host to renew.
//
// What only the owning host can do (a device's power, console and state;
// the log of a job it ran) the others forward to it over its API
// (HostConfig.Peer), found through the store.

// HostConfig makes the daemon one host of a lab whose hosts share the
// store.
type HostConfig struct {
	// Name is the host's name in the lab (unique).
	Name string
	// API is the URL the other hosts reach this host's API at.
	API string
	// Lease is how long the host counts as up after each renewal; it
	// renews every Poll. 0 means 15s.
	Lease time.Duration
	// Poll is how often it renews its lease and looks at the store's
	// queue; 0 means 1s. Must be well below Lease.
	Poll time.Duration
	// Peer returns a client of another host's API (name, API URL), with
	// the lab's internal credential.
	Peer func(name, api string) (Peer, error)
}

// Peer is another host of the lab, as its API offers it.
type Peer interface {
	labctl.Service
	labctl.ConsoleService
}

// hostStore is a store that holds several hosts.
type hostStore interface {
	store.Store
	store.Hosts
}

// hostState is what the daemon knows of the lab beyond its own devices.
type hostState struct {
	cfg HostConfig
	st  hostStore
	// started is when this daemon started: which daemon holds the
	// host's name and lease in the store.
	started time.Time

	mu        sync.Mutex
	labDevs   map[string]store.LabDevice // every host's devices
	hosts     map[string]store.Host
	peers     map[string]Peer // by API URL
	ignored   map[int64]bool  // queued jobs none of this host's devices fits
	upSince   time.Time       // the lease has been renewed without a gap since (zero: it has not)
	storeDown string          // why the last renewal failed
	nameTaken bool            // another daemon took the host's name

	// nudge has keepHost read the store's queue now (queueChanged), as
	// news says: the jobs submitted, or all of it.
	nudge chan struct{}
	news  store.QueueNews
}

// queueChanged has the host read the store's queue at once rather than at
// its next poll, as news says. It never waits, and a burst of calls makes
// one read.
func (h *hostState) queueChanged(news store.QueueNews) {
	h.mu.Lock()
	h.news.Add(news, maxHeard)
	h.mu.Unlock()
	select {
	case h.nudge <- struct{}{}:
	default:
	}
}

// maxHeard bounds the submits a host keeps to read by their IDs: more
// between two reads, and it reads the whole queue.
const maxHeard = 4096

// heard takes what queueChanged recorded.
func (h *hostState) heard() store.QueueNews {
	h.mu.Lock()
	defer h.mu.Unlock()
	news := h.news
	h.news = store.QueueNews{}
	return news
}

// errClaimLost stops a job this host no longer holds in the store.
var errClaimLost = errors.New("this host lost the job's claim: its lease ran out and another host ended the job")

// joinLab registers the host and its devices, and marks for recovery the
// devices whose jobs other hosts ended while this host was away. Before
// the host's API address is known (New, when HostConfig.API is empty)
// it only checks that no other host has its devices: Serve registers it,
// so that no other host ever finds it without an address.
func (d *Daemon) joinLab(ctx context.Context) error {
	h := d.host
	if err := d.checkClock(ctx); err != nil {
		return err
	}
	now := d.now()
	h.mu.Lock()
	apiURL := h.cfg.API
	h.mu.Unlock()
	var devs []store.LabDevice
	for _, dev := range d.cfg.Lab.Devices {
		devs = append(devs, store.LabDevice{Name: dev.Name, DeviceType: dev.DeviceType, Tags: dev.Tags})
	}
	if apiURL == "" {
		if err := d.checkOwners(ctx); err != nil {
			return err
		}
		if err := d.waitForName(ctx); err != nil {
			return err
		}
	} else if err := h.st.RegisterHost(ctx, now, store.Host{Name: h.cfg.Name, API: apiURL, Started: h.started, LeaseUntil: now.Add(h.cfg.Lease)}, devs); err != nil {
		return fmt.Errorf("daemon: host %s: %w", h.cfg.Name, err)
	}
	cleanups, err := h.st.TakeCleanups(ctx)
	if err != nil {
		return fmt.Errorf("daemon: host %s: %w", h.cfg.Name, err)
	}
	for _, rec := range cleanups {
		d.log.Warn("another host ended this host's job while it was away; its node is powered off and its boot entry set back before the next job",
			"job", rec.ID, "device", rec.RunDevice, "reason", rec.Reason)
		if dev := d.devices[rec.RunDevice]; dev != nil {
			d.mu.Lock()
			dev.recover = true
			d.mu.Unlock()
		}
	}
	return d.refreshLab(ctx)
}

// waitForName returns once no other daemon holds this host's name: at
// once if the name is free or its lease has run out. A lease that still
// holds is waited out (a daemon killed without stopping leaves one); if it
// is renewed meanwhile, another live daemon serves the name, and starting
// a second one would run the same devices twice: an error. Nothing is
// written, so that New can check before it recovers the host's jobs.
func (d *Daemon) waitForName(ctx context.Context) error {
	h := d.host
	var held time.Time
	for {
		hosts, err := h.st.Hosts(ctx)
		if err != nil {
			return fmt.Errorf("daemon: host %s: %w", h.cfg.Name, err)
		}
		i := slices.IndexFunc(hosts, func(x store.Host) bool { return x.Name == h.cfg.Name })
		now := d.now()
		if i < 0 || hosts[i].Started.Equal(h.started) || hosts[i].LeaseUntil.Before(now) {
			return nil
		}
		x := hosts[i]
		if !held.IsZero() && x.LeaseUntil.After(held) {
			return fmt.Errorf("daemon: host %s: %w", h.cfg.Name, &store.HostNameTakenError{Host: x})
		}
		if held.IsZero() {
			d.log.Warn("another labctl serve holds this host's name: waiting for its lease to run out (a daemon killed without stopping leaves its lease); if it renews, this one stops",
				"host", h.cfg.Name, "started", x.Started.UTC().Format(time.RFC3339), "api", x.API, "lease_until", x.LeaseUntil.UTC().Format(time.RFC3339Nano))
		}
		held = x.LeaseUntil
		t := time.NewTimer(x.LeaseUntil.Sub(now) + h.cfg.Poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// dbClock is a store whose server has a clock of its own
// (store.Postgres).
type dbClock interface {
	Clock(ctx context.Context) (time.Time, error)
}

// checkClock refuses to join the lab while this host's clock is off the
// database's by more than a quarter of the lease. Hosts judge each
// other's leases by their own clocks: one whose clock is off would take a
// live host for lost and end its jobs, or be taken for up after it died.
func (d *Daemon) checkClock(ctx context.Context) error {
	c, ok := d.host.st.(dbClock)
	if !ok {
		return nil
	}
	before := d.now()
	db, err := c.Clock(ctx)
	if err != nil {
		return fmt.Errorf("daemon: host %s: %w", d.host.cfg.Name, err)
	}
	rtt := d.now().Sub(before)
	skew := db.Sub(before.Add(rtt / 2)) // > 0: this host is behind
	off, limit := skew.Abs(), d.host.cfg.Lease/4
	if off > limit+rtt/2 {
		how := "ahead of"
		if skew > 0 {
			how = "behind"
		}
		return fmt.Errorf("daemon: host %s: this host's clock is %s %s the database's; with a lease of %s the hosts' clocks must be within %s of it: set the time (NTP: chrony or systemd-timesyncd)",
			d.host.cfg.Name, off.Round(time.Millisecond), how, d.host.cfg.Lease, limit)
	}
	if off > limit/4 {
		d.log.Warn("this host's clock is off the database's", "host", d.host.cfg.Name, "skew", skew.Round(time.Millisecond), "limit", limit)
	}
	return nil
}

// refreshLab reads the lab's hosts and devices.
func (d *Daemon) refreshLab(ctx context.Context) error {
	devs, err := d.host.st.LabDevices(ctx)
	if err != nil {
		return err
	}
	hosts, err := d.host.st.Hosts(ctx)
	if err != nil {
		return err
	}
	h := d.host
	h.mu.Lock()
	defer h.mu.Unlock()
	h.labDevs = map[string]store.LabDevice{}
	for _, dev := range devs {
		h.labDevs[dev.Name] = dev
	}
	h.hosts = map[string]store.Host{}
	for _, x := range hosts {
		h.hosts[x.Name] = x
	}
	return nil
}

// hostName is the host whose claims this daemon's store makes: "" in a
// lab of one host, whose claims name no host.
func (d *Daemon) hostName() string {
	if d.host == nil {
		return ""
	}
	return d.host.cfg.Name
}

// ownedLocally reports whether a job of the store is this host's to
// recover: one it claimed, or one claimed before the lab had hosts on a
// device that is now this host's.
func (d *Daemon) ownedLocally(rec store.Job) bool {
	if d.host == nil || rec.Host == d.host.cfg.Name {
		return true
	}
	return rec.Host == "" && d.devices[rec.RunDevice] != nil
}

// fitsHere reports whether one of this host's devices can take the job.
func (d *Daemon) fitsHere(spec *jobs.Job) bool {
	if spec.Device != "" {
		return d.devices[spec.Device] != nil
	}
	for _, dev := range d.cfg.Lab.Devices {
		if spec.Fits(dev.Name, dev.DeviceType, dev.Tags) {
			return true
		}
	}
	return false
}

// fitsLab reports whether a device of the lab (any host's, as this host
// last read them) can take the job.
func (d *Daemon) fitsLab(spec *jobs.Job) bool {
	if d.host == nil {
		return false
	}
	h := d.host
	h.mu.Lock()
	defer h.mu.Unlock()
	if spec.Device != "" {
		_, ok := h.labDevs[spec.Device]
		return ok
	}
	for name, dev := range h.labDevs {
		if spec.Fits(name, dev.DeviceType, dev.Tags) {
			return true
		}
	}
	return false
}

// keepHost renews the lease, checks this host's claims, ends lost hosts'
// jobs and follows the lab's queue, every Poll until ctx ends.
func (d *Daemon) keepHost(ctx context.Context) {
	t := time.NewTicker(d.host.cfg.Poll)
	defer t.Stop()
	// A store that tells when the queue changes makes a job submitted
	// through another host start here at once, not at the next Poll.
	nudge := d.host.nudge
	if w, ok := d.store.(queueWatcher); ok {
		watched := make(chan struct{})
		defer func() { <-watched }()
		go func() {
			defer close(watched)
			w.WatchQueue(ctx, d.host.queueChanged)
		}()
	}
	d.hostTick(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.hostTick(ctx)
		case <-nudge:
			// One look for a burst of submits: those of the next few
			// milliseconds come with this one.
			select {
			case <-time.After(nudgeGather):
			case <-ctx.Done():
				return
			}
			select {
			case <-nudge:
			default:
			}
			sctx, cancel := context.WithTimeout(ctx, max(d.host.cfg.Poll, 5*time.Second))
			var err error
			if news := d.host.heard(); news.Whole {
				err = d.followQueue(sctx)
			} else if len(news.Submitted) > 0 {
				err = d.followSubmits(sctx, news.Submitted)
			}
			if err != nil {
				d.log.Warn("read the lab's queue", "err", err)
			}
			cancel()
		}
	}
}

// nudgeGather is how long a host waits after hearing that the queue
// changed before it looks, so that a burst of submits costs one look.
const nudgeGather = 5 * time.Millisecond

// queueWatcher is a store that says when the lab's queue changed
// (store.Postgres).
type queueWatcher interface {
	WatchQueue(ctx context.Context, changed func(store.QueueNews))
}

func (d *Daemon) hostTick(ctx context.Context) {
	h := d.host
	sctx, cancel := context.WithTimeout(ctx, max(h.cfg.Poll, 5*time.Second))
	defer cancel()
	now := d.now()
	err := h.st.RenewLease(sctx, now, now.Add(h.cfg.Lease))
	switch {
	case errors.Is(err, store.ErrHostNameTaken):
		// Another daemon took the name after this one's lease ran out:
		// this one lost its claims and may make no more.
		h.mu.Lock()
		first := !h.nameTaken
		h.upSince, h.nameTaken = time.Time{}, true
		h.mu.Unlock()
		if first {
			d.log.Error("another labctl serve took this host's name after its lease ran out: this daemon stops its jobs and takes no more work; stop it", "err", err)
		}
		d.checkClaims(sctx)
		return
	case errors.Is(err, store.ErrLeaseExpired):
		d.log.Error("this host's lease ran out and other hosts ended its jobs: stopping them, then joining the lab again", "err", err)
		h.mu.Lock()
		h.upSince = time.Time{}
		h.mu.Unlock()
		if err := d.joinLab(sctx); err != nil {
			d.log.Error("join the lab again", "err", err)
			return
		}
		d.checkClaims(sctx)
		return
	case err != nil:
		h.mu.Lock()
		first := h.storeDown == ""
		h.upSince, h.storeDown = time.Time{}, err.Error()
		h.mu.Unlock()
		if first {
			d.log.Error("cannot renew this host's lease: the store is unreachable; running jobs go on", "err", err)
		}
		return
	}
	h.mu.Lock()
	if h.upSince.IsZero() {
		h.upSince = now
		if h.storeDown != "" {
			d.log.Info("the store answers again: lease renewed", "host", h.cfg.Name)
		}
		h.storeDown = ""
	}
	upFor := now.Sub(h.upSince)
	h.mu.Unlock()

	d.checkClaims(sctx)
	if upFor >= h.cfg.Lease {
		d.endLostJobs(sctx, now)
	}
	if err := d.refreshLab(sctx); err != nil {
		d.log.Warn("read the lab's hosts and devices", "err", err)
	}
	if err := d.followQueue(sctx); err != nil {
		d.log.Warn("read the lab's queue", "err", err)
	}
}

// checkClaims stops the running jobs the store no longer has running
// under this host's claim.
func (d *Daemon) checkClaims(ctx context.Context) {
	d.mu.Lock()
	var mine []int64
	for id, j := range d.jobs {
		if j.rec.State == store.Running {
			mine = append(mine, id)
		}
	}
	d.mu.Unlock()
	if len(mine) == 0 {
		return
	}
	running, err := d.store.JobIDs(ctx, store.JobFilter{States: []string{store.Running}, Host: d.host.cfg.Name})
	if err != nil {
		d.log.Warn("check this host's claims", "err", err)
		return
	}
	held := map[int64]bool{}
	for _, id := range running {
		held[id] = true
	}
	var lost []int64
	for _, id := range mine {
		if !held[id] {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		d.stopLostClaims(lost)
	}
}

// stopLostClaims stops the jobs ids: another host ended them. Their
// nodes are finalized as any stopped job's; their ends are not recorded
// (the store refuses them).
func (d *Daemon) stopLostClaims(ids []int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, j := range d.jobs {
		if j.rec.State != store.Running || !slices.Contains(ids, id) {
			continue
		}
		d.log.Error("stopping a job whose claim this host lost", "job", id)
		j.cancel(errClaimLost)
	}
}

// endLostJobs ends the running jobs of hosts whose lease ran out, and
// queues their next attempts.
func (d *Daemon) endLostJobs(ctx context.Context, now time.Time) {
	ended, err := d.host.st.EndLostJobs(ctx, now)
	if err != nil {
		d.log.Warn("end the jobs of lost hosts", "err", err)
		return
	}
	for _, rec := range ended {
		d.log.Warn("job ended: its host is lost", "job", rec.ID, "host", rec.Host, "device", rec.RunDevice, "reason", rec.Reason)
		d.observeEnd(rec)
		if _, err := d.nextAttempt(ctx, rec); err != nil {
			d.log.Error("queue the job again", "job", rec.ID, "err", err)
		}
	}
}

// followQueue takes into this host's queue the jobs of the store's queue
// that its devices fit and it does not hold yet, and drops those it holds
// that are no longer queued in the store (another host took them, or
// someone canceled them through another host).
func (d *Daemon) followQueue(ctx context.Context) error {
	d.mu.Lock()
	seen := d.adds
	d.mu.Unlock()
	// The queue's IDs, then the rows of the jobs this host has not seen:
	// in a burst of submits each read brings the new jobs only.
	queued, err := d.store.JobIDs(ctx, store.JobFilter{States: []string{store.Queued}})
	if err != nil {
		return err
	}
	inStore := map[int64]bool{}
	for _, id := range queued {
		inStore[id] = true
	}
	h := d.host
	h.mu.Lock()
	for id := range h.ignored {
		if !inStore[id] {
			delete(h.ignored, id)
		}
	}
	h.mu.Unlock()
	add, err := d.readQueued(ctx, d.unheld(queued))
	if err == nil {
		err = d.restoreRetries(ctx, add)
	}
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.addQueuedLocked(add)
	var unsure []*job
	for _, j := range slices.Clone(d.queue) {
		if j.added <= seen && !inStore[j.rec.ID] {
			d.dequeueLocked(j)
			if j.unsure {
				delete(d.jobs, j.rec.ID)
				unsure = append(unsure, j)
				continue
			}
			d.forgetLocked(j)
			j.cancel(nil)
		}
	}
	d.scheduleLocked()
	if len(unsure) > 0 {
		go d.checkUnsure(unsure)
	}
	return nil
}

// followSubmits takes into this host's queue the jobs ids, submitted
// through other hosts as their announcements name them, that its devices
// fit and it does not hold yet: one read of those rows, not of the whole
// queue. A submitted job is a first attempt: it has no earlier attempts
// to read.
func (d *Daemon) followSubmits(ctx context.Context, ids []int64) error {
	add, err := d.readQueued(ctx, d.unheld(ids))
	if err != nil || len(add) == 0 {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.addQueuedLocked(add)
	d.scheduleLocked()
	return nil
}

// unheld returns the jobs of ids this host neither holds nor ignores.
func (d *Daemon) unheld(ids []int64) []int64 {
	h := d.host
	var fresh []int64
	d.mu.Lock()
	h.mu.Lock()
	for _, id := range ids {
		if d.jobs[id] == nil && !h.ignored[id] {
			fresh = append(fresh, id)
		}
	}
	h.mu.Unlock()
	d.mu.Unlock()
	return fresh
}

// readQueued reads the jobs ids that are still queued in the store (one
// another host took since is gone) and returns those this host's devices
// fit, as jobs to queue here; it remembers the others as ignored.
func (d *Daemon) readQueued(ctx context.Context, ids []int64) ([]*job, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	h := d.host
	recs, err := d.store.Jobs(ctx, store.JobFilter{States: []string{store.Queued}, IDs: ids})
	if err != nil {
		return nil, err
	}
	var add []*job
	for _, rec := range recs {
		spec, err := parseStored(rec)
		if err != nil || !d.fitsHere(spec) {
			h.mu.Lock()
			h.ignored[rec.ID] = true
			h.mu.Unlock()
			continue
		}
		add = append(add, d.newJob(rec, spec))
	}
	return add, nil
}

// restoreRetries gives the retries among jobs read from the store's
// queue their earlier attempts. Most jobs are first attempts: one read
// finds the retries, whose attempts are then read one job at a time.
func (d *Daemon) restoreRetries(ctx context.Context, add []*job) error {
	if len(add) == 0 {
		return nil
	}
	var ids []int64
	for _, j := range add {
		ids = append(ids, j.rec.ID)
	}
	isRetry, err := d.store.Retries(ctx, ids)
	if err != nil {
		return err
	}
	for _, j := range add {
		if isRetry[j.rec.ID] {
			if err := d.restoreAttempts(ctx, j); err != nil {
				return err
			}
		}
	}
	return nil
}

// addQueuedLocked queues here the jobs readQueued returned, but those
// this host holds already.
func (d *Daemon) addQueuedLocked(add []*job) {
	for _, j := range add {
		if d.jobs[j.rec.ID] == nil {
			d.jobs[j.rec.ID] = j
			d.enqueueLocked(j)
			d.observeQueuedLocked(j.rec)
		}
	}
}

// checkUnsure looks in the store at jobs that left the store's queue
// after a claim naming them failed without an answer: one the store holds
// running under this host's claim was taken by that claim and runs
// nowhere, and ends (endLostAnswer); the others another host took or
// someone canceled.
func (d *Daemon) checkUnsure(jobs []*job) {
	ctx, cancel := context.WithTimeout(d.base, storeTimeout)
	defer cancel()
	for _, j := range jobs {
		rec, err := d.store.Job(ctx, j.rec.ID)
		if err == nil && rec.State == store.Running && rec.Host == d.hostName() {
			d.endLostAnswer(j, rec)
		}
		close(j.done)
		j.cancel(nil)
	}
}

// remote returns the host that owns a device of another host, and a
// client of it; ok false for this host's devices and unknown ones.
func (d *Daemon) remote(name string) (string, Peer, bool, error) {
	if d.host == nil || d.devices[name] != nil {
		return "", nil, false, nil
	}
	h := d.host
	h.mu.Lock()
	dev, ok := h.labDevs[name]
	h.mu.Unlock()
	if !ok {
		return "", nil, false, nil
	}
	p, err := d.peer(dev.Host)
	return dev.Host, p, true, err
}

// peer returns a client of host name's API.
func (d *Daemon) peer(name string) (Peer, error) {
	h := d.host
	h.mu.Lock()
	x, ok := h.hosts[name]
	h.mu.Unlock()
	if !ok || !x.LeaseUntil.After(d.now()) {
		// It may have come back since this host last looked.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := d.refreshLab(ctx)
		cancel()
		if err != nil {
			return nil, storeErr(err)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	x, ok = h.hosts[name]
	if !ok {
		return nil, fmt.Errorf("%w: host %s is not registered in the lab", labctl.ErrUnavailable, name)
	}
	if !x.LeaseUntil.After(d.now()) {
		return nil, fmt.Errorf("%w: host %s is down (its lease ran out at %s)", labctl.ErrUnavailable, name, x.LeaseUntil.UTC().Format(time.RFC3339))
	}
	if p := h.peers[x.API]; p != nil {
		return p, nil
	}
	if h.cfg.Peer == nil {
		return nil, fmt.Errorf("%w: host %s owns it, and this host cannot reach other hosts", labctl.ErrUnavailable, name)
	}
	p, err := h.cfg.Peer(name, x.API)
	if err != nil {
		return nil, fmt.Errorf("%w: host %s: %v", labctl.ErrUnavailable, name, err)
	}
	h.peers[x.API] = p
	return p, nil
}

// jobHost returns a client of the host a job of the store ran or runs
// on, if that is another host.
func (d *Daemon) jobHost(rec store.Job) (Peer, bool, error) {
	if d.host == nil || rec.Host == "" || rec.Host == d.host.cfg.Name {
		return nil, false, nil
	}
	p, err := d.peer(rec.Host)
	return p, true, err
}

// remoteDevices are the views of the other hosts' devices: their last
// recorded state, or down while their host's lease has run out.
func (d *Daemon) remoteDevices(ctx context.Context) ([]labctl.Device, error) {
	if d.host == nil {
		return nil, nil
	}
	states, err := d.store.Devices(ctx)
	if err != nil {
		return nil, storeErr(err)
	}
	byName := map[string]store.Device{}
	for _, s := range states {
		byName[s.Name] = s
	}
	h := d.host
	h.mu.Lock()
	defer h.mu.Unlock()
	now := d.now()
	var out []labctl.Device
	for _, dev := range h.labDevs {
		if dev.Host == h.cfg.Name || d.devices[dev.Name] != nil {
			continue
		}
		s := byName[dev.Name]
		v := labctl.Device{Name: dev.Name, DeviceType: dev.DeviceType, Tags: dev.Tags, Host: dev.Host,
			State: s.State, Reason: s.Reason, Since: s.Since, Maintenance: s.Maintenance}
		if x, ok := h.hosts[dev.Host]; !ok || !x.LeaseUntil.After(now) {
			v.State, v.Since = labctl.DeviceDown, x.LeaseUntil
			v.Reason = fmt.Sprintf("host %s is down: its lease ran out at %s (last state %s)", dev.Host, x.LeaseUntil.UTC().Format(time.RFC3339), s.State)
		}
		out = append(out, v)
	}
	return out, nil
}

// cancelElsewhere cancels a job this host does not hold: a queued one in
// the store (the host that holds it drops it when it next looks), a
// running one through its host.
func (d *Daemon) cancelElsewhere(ctx context.Context, rec store.Job) (labctl.Job, error) {
	caller := labctl.CallerFrom(ctx)
	if rec.Submitter != caller {
		if err := labctl.Authorize(ctx, labctl.RoleOperator, fmt.Sprintf("canceling job %d of %s", rec.ID, rec.Submitter)); err != nil {
			return labctl.Job{}, err
		}
	}
	if rec.State == store.Queued {
		reason := "canceled: " + dispatcher.CanceledBy{Caller: caller}.Error()
		err := d.store.FinishJob(ctx, rec.ID, store.Queued, store.Finish{Outcome: string(labctl.Canceled), Reason: reason, At: d.now()})
		if err == nil {
			d.log.Info("job canceled", "job", rec.ID, "by", caller)
			return d.Job(ctx, rec.ID)
		}
		if !errors.Is(err, store.ErrConflict) {
			return labctl.Job{}, storeErr(err)
		}
		// A host took it meanwhile.
		if rec, err = d.store.Job(ctx, rec.ID); err != nil {
			return labctl.Job{}, storeErr(err)
		}
	}
	p, ok, err := d.jobHost(rec)
	switch {
	case err != nil:
		return labctl.Job{}, err
	case !ok:
		return labctl.Job{}, fmt.Errorf("%w: job %d is %s but not known to this daemon", labctl.ErrBusy, rec.ID, rec.State)
	}
	return p.Cancel(ctx, rec.ID)
}

// followElsewhere follows a job another host runs or ran, through that
// host; a job queued for another host's devices is watched in the store
// until a host takes it. false: the job is this host's.
func (d *Daemon) followElsewhere(ctx context.Context, id int64, opts labctl.FollowOptions, send func(labctl.Event) error) (bool, error) {
	heartbeat := time.NewTicker(followHeartbeat)
	defer heartbeat.Stop()
	for {
		d.mu.Lock()
		local := d.jobs[id] != nil
		d.mu.Unlock()
		if local {
			return false, nil
		}
		rec, err := d.store.Job(ctx, id)
		if err != nil {
			return true, storeErr(err)
		}
		if rec.State != store.Queued {
			p, ok, err := d.jobHost(rec)
			if !ok {
				return false, nil
			}
			if err != nil {
				return true, err
			}
			return true, p.Follow(ctx, id, opts, send)
		}
		select {
		case <-ctx.Done():
			return true, context.Cause(ctx)
		case <-heartbeat.C:
			if err := send(labctl.Event{Progress: &labctl.JobProgress{Phase: "queued"}}); err != nil {
				return true, err
			}
		case <-time.After(d.host.cfg.Poll / 2):
		}
	}
}

// SetHostAPI sets the URL the other hosts reach this host's API at, once
// the API listens (before Serve, which registers it).
func (d *Daemon) SetHostAPI(u string) {
	if d.host == nil {
		return
	}
	d.host.mu.Lock()
	d.host.cfg.API = u
	d.host.mu.Unlock()
}

// remoteDevice is another host's device as the store shows it, for when
// its host cannot answer (err).
func (d *Daemon) remoteDevice(ctx context.Context, name string, err error) (labctl.Device, error) {
	list, lerr := d.remoteDevices(ctx)
	if lerr != nil {
		return labctl.Device{}, err
	}
	for _, v := range list {
		if v.Name == name {
			return v, nil
		}
	}
	return labctl.Device{}, err
}

// checkOwners refuses devices of this host's lab file that another host
// has registered (as RegisterHost would), writing nothing.
func (d *Daemon) checkOwners(ctx context.Context) error {
	devs, err := d.host.st.LabDevices(ctx)
	if err != nil {
		return fmt.Errorf("daemon: host %s: %w", d.host.cfg.Name, err)
	}
	var taken []store.LabDevice
	for _, dev := range devs {
		if dev.Host != d.host.cfg.Name && d.devices[dev.Name] != nil {
			taken = append(taken, dev)
		}
	}
	if len(taken) > 0 {
		return fmt.Errorf("daemon: host %s: %w", d.host.cfg.Name, store.DevicesTaken(d.host.cfg.Name, taken))
	}
	return nil
}
