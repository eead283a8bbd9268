package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/store"
)

var _ labctl.AuditRecorder = (*Daemon)(nil)

// The audit trail: one entry per action a person takes through the
// daemon (submit, cancel, power, boot device, maintenance, online, health
// check, taking console write), allowed or not, with the caller's token,
// role and address from ctx. Package api records the requests it refuses
// itself through RecordRefused. Power status queries and reads are not
// actions and are not recorded.
//
// Recording never fails an action: an entry the store does not take is
// written to the daemon's log instead.

// audit records the caller's action e, which err refused, failed or
// (nil) let happen.
func (d *Daemon) audit(ctx context.Context, e labctl.AuditEntry, err error) {
	e.Result = labctl.AuditOK
	switch {
	case errors.Is(err, labctl.ErrForbidden):
		e.Result, e.Error = labctl.AuditRefused, err.Error()
	case err != nil:
		e.Result, e.Error = labctl.AuditFailed, err.Error()
	}
	d.record(ctx, e)
}

// RecordRefused implements labctl.AuditRecorder.
func (d *Daemon) RecordRefused(ctx context.Context, e labctl.AuditEntry) {
	e.Result = labctl.AuditRefused
	d.record(ctx, e)
}

// record appends e, by the caller in ctx, to the audit trail.
func (d *Daemon) record(ctx context.Context, e labctl.AuditEntry) {
	if e.Time.IsZero() {
		e.Time = d.now()
	}
	e.Who, e.Role, e.Remote = labctl.CallerFrom(ctx), labctl.RoleFrom(ctx), labctl.RemoteFrom(ctx)
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	_, err := d.store.AddAudit(wctx, store.AuditEntry{
		At: e.Time, Who: e.Who, Role: string(e.Role), Remote: e.Remote, Action: e.Action,
		Device: e.Device, Job: e.Job, Detail: e.Detail, Result: e.Result, Error: e.Error,
	})
	if err != nil {
		d.log.Error("audit entry not stored", "err", err, "at", e.Time, "who", e.Who, "role", e.Role, "remote", e.Remote,
			"action", e.Action, "device", e.Device, "job", e.Job, "detail", e.Detail, "result", e.Result, "error", e.Error)
	}
}

// consoleWriteTaken records that a person took write on a console (the
// broker's Config.WriteTaken). The broker calls it with the console
// locked, so the entry is stored on the side (in order); Serve waits for
// it.
func (d *Daemon) consoleWriteTaken(ctx context.Context, node, who, from string) {
	e := labctl.AuditEntry{Time: d.now(), Action: labctl.AuditConsoleWrite, Device: node, Result: labctl.AuditOK, Detail: "as " + who}
	if from != "" {
		e.Detail += ", forced from " + from
	}
	d.audits.add(ctx, d, e)
}

// auditQueue holds audit entries to store on the side, in the order they
// came: one goroutine stores them while there are any.
type auditQueue struct {
	mu       sync.Mutex
	pending  []pendingAudit
	draining bool
	wg       sync.WaitGroup
}

type pendingAudit struct {
	ctx context.Context
	e   labctl.AuditEntry
}

func (q *auditQueue) add(ctx context.Context, d *Daemon, e labctl.AuditEntry) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.pending = append(q.pending, pendingAudit{ctx, e})
	if q.draining {
		return
	}
	q.draining = true
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		for {
			q.mu.Lock()
			if len(q.pending) == 0 {
				q.draining = false
				q.mu.Unlock()
				return
			}
			p := q.pending[0]
			q.pending = q.pending[1:]
			q.mu.Unlock()
			d.record(p.ctx, p.e)
		}
	}()
}

// wait waits until the entries queued so far are stored.
func (q *auditQueue) wait() { q.wg.Wait() }

// Audit lists the audit trail's entries f selects, oldest first: the
// newest f.Limit (100 if 0).
func (d *Daemon) Audit(ctx context.Context, f labctl.AuditFilter) ([]labctl.AuditEntry, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	recs, err := d.store.Audit(ctx, store.AuditFilter{Device: f.Device, Who: f.Who, Since: f.Since, Limit: f.Limit})
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	out := make([]labctl.AuditEntry, 0, len(recs))
	for _, r := range recs {
		out = append(out, labctl.AuditEntry{
			ID: r.ID, Time: r.At, Who: r.Who, Role: labctl.Role(r.Role), Remote: r.Remote, Action: r.Action,
			Device: r.Device, Job: r.Job, Detail: r.Detail, Result: r.Result, Error: r.Error,
		})
	}
	return out, nil
}

// auditSubmit is the entry of a submission: the job file, and the job
// once queued.
func auditSubmit(req labctl.SubmitRequest, queued labctl.Job) labctl.AuditEntry {
	return labctl.AuditEntry{Action: labctl.AuditSubmit, Job: queued.ID, Device: queued.Device, Detail: req.File}
}

// auditHealth is the entry of a health check on demand, with its result.
func auditHealth(name string, view labctl.Device) labctl.AuditEntry {
	e := labctl.AuditEntry{Action: labctl.AuditHealth, Device: name}
	if h := view.Health; h != nil {
		e.Detail = "check failed"
		if h.OK {
			e.Detail = "check passed"
		}
	}
	return e
}

// auditNode is the entry of a power or boot device request.
func auditNode(action, name, what string, force bool) labctl.AuditEntry {
	if force {
		what += " (force)"
	}
	return labctl.AuditEntry{Action: action, Device: name, Detail: what}
}
