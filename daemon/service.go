package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/dispatcher"
	"github.com/labctl/labctl/jobs"
	"github.com/labctl/labctl/results"
	"github.com/labctl/labctl/store"
)

var _ labctl.Service = (*Daemon)(nil)

// Submit checks a job file against the lab and queues it.
//
// Local image paths are read by the daemon: a relative one is resolved
// against req.Dir, and the file must be a regular file the daemon can read
// and that every user may read (the daemon publishes it to a node, so it
// must not publish a file only it may read, such as /etc/shadow).
func (d *Daemon) Submit(ctx context.Context, req labctl.SubmitRequest) (queued labctl.Job, err error) {
	defer func() { d.audit(ctx, auditSubmit(req, queued), err) }()
	spec, err := parseJob(req.File, req.Spec, req.Dir)
	if err != nil {
		return labctl.Job{}, err
	}
	err = d.checkPlacement(spec)
	if err != nil && d.host != nil {
		// Another host may have registered its devices since this host
		// last read the lab: read it again before refusing.
		if err := d.refreshLab(ctx); err != nil {
			return labctl.Job{}, storeErr(err)
		}
		err = d.checkPlacement(spec)
	}
	if err != nil {
		return labctl.Job{}, fmt.Errorf("%w: %s: %v", labctl.ErrInvalid, req.File, err)
	}
	if err := checkFiles(spec); err != nil {
		return labctl.Job{}, fmt.Errorf("%w: %s: %v", labctl.ErrInvalid, req.File, err)
	}
	if err := d.checkNotify(ctx, spec.Notify); err != nil {
		return labctl.Job{}, fmt.Errorf("%w: %s: %v", labctl.ErrInvalid, req.File, err)
	}
	if err := d.checkSave(ctx, spec); err != nil {
		return labctl.Job{}, err
	}
	d.mu.Lock()
	stopping := d.stopping
	d.mu.Unlock()
	if stopping {
		return labctl.Job{}, fmt.Errorf("%w: the daemon is stopping", labctl.ErrUnavailable)
	}
	if reason := d.ends.unavailable(); reason != "" {
		return labctl.Job{}, unavailable(reason)
	}
	// The job is committed before its submitter hears its ID; a client
	// that hangs up meanwhile does not undo it. If the scheduler gives it
	// a device now, it is stored claimed for that device (under the
	// host's lease, as a worker's claim): other hosts never see it queued.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	sub := store.Job{
		Name: spec.Name, File: req.File, Dir: req.Dir, Spec: req.Spec,
		Device: spec.Device, DeviceType: spec.DeviceType, Tags: spec.Tags, Priority: string(spec.Priority),
		Submitter: labctl.CallerFrom(ctx), Submitted: d.now(),
	}
	d.mu.Lock()
	j := d.newJob(sub, spec)
	dev := d.placeLocked(j)
	d.mu.Unlock()
	if dev != nil {
		sub.RunDevice, sub.Started = dev.name, d.now()
	}
	rec, err := d.store.CreateJob(sctx, sub)
	if err != nil {
		if dev != nil {
			go d.settleClaim(j, sub)
		} else {
			j.cancel(nil)
		}
		return labctl.Job{}, unavailable("the store cannot record the job: " + err.Error())
	}
	// The log line is written before the job is queued, not under d.mu:
	// a file write under the daemon's lock makes every submit and every
	// job start queue behind it when 400 arrive at once.
	d.log.Info("job queued", "job", rec.ID, "name", rec.Name, "priority", rec.Priority, "by", rec.Submitter)
	d.mu.Lock()
	defer d.mu.Unlock()
	j.rec, j.seq = rec, rec.ID
	if rec.State == store.Running {
		// Queued and taken off the queue at once: its worker starts it.
		d.jobs[rec.ID] = j
		d.observeQueuedLocked(rec)
		dev.tasks <- task{job: j}
		d.refreshLocked(dev, "")
		return d.viewLocked(j.rec, j), nil
	}
	if dev != nil {
		// The claim did not hold (the host's lease): queued, as any job.
		d.releaseLocked(j)
	}
	if !d.fitsHere(spec) {
		// Another host's devices take it: it learns of it from the store.
		d.observeQueuedLocked(j.rec)
		return d.viewLocked(j.rec, nil), nil
	}
	if held := d.jobs[rec.ID]; held != nil {
		// This host read it from the store's queue (hearing of its own
		// submit) before this call got here: it is queued once.
		j.cancel(nil)
		return d.viewLocked(held.rec, held), nil
	}
	d.jobs[rec.ID] = j
	d.enqueueLocked(j)
	d.observeQueuedLocked(j.rec)
	d.scheduleLocked()
	return d.viewLocked(j.rec, j), nil
}

// parseJob parses a job file as submitted, its relative paths taken
// against dir.
func parseJob(file, text, dir string) (*jobs.Job, error) {
	if file == "" {
		file = "job.toml"
	}
	spec, err := jobs.Parse(file, []byte(text), dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", labctl.ErrInvalid, err)
	}
	return spec, nil
}

// parseStored parses a job from the store as it was submitted, its local
// files' symbolic links resolved as at submit (see checkFiles).
func parseStored(rec store.Job) (*jobs.Job, error) {
	spec, err := parseJob(rec.File, rec.Spec, rec.Dir)
	if err == nil {
		dispatcher.ResolveFiles(spec)
	}
	return spec, err
}

// checkPlacement checks that the lab has a device the job can run on
// (this host's, or another host's as this host last read the lab).
func (d *Daemon) checkPlacement(spec *jobs.Job) error {
	if d.fitsLab(spec) {
		return nil
	}
	if spec.Device != "" {
		if _, ok := d.devices[spec.Device]; !ok {
			return fmt.Errorf("device: no device %q in lab %s", spec.Device, d.cfg.Lab.Name)
		}
		return nil
	}
	if !d.fitsHere(spec) {
		return fmt.Errorf("device_type: no device of type %q with tags %v in lab %s", spec.DeviceType, spec.Tags, d.cfg.Lab.Name)
	}
	return nil
}

// checkFiles checks the job's local image and digest files as the job
// will open them (dispatcher.OpenLocal: a regular file every user may
// read), after resolving their symbolic links once, here: the job keeps
// the resolved paths and opens them again when it starts without
// following a link in their last component, and checks the descriptor it
// serves again.
func checkFiles(spec *jobs.Job) error {
	dispatcher.ResolveFiles(spec)
	if spec.Boot.Method.Diskless() {
		return dispatcher.CheckBootFiles(spec, true)
	}
	if spec.HasDeploy() && !spec.Deploy.ImageIsURL() {
		f, err := dispatcher.OpenLocal("deploy.image", spec.Deploy.Image, true)
		if err != nil {
			return err
		}
		f.Close()
	}
	if spec.Deploy.SHA256File != "" {
		if _, err := dispatcher.Digest(spec.Deploy, true); err != nil {
			return err
		}
	}
	return nil
}

// checkSave admits a job that saves a disk: it writes an image into the
// lab's save directory, where jobs deploy from, so it needs an operator;
// and its image must not exist yet (checked again when it is stored).
func (d *Daemon) checkSave(ctx context.Context, spec *jobs.Job) error {
	if spec.Save == nil {
		return nil
	}
	if err := labctl.Authorize(ctx, labctl.RoleOperator, "saving a disk image ([save])"); err != nil {
		return err
	}
	path := dispatcher.SavePath(d.cfg.Lab.Images.SaveDir, spec)
	if path == "" {
		return fmt.Errorf("%w: save: lab %s has no save directory ([images] save_dir)", labctl.ErrInvalid, d.cfg.Lab.Name)
	}
	if err := dispatcher.CheckSaveTarget(path); err != nil {
		return fmt.Errorf("%w: save.output: %v", labctl.ErrInvalid, err)
	}
	return nil
}

// imagePolicy is what jobs' images may be: local files every user may
// read, URLs within the lab's [images] limits.
func (d *Daemon) imagePolicy() dispatcher.ImagePolicy {
	return dispatcher.ImagePolicy{PublicFiles: true, AllowNetworks: d.cfg.Lab.Images.Networks, MaxDownload: d.cfg.Lab.Images.MaxDownload()}
}

// Jobs lists jobs, oldest first.
func (d *Daemon) Jobs(ctx context.Context, f labctl.JobFilter) ([]labctl.Job, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	recs, err := d.store.Jobs(ctx, store.JobFilter{States: f.States, Device: f.Device, Limit: f.Limit, Before: f.Before})
	if err != nil {
		return nil, storeErr(err)
	}
	out := make([]labctl.Job, 0, len(recs))
	d.mu.Lock()
	defer d.mu.Unlock()
	var place map[*job]int
	if len(d.queue) > 0 {
		place = make(map[*job]int, len(d.queue))
		for i, j := range d.queue {
			place[j] = i + 1
		}
	}
	for _, rec := range recs {
		j := d.jobs[rec.ID]
		v := d.viewLocked(rec, j)
		if v.State == store.Queued {
			v.Position = place[j]
		}
		if len(f.States) > 0 && !slices.Contains(f.States, v.State) {
			continue // ended here, the store has not taken the end yet
		}
		v.Result = nil
		out = append(out, v)
	}
	return out, nil
}

// Job returns one job, with its results once it has finished.
func (d *Daemon) Job(ctx context.Context, id int64) (labctl.Job, error) {
	rec, err := d.store.Job(ctx, id)
	if err != nil {
		return labctl.Job{}, storeErr(err)
	}
	d.mu.Lock()
	j := d.jobs[id]
	v := d.viewLocked(rec, j)
	if v.State == store.Queued {
		if i := slices.Index(d.queue, j); i >= 0 {
			v.Position = i + 1
		}
	}
	d.mu.Unlock()
	if err := d.attemptsView(ctx, &v); err != nil {
		return labctl.Job{}, err
	}
	return v, nil
}

// viewLocked is a job for the API: its record, or the live one if the job
// is queued or running here (newer than the store's, and with progress).
func (d *Daemon) viewLocked(rec store.Job, j *job) labctl.Job {
	if j != nil {
		rec = j.rec
	} else if r, ok := d.ends.record(rec.ID); ok {
		rec = r
	}
	v := labctl.Job{
		ID: rec.ID, Name: rec.Name, Device: rec.Device, DeviceType: rec.DeviceType, Tags: rec.Tags,
		Priority: rec.Priority, Submitter: rec.Submitter, State: rec.State, Outcome: rec.Outcome, Reason: rec.Reason,
		Submitted: rec.Submitted, Host: rec.Host,
	}
	if rec.RunDevice != "" {
		v.Device = rec.RunDevice
	}
	if !rec.Started.IsZero() {
		t := rec.Started
		v.Started = &t
	}
	if !rec.Finished.IsZero() {
		t := rec.Finished
		v.Finished = &t
	}
	if j != nil && rec.State == store.Running {
		p, _ := j.progress()
		v.Phase, v.Transfer = p.Phase, p.Transfer
		if at := j.phaseStart(); !at.IsZero() {
			v.PhaseSince = &at
		}
	}
	if rec.State == store.Finished {
		v.Result = recordOf(rec)
	}
	if j != nil && rec.State == store.Queued {
		v.Reason = d.waitReasonLocked(j)
	}
	return v
}

// recordOf is a finished job's results: what the dispatcher wrote, or
// for a job that never ran, a record that says why.
func recordOf(rec store.Job) *results.Job {
	if len(rec.Result) > 0 {
		if res, err := results.ReadJSON(bytes.NewReader(rec.Result)); err == nil {
			return res
		}
	}
	spec, err := parseStored(rec)
	if err != nil {
		spec = &jobs.Job{Name: rec.Name}
	}
	res := dispatcher.NewRecord(fmt.Sprint(rec.ID), spec, rec.RunDevice, rec.Submitted)
	dispatcher.EndRecord(res, dispatcher.End{Outcome: labctl.Outcome(rec.Outcome), Reason: rec.Reason}, rec.Finished, "")
	return res
}

// Cancel cancels a job. A queued job ends canceled at once; a running one
// is stopped (its node finalized: powered off, PXE entry local) and Cancel
// returns once it has ended, or when ctx ends.
func (d *Daemon) Cancel(ctx context.Context, id int64) (canceled labctl.Job, err error) {
	defer func() {
		d.audit(ctx, labctl.AuditEntry{Action: labctl.AuditCancel, Job: id, Device: canceled.Device}, err)
	}()
	caller := labctl.CallerFrom(ctx)
	d.mu.Lock()
	j := d.jobs[id]
	if j == nil {
		d.mu.Unlock()
		rec, err := d.store.Job(ctx, id)
		if err != nil {
			return labctl.Job{}, storeErr(err)
		}
		if r, ok := d.ends.record(id); ok {
			rec = r
		}
		if rec.State == store.Finished {
			return labctl.Job{}, fmt.Errorf("%w: job %d already ended %s", labctl.ErrBusy, id, rec.Outcome)
		}
		if d.host != nil {
			return d.cancelElsewhere(ctx, rec)
		}
		return labctl.Job{}, fmt.Errorf("%w: job %d is %s but not known to this daemon", labctl.ErrBusy, id, rec.State)
	}
	if j.rec.Submitter != caller {
		if err := labctl.Authorize(ctx, labctl.RoleOperator, fmt.Sprintf("canceling job %d of %s", id, j.rec.Submitter)); err != nil {
			d.mu.Unlock()
			return labctl.Job{}, err
		}
	}
	cause := dispatcher.CanceledBy{Caller: caller}
	if d.dequeueLocked(j) {
		delete(d.jobs, id)
		d.mu.Unlock()
		j.cancel(cause)
		d.finishQueued(j, cause)
		close(j.done)
		d.log.Info("job canceled", "job", id, "by", caller)
		return d.Job(ctx, id)
	}
	d.mu.Unlock()
	d.log.Info("canceling job", "job", id, "by", caller)
	j.cancel(cause)
	select {
	case <-j.done:
	case <-ctx.Done():
		return labctl.Job{}, fmt.Errorf("job %d: waiting for it to end: %w", id, context.Cause(ctx))
	}
	return d.Job(ctx, id)
}

// JobLog opens the job's log (from the host that ran it).
func (d *Daemon) JobLog(ctx context.Context, id int64) (io.ReadCloser, error) {
	rec, err := d.store.Job(ctx, id)
	if err != nil {
		return nil, storeErr(err)
	}
	if p, ok, err := d.jobHost(rec); ok {
		if err != nil {
			return nil, err
		}
		return p.JobLog(ctx, id)
	}
	f, err := os.Open(filepath.Join(d.jobDir(id), "job.log"))
	if errors.Is(err, os.ErrNotExist) {
		return io.NopCloser(strings.NewReader("")), nil
	}
	return f, err
}

// Artifact opens one of the files a finished job fetched back, by the
// name its results list: nothing else in the job's directory.
func (d *Daemon) Artifact(ctx context.Context, id int64, name string) (io.ReadCloser, error) {
	v, err := d.Job(ctx, id)
	if err != nil {
		return nil, err
	}
	if v.Result == nil || !slices.Contains(v.Result.Artifacts, name) {
		return nil, fmt.Errorf("%w: job %d has no artifact %q", labctl.ErrNotFound, id, name)
	}
	return os.Open(filepath.Join(d.jobDir(id), filepath.FromSlash(name)))
}

// Resubmit queues a job's file again, from the directory it was
// submitted from, as the caller's job.
func (d *Daemon) Resubmit(ctx context.Context, id int64) (labctl.Job, error) {
	rec, err := d.store.Job(ctx, id)
	if err != nil {
		return labctl.Job{}, storeErr(err)
	}
	return d.Submit(ctx, labctl.SubmitRequest{File: rec.File, Dir: rec.Dir, Spec: rec.Spec})
}

// JUnit returns the JUnit XML report a finished job's run wrote.
func (d *Daemon) JUnit(ctx context.Context, id int64) ([]byte, error) {
	rec, err := d.store.Job(ctx, id)
	if err != nil {
		return nil, storeErr(err)
	}
	if r, ok := d.ends.record(id); ok {
		rec = r
	}
	if rec.State != store.Finished {
		return nil, fmt.Errorf("%w: job %d is %s: no JUnit report yet", labctl.ErrBusy, id, rec.State)
	}
	p, remote, err := d.jobHost(rec)
	switch {
	case remote && err == nil:
		return p.JUnit(ctx, id)
	case !remote:
		b, err := os.ReadFile(filepath.Join(d.jobDir(id), results.JUnitFile))
		if !errors.Is(err, os.ErrNotExist) {
			return b, err
		}
	}
	// The job wrote no report (it never ran: canceled or timed out in the
	// queue), or its host is down (it ended the job "host NAME lost"):
	// the report of what the store knows, so that CI still gets one.
	var buf bytes.Buffer
	if err := recordOf(rec).WriteJUnit(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Devices lists the devices by name.
func (d *Daemon) Devices(ctx context.Context) ([]labctl.Device, error) {
	d.mu.Lock()
	out := make([]labctl.Device, 0, len(d.names))
	for _, name := range d.names {
		out = append(out, d.viewDeviceLocked(d.devices[name]))
	}
	d.mu.Unlock()
	// The other hosts' devices, read from the store without d.mu held.
	remote, err := d.remoteDevices(ctx)
	if err != nil {
		return nil, err
	}
	out = append(out, remote...)
	slices.SortFunc(out, func(a, b labctl.Device) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// viewDeviceLocked is one of this host's devices for the API.
func (d *Daemon) viewDeviceLocked(dev *device) labctl.Device {
	v := dev.viewLocked()
	v.Host = d.hostName()
	return v
}

// Device returns one device.
func (d *Daemon) Device(ctx context.Context, name string) (labctl.Device, error) {
	if _, p, ok, err := d.remote(name); ok {
		if err != nil {
			// Its host is down: what the store knows.
			return d.remoteDevice(ctx, name, err)
		}
		return p.Device(ctx, name)
	}
	dev, err := d.device(name)
	if err != nil {
		return labctl.Device{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	v := d.viewDeviceLocked(dev)
	for i := len(dev.healthHistory) - 1; i >= 0; i-- {
		v.HealthHistory = append(v.HealthHistory, dev.healthHistory[i])
	}
	return v, nil
}

func (d *Daemon) device(name string) (*device, error) {
	dev := d.devices[name] // the map never changes after New
	if dev == nil {
		return nil, fmt.Errorf("%w: no device %q in lab %s", labctl.ErrNotFound, name, d.cfg.Lab.Name)
	}
	return dev, nil
}

// Maintenance takes a device out of service: it gets no jobs until it is
// put online; a job running on it finishes first.
func (d *Daemon) Maintenance(ctx context.Context, name, reason string) (view labctl.Device, err error) {
	asked := labctl.AuditEntry{Action: labctl.AuditMaintenance, Device: name, Detail: reason}
	defer func() { d.audit(ctx, asked, err) }()
	if _, p, ok, err := d.remote(name); ok {
		if err != nil {
			return labctl.Device{}, err
		}
		return p.Maintenance(ctx, name, reason)
	}
	dev, err := d.device(name)
	if err != nil {
		return labctl.Device{}, err
	}
	who := labctl.CallerFrom(ctx)
	if reason == "" {
		reason = "set by " + who
	} else {
		reason += " (" + who + ")"
	}
	d.consoles.Park(name, true)
	d.mu.Lock()
	dev.maintenance, dev.maintReason = true, reason
	d.refreshLocked(dev, "")
	c := dev.check
	d.mu.Unlock()
	// A health check already under way ends first: when the call returns,
	// labctl has let go of the node.
	if c != nil {
		if _, err := waitCheck(ctx, c); err != nil {
			return labctl.Device{}, err
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return dev.viewLocked(), nil
}

// Online puts a device back in service after a health check (at once if a
// job is still running on it: the device is then free when the job ends).
func (d *Daemon) Online(ctx context.Context, name string) (view labctl.Device, err error) {
	defer func() { d.audit(ctx, labctl.AuditEntry{Action: labctl.AuditOnline, Device: name}, err) }()
	if _, p, ok, err := d.remote(name); ok {
		if err != nil {
			return labctl.Device{}, err
		}
		return p.Online(ctx, name)
	}
	dev, err := d.device(name)
	if err != nil {
		return labctl.Device{}, err
	}
	d.consoles.Park(name, false)
	d.mu.Lock()
	dev.maintenance, dev.maintReason = false, ""
	c := d.requestCheckLocked(dev, "online (by "+labctl.CallerFrom(ctx)+")")
	d.refreshLocked(dev, "")
	d.mu.Unlock()
	if c != nil {
		if _, err := waitCheck(ctx, c); err != nil {
			return labctl.Device{}, err
		}
	}
	return d.Device(ctx, name)
}

// CheckHealth runs the device's health check (or joins the one running)
// and returns the device after it.
func (d *Daemon) CheckHealth(ctx context.Context, name string) (view labctl.Device, err error) {
	defer func() { d.audit(ctx, auditHealth(name, view), err) }()
	if _, p, ok, err := d.remote(name); ok {
		if err != nil {
			return labctl.Device{}, err
		}
		return p.CheckHealth(ctx, name)
	}
	dev, err := d.device(name)
	if err != nil {
		return labctl.Device{}, err
	}
	d.mu.Lock()
	c := d.requestCheckLocked(dev, "asked by "+labctl.CallerFrom(ctx))
	var running int64
	if dev.job != nil {
		running = dev.job.rec.ID
	}
	d.mu.Unlock()
	if c == nil {
		return labctl.Device{}, fmt.Errorf("%w: %s runs job %d: check it when the job has ended", labctl.ErrBusy, name, running)
	}
	if _, err := waitCheck(ctx, c); err != nil {
		return labctl.Device{}, err
	}
	return d.Device(ctx, name)
}

// Power runs a power operation on a node. While a job or a health check
// owns the node only status is allowed, unless req.Force. No job starts on
// the node while the operation runs.
func (d *Daemon) Power(ctx context.Context, name string, req labctl.PowerRequest) (resp labctl.PowerResponse, err error) {
	if req.Op != labctl.PowerStatus {
		defer func() { d.audit(ctx, auditNode(labctl.AuditPower, name, req.Op, req.Force), err) }()
	}
	if _, p, ok, err := d.remote(name); ok {
		if err != nil {
			return labctl.PowerResponse{}, err
		}
		return p.Power(ctx, name, req)
	}
	dev, release, err := d.manual(name, req.Op == labctl.PowerStatus || req.Force)
	if err != nil {
		return labctl.PowerResponse{}, err
	}
	defer release()
	pctx, cancel := context.WithTimeout(ctx, dev.cfg.Settings.Timeouts.Power)
	defer cancel()
	if req.Op != labctl.PowerStatus {
		if req.Op != string(labctl.PowerOff) {
			d.ensureConsole(pctx, dev)
		}
		d.log.Info("power", "device", name, "op", req.Op, "by", labctl.CallerFrom(ctx), "force", req.Force)
	}
	return labctl.ApplyPower(pctx, dev.node.Power, name, req)
}

// SetBootDevice sets a node's next boot device, with the rules of Power.
func (d *Daemon) SetBootDevice(ctx context.Context, name string, req labctl.BootdevRequest) (resp labctl.BootdevResponse, err error) {
	defer func() { d.audit(ctx, auditNode(labctl.AuditBootdev, name, string(req.Device), req.Force), err) }()
	if _, p, ok, err := d.remote(name); ok {
		if err != nil {
			return labctl.BootdevResponse{}, err
		}
		return p.SetBootDevice(ctx, name, req)
	}
	dev, release, err := d.manual(name, req.Force)
	if err != nil {
		return labctl.BootdevResponse{}, err
	}
	defer release()
	pctx, cancel := context.WithTimeout(ctx, dev.cfg.Settings.Timeouts.Power)
	defer cancel()
	d.log.Info("bootdev", "device", name, "boot", req.Device, "by", labctl.CallerFrom(ctx), "force", req.Force)
	return labctl.ApplyBootDevice(pctx, dev.node.Power, name, req)
}

// manual starts a person's operation on a node: refused while a job or a
// health check owns it, unless allowed; no job starts until release.
func (d *Daemon) manual(name string, allowed bool) (*device, func(), error) {
	dev, err := d.device(name)
	if err != nil {
		return nil, nil, err
	}
	if dev.nodeErr != nil {
		return nil, nil, fmt.Errorf("%w: %s: %v", labctl.ErrDevice, name, dev.nodeErr)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !allowed {
		switch {
		case dev.job != nil:
			return nil, nil, fmt.Errorf("%w: %s runs job %d, which owns the node (--force to do it anyway)", labctl.ErrBusy, name, dev.job.rec.ID)
		case dev.check != nil:
			return nil, nil, fmt.Errorf("%w: %s is being health-checked (--force to do it anyway)", labctl.ErrBusy, name)
		}
	}
	dev.manual++
	return dev, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		dev.manual--
		d.scheduleLocked()
	}, nil
}

// storeErr maps the store's errors to the API's: a store that cannot
// answer makes the daemon unavailable (503, with the reason).
func storeErr(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("%w: %v", labctl.ErrNotFound, err)
	case errors.Is(err, context.Canceled):
		return err
	}
	return fmt.Errorf("%w: the store cannot answer: %v", labctl.ErrUnavailable, err)
}
