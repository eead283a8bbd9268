package daemon

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/store"
)

// Reservations hold a device for one person (the name of their API
// token), as labgrid's locks do: until it expires, it is released, or its
// owner renews it. While it holds, no job lands on the device, except the
// owner's own jobs that name the device (device = "NAME" in the job
// file): a job chosen by device type never does, so that a person
// debugging a node does not find a CI job on it. Periodic health checks
// leave a reserved device alone. Reservations are kept in the store and
// survive restarts.

// MaxReservation bounds one reservation (renew it for longer).
const MaxReservation = 7 * 24 * time.Hour

// Reserve holds a device for the caller, or renews the caller's hold, for
// req.For from now (labctl.Service).
func (d *Daemon) Reserve(ctx context.Context, name string, req labctl.ReserveRequest) (_ labctl.Device, err error) {
	defer func() {
		d.audit(ctx, labctl.AuditEntry{Action: labctl.AuditReserve, Device: name, Detail: fmt.Sprintf("for %s: %s", req.For, req.Reason)}, err)
	}()
	if _, p, ok, err := d.remote(name); ok {
		if err != nil {
			return labctl.Device{}, err
		}
		return p.Reserve(ctx, name, req)
	}
	dev, err := d.device(name)
	if err != nil {
		return labctl.Device{}, err
	}
	if req.For <= 0 || req.For > MaxReservation {
		return labctl.Device{}, fmt.Errorf("%w: reserve %s: give how long, up to %s (e.g. --for 2h)", labctl.ErrInvalid, name, roundDuration(MaxReservation))
	}
	owner := callerName(ctx)
	d.reserveMu.Lock()
	defer d.reserveMu.Unlock()
	now := d.now()
	d.mu.Lock()
	cur := dev.reservation
	if cur != nil && !now.Before(cur.Until) {
		cur = nil // ran out; the clock has not noticed yet
	}
	if cur != nil && cur.Owner != owner {
		d.mu.Unlock()
		return labctl.Device{}, fmt.Errorf("%w: %s is reserved by %s until %s%s: ask them, or an operator may release it",
			labctl.ErrBusy, name, cur.Owner, cur.Until.Local().Format(time.DateTime), reasonSuffix(cur.Reason))
	}
	r := labctl.Reservation{Owner: owner, Reason: req.Reason, Since: now, Until: now.Add(req.For)}
	if cur != nil {
		r.Since = cur.Since
		if r.Reason == "" {
			r.Reason = cur.Reason
		}
	}
	dev.reservation = &r
	d.refreshLocked(dev, "")
	d.wakeClock()
	inCheck := dev.check
	d.mu.Unlock()

	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	if err := d.store.SetReservation(sctx, store.Reservation{Device: name, Owner: r.Owner, Reason: r.Reason, Since: r.Since, Until: r.Until}); err != nil {
		d.mu.Lock()
		if dev.reservation == &r {
			dev.reservation = cur
		}
		d.scheduleLocked()
		d.mu.Unlock()
		return labctl.Device{}, fmt.Errorf("reserve %s: %w", name, err)
	}
	verb := "reserved"
	if cur != nil {
		verb = "reservation renewed"
	}
	d.log.Info("device "+verb, "device", name, "by", owner, "until", r.Until, "reason", r.Reason)
	// A health check already under way ends first: when the call returns,
	// the node is the holder's alone.
	if inCheck != nil {
		if _, err := waitCheck(ctx, inCheck); err != nil {
			return labctl.Device{}, err
		}
	}
	return d.Device(ctx, name)
}

// Release ends a device's reservation; its owner or an operator may
// (labctl.Service).
func (d *Daemon) Release(ctx context.Context, name string) (_ labctl.Device, err error) {
	defer func() { d.audit(ctx, labctl.AuditEntry{Action: labctl.AuditRelease, Device: name}, err) }()
	if _, p, ok, err := d.remote(name); ok {
		if err != nil {
			return labctl.Device{}, err
		}
		return p.Release(ctx, name)
	}
	dev, err := d.device(name)
	if err != nil {
		return labctl.Device{}, err
	}
	caller := callerName(ctx)
	d.reserveMu.Lock()
	defer d.reserveMu.Unlock()
	d.mu.Lock()
	cur := dev.reservation
	if cur == nil {
		d.mu.Unlock()
		return labctl.Device{}, fmt.Errorf("%w: %s is not reserved", labctl.ErrBusy, name)
	}
	if cur.Owner != caller {
		if err := labctl.Authorize(ctx, labctl.RoleOperator, fmt.Sprintf("releasing %s's reservation of %s", cur.Owner, name)); err != nil {
			d.mu.Unlock()
			return labctl.Device{}, err
		}
	}
	d.mu.Unlock()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	if err := d.store.DeleteReservation(sctx, name); err != nil {
		return labctl.Device{}, fmt.Errorf("release %s: %w", name, err)
	}
	d.mu.Lock()
	if dev.reservation == cur {
		dev.reservation = nil
		d.refreshLocked(dev, "released by "+caller)
		d.scheduleLocked()
	}
	d.mu.Unlock()
	d.log.Info("device released", "device", name, "by", caller, "owner", cur.Owner)
	return d.Device(ctx, name)
}

// callerName is the caller's token name; "local" for an in-process
// caller without one.
func callerName(ctx context.Context) string {
	if name := labctl.CallerFrom(ctx); name != "" {
		return name
	}
	return "local"
}

func reasonSuffix(reason string) string {
	if reason == "" {
		return ""
	}
	return " (" + reason + ")"
}

// mayTakeLocked reports whether a reservation lets the job run on the
// device: none holds it, or the job is its owner's and names it.
func (d *Daemon) mayTakeLocked(dev *device, j *job) bool {
	r := dev.reservation
	if r == nil || !d.now().Before(r.Until) {
		return true
	}
	return j.spec.Device == dev.name && j.rec.Submitter == r.Owner
}

// waitReasonLocked says why a queued job waits: what the devices that
// fit it are doing.
func (d *Daemon) waitReasonLocked(j *job) string {
	var fits []*device
	if j.spec.Device != "" {
		if dev := d.devices[j.spec.Device]; dev != nil {
			fits = append(fits, dev)
		}
	} else {
		for _, dev := range d.byType[j.spec.DeviceType] {
			if dev.cfg.HasTags(j.spec.Tags) {
				fits = append(fits, dev)
			}
		}
	}
	if len(fits) == 0 {
		return "waiting: no device fits it"
	}
	var why []string
	for i, dev := range fits {
		if i == 3 {
			why = append(why, fmt.Sprintf("%d more", len(fits)-3))
			break
		}
		if r := dev.reservation; r != nil && !d.mayTakeLocked(dev, j) {
			why = append(why, fmt.Sprintf("%s is reserved by %s until %s%s", dev.name, r.Owner, r.Until.Local().Format(time.DateTime), reasonSuffix(r.Reason)))
			continue
		}
		switch {
		case !d.serving || d.stopping:
			why = append(why, "the daemon is not taking jobs")
		case dev.maintenance:
			why = append(why, dev.name+" is in maintenance")
		case dev.job != nil:
			why = append(why, fmt.Sprintf("%s runs job %d", dev.name, dev.job.rec.ID))
		case dev.check != nil:
			why = append(why, dev.name+" is being health-checked")
		case !dev.healthy || dev.nodeErr != nil:
			why = append(why, dev.name+" is offline")
		case dev.busy || dev.manual > 0:
			why = append(why, dev.name+" is busy")
		default:
			why = append(why, dev.name+" is idle: jobs ahead in the queue take it first")
		}
	}
	return "waiting: " + strings.Join(why, "; ")
}

// endedReservation is a reservation that ran out, to remove from the
// store.
type endedReservation struct {
	device string
	res    *labctl.Reservation
}

// reservationsEndLocked ends the reservations that ran out, and returns
// them and when the next one runs out.
func (d *Daemon) reservationsEndLocked(now time.Time) (ended []endedReservation, next time.Time) {
	for _, name := range d.names {
		dev := d.devices[name]
		r := dev.reservation
		if r == nil {
			continue
		}
		if !now.Before(r.Until) {
			ended = append(ended, endedReservation{name, r})
			dev.reservation = nil
			d.log.Info("reservation expired", "device", name, "owner", r.Owner)
			d.refreshLocked(dev, fmt.Sprintf("reservation of %s expired", r.Owner))
			continue
		}
		if next.IsZero() || r.Until.Before(next) {
			next = r.Until
		}
	}
	return ended, next
}

// forgetReservation removes an expired reservation from the store, unless
// the device was reserved again meanwhile (the new one replaced it).
func (d *Daemon) forgetReservation(name string, r *labctl.Reservation) {
	d.reserveMu.Lock()
	defer d.reserveMu.Unlock()
	d.mu.Lock()
	again := d.devices[name].reservation != nil
	d.mu.Unlock()
	if again {
		return
	}
	sctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if err := d.store.DeleteReservation(sctx, name); err != nil {
		d.log.Error("remove an expired reservation", "device", name, "owner", r.Owner, "err", err)
	}
}

// loadReservations restores the reservations the store keeps (expired
// ones end when Serve starts).
func (d *Daemon) loadReservations(ctx context.Context) error {
	saved, err := d.store.Reservations(ctx)
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	for _, s := range saved {
		dev := d.devices[s.Device]
		if dev == nil {
			continue // the device left the lab; the row is harmless
		}
		dev.reservation = &labctl.Reservation{Owner: s.Owner, Reason: s.Reason, Since: s.Since, Until: s.Until}
	}
	return nil
}
