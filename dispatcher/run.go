package dispatcher

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/internal/statedir"
	"github.com/labctl/labctl/jobs"
	"github.com/labctl/labctl/results"
	"github.com/labctl/labctl/sol"
)

// Job is one job to run on one node, with everything needed to reach it.
type Job struct {
	// ID identifies the run: in the job directory, the log and results.
	ID   string
	Spec *jobs.Job
	// Device is the node's name; Settings are its device type's settings
	// with the device's overrides applied.
	Device   string
	Settings devices.Settings
	Power    labctl.Power
	// Console is the node's console session, open. The job types on it as
	// its only writer while it runs (taking over from anyone typing) and
	// records what it reads and writes in the job log; others may watch.
	// The caller owns it: the job does not close it.
	Console *sol.Session
	Netboot labctl.Netboot
	// Dir is the job directory: job.log, results.json, junit.xml and the
	// artifacts go there. It is created if missing.
	Dir string
	// CacheDir keeps downloaded URL images and image sizes between jobs;
	// "" disables the cache.
	CacheDir string
	// Images is what the job's image may be and where it may come from.
	Images ImagePolicy
	// SaveTo is where a job with [save] stores the node's disk: a path
	// ending in .img.zst on this host, normally the lab's save directory
	// joined with save.output (see SavePath). The directory is created
	// if needed; an existing file is never replaced.
	SaveTo string
	// MaxLog caps job.log in bytes (see Log.SetMaxSize); 0 means
	// DefaultMaxLog.
	MaxLog int64
	// Progress, if set, hears about phases and the image transfer.
	Progress Progress
	// Events, if set, receives each dispatcher event line as it is logged
	// (for a live view); it must not block.
	Events func(line string)
	// Log receives the dispatcher's own diagnostics (the daemon log); nil
	// discards them.
	Log *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// FinalizeTimeout bounds the clean-up that always runs at the end of a job
// (power off, boot entry back to local), even after a cancel.
const FinalizeTimeout = 2 * time.Minute

// Run runs the job to its end and returns its record, which is also
// written to the job directory. Run always finalizes: the node is powered
// off (unless the job keeps it on) and its boot entry is put back to local
// boot, also when the job fails, times out or ctx is canceled.
//
// The outcome is complete when every test step ended as expected, failed
// when one did not, incomplete when the lab went wrong (the record names
// the action and why), and canceled when it ran out of time. When ctx is
// canceled, its cause decides (see Stopped): canceled by a person,
// incomplete when the dispatcher shuts down under it.
func Run(ctx context.Context, j Job) *results.Job {
	r := newRunner(j)
	defer func() { r.log.Close() }() // r.log is set during run
	r.run(ctx)
	return r.res
}

// runner is the state of one Run.
type runner struct {
	Job
	set       devices.Settings
	timeouts  jobs.Timeouts
	log       *Log
	node      *Driver
	res       *results.Job
	session   *sol.Session
	writer    *sol.Writer
	tag       string // random, in the node's shell prompt and markers
	seq       int    // marker counter
	testShell *shell
	// minGap is the least time between characters the console turned out
	// to need (see typeVerified); it only grows during a job.
	minGap time.Duration
	// echoWindow is how many characters echo pacing may have on their
	// way at once: the device type's, 1 once the console lost one.
	echoWindow int
	// echoTimeout is how long echo pacing waits for an echo: the device
	// type's, longer once an echo did not come in time.
	echoTimeout time.Duration
	// failure is the first infrastructure error and the action it hit.
	failure error
	action  string
	// timedOut says the job's own timeout ended it.
	timedOut bool
	// releases undo what the job set up for the node to use until its
	// end (a diskless root's NFS export); finish runs them, last first,
	// after the node is powered off.
	releases []func() error
}

func newRunner(j Job) *runner {
	if j.Now == nil {
		j.Now = time.Now
	}
	if j.Progress == nil {
		j.Progress = noProgress{}
	}
	if j.Log == nil {
		j.Log = slog.New(slog.DiscardHandler)
	}
	b := make([]byte, 2)
	rand.Read(b)
	r := &runner{Job: j, set: j.Settings, timeouts: j.Spec.Timeouts(j.Settings.Timeouts), tag: hex.EncodeToString(b),
		echoWindow: j.Settings.Console.EchoWindow, echoTimeout: j.Settings.Console.EchoTimeout}
	r.res = NewRecord(j.ID, j.Spec, j.Device, j.Now())
	r.node = &Driver{Settings: j.Settings, Power: j.Power, Netboot: j.Netboot, Console: j.Console,
		Event: func(msg string) { r.event("%s", msg) }, Now: j.Now}
	return r
}

func (r *runner) run(ctx context.Context) {
	if err := os.MkdirAll(r.Dir, statedir.DirMode); err != nil {
		r.fail("setup", fmt.Errorf("job directory: %w", err))
		r.finish(ctx)
		return
	}
	log, err := openJobLog(filepath.Join(r.Dir, "job.log"), r.MaxLog, r.Now, r.Events)
	if err != nil {
		r.fail("setup", err)
		r.finish(ctx)
		return
	}
	r.log = log
	r.event("job %s (%s) on %s", r.ID, r.Spec.Name, r.Device)

	timeout := r.timeouts.Job
	jobCtx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("job timeout of %s exceeded", timeout))
	defer cancel()

	if r.connect(jobCtx) {
		if r.Spec.Boot.Method.Diskless() {
			// The test OS comes over the network: nothing to deploy.
			r.phase(jobCtx, "boot", r.bootDiskless)
			r.phase(jobCtx, "test", r.test)
		} else {
			if r.Spec.HasDeploy() {
				r.phase(jobCtx, "deploy", r.deploy)
			}
			if r.Spec.HasDeploy() || len(r.Spec.Tests) > 0 {
				r.phase(jobCtx, "boot", r.boot)
				r.phase(jobCtx, "test", r.test)
			}
		}
		if r.Spec.Save != nil {
			r.phase(jobCtx, "save", r.save)
		}
	}
	r.timedOut = jobCtx.Err() != nil && ctx.Err() == nil
	r.finish(ctx)
}

// phase runs one phase unless the job already ended, and records its time.
func (r *runner) phase(ctx context.Context, name string, fn func(context.Context) error) {
	if r.failure != nil || ctx.Err() != nil {
		return
	}
	r.Progress.Phase(name)
	r.event("%s: start", name)
	start := r.Now()
	err := fn(ctx)
	p := results.Phase{Name: name, Duration: r.Now().Sub(start)}
	if err != nil {
		if cause := context.Cause(ctx); ctx.Err() != nil && cause != nil && cause != ctx.Err() {
			// The job's own deadline, not the action's, ended the wait.
			err = fmt.Errorf("%w (%v)", cause, err)
		}
		p.Error = err.Error()
		r.fail(name, err)
	}
	r.res.Phases = append(r.res.Phases, p)
	r.event("%s: done in %s", name, p.Duration.Round(10*time.Millisecond))
}

// fail records the first infrastructure error.
func (r *runner) fail(action string, err error) {
	if r.failure == nil {
		r.failure, r.action = err, action
	}
	if r.log != nil {
		r.event("%s: error: %v", action, err)
	}
}

// connect takes the console: the job becomes its writer and the job log
// follows it. The session stays open for the whole job, so that nothing
// the node prints is missed across power cycles.
func (r *runner) connect(ctx context.Context) bool {
	r.session = r.Console
	if err := r.session.Err(); err != nil {
		r.fail("connect", fmt.Errorf("console %s: %w", r.session.Target(), err))
		return false
	}
	r.log.Follow(r.session)
	w, err := r.session.Claim("job "+r.ID, true)
	if err != nil {
		r.fail("connect", err)
		return false
	}
	r.writer = w
	r.node.Keys = w
	r.event("console: %s", r.session.Target())
	return true
}

// finish runs finalize with its own deadline (the job's may be gone), sets
// the outcome and writes the record.
func (r *runner) finish(ctx context.Context) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), FinalizeTimeout)
	defer cancel()
	r.Progress.Phase("finalize")
	start := r.Now()
	ferr := r.finalize(fctx)
	for i := len(r.releases) - 1; i >= 0; i-- {
		if err := r.releases[i](); err != nil {
			r.event("finalize: error: %v", err)
			ferr = errors.Join(ferr, err)
		}
	}
	p := results.Phase{Name: "finalize", Duration: r.Now().Sub(start)}
	if ferr != nil {
		p.Error = ferr.Error()
	}
	r.res.Phases = append(r.res.Phases, p)

	end := r.outcome(ctx, ferr)
	if r.log != nil {
		r.event("job %s: %s%s", r.ID, end.Outcome, reasonSuffix(end.Reason))
	}
	if err := EndRecord(r.res, end, r.Now(), r.Dir); err != nil {
		r.Log.Error("write results", "job", r.ID, "err", err)
	}
}

func reasonSuffix(reason string) string {
	if reason == "" {
		return ""
	}
	return ": " + reason
}

// outcome decides how the job ended. A job that ctx stopped ends as its
// cause says (see Stopped); the job's own timeout cancels it.
func (r *runner) outcome(ctx context.Context, finalizeErr error) End {
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		end := Stopped(context.Cause(ctx))
		if r.action != "" {
			end.Action = r.action
		}
		return end
	case r.timedOut:
		// Out of time is the job's own limit, not the lab going wrong.
		if r.failure == nil {
			return End{Outcome: labctl.Canceled, Reason: "job timeout exceeded"}
		}
		return End{Outcome: labctl.Canceled, Reason: fmt.Sprintf("%s: %v", r.action, r.failure), Action: r.action}
	case r.failure != nil:
		return End{Outcome: labctl.Incomplete, Reason: fmt.Sprintf("%s: %v", r.action, r.failure), Action: r.action}
	case finalizeErr != nil:
		// The tests ran, but the node may be left on: the lab needs a look.
		return End{Outcome: labctl.Incomplete, Reason: fmt.Sprintf("finalize: %v", finalizeErr), Action: "finalize"}
	}
	for _, s := range r.res.Steps {
		if !s.Ok() {
			return End{Outcome: labctl.Failed, Reason: fmt.Sprintf("test step %s: %s", s.Name, s.Result)}
		}
	}
	return End{Outcome: labctl.Complete}
}

// finalize puts the node back (see Driver.Finalize) and gives the console
// back.
func (r *runner) finalize(ctx context.Context) error {
	err := r.node.Finalize(ctx, r.Spec.KeepPoweredOn && r.failure == nil && ctx.Err() == nil)
	if r.writer != nil {
		r.writer.Release()
	}
	return err
}

// event logs a dispatcher event to the job log.
func (r *runner) event(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if r.log != nil {
		r.log.Event(msg)
	}
	r.Log.Debug(msg, "job", r.ID)
}
