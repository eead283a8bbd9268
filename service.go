package labctl

import (
	"context"
	"io"
)

// Service is what a lab answers: the daemon implements it, and so does
// api.Client, which asks a daemon over HTTP; a command that works with
// either takes a Service. Methods return errors wrapping ErrInvalid,
// ErrNotFound, ErrBusy, ErrDevice or ErrUnavailable when the caller is at
// fault or the lab is; any other error is the daemon's own. The caller's
// token name is in ctx (CallerFrom).
type Service interface {
	Submit(ctx context.Context, req SubmitRequest) (Job, error)
	Jobs(ctx context.Context, f JobFilter) ([]Job, error)
	Job(ctx context.Context, id int64) (Job, error)
	// Cancel cancels a queued or running job; canceling a finished job is
	// ErrBusy.
	Cancel(ctx context.Context, id int64) (Job, error)
	// JobLog opens the job's log file as it is now.
	JobLog(ctx context.Context, id int64) (io.ReadCloser, error)
	// JUnit is the JUnit XML report the job wrote (ErrBusy before the
	// job has ended).
	JUnit(ctx context.Context, id int64) ([]byte, error)
	// Artifact opens a file the job fetched back from its node, by the
	// name its results list (artifacts/NAME).
	Artifact(ctx context.Context, id int64, name string) (io.ReadCloser, error)
	// Resubmit queues the job's file again, as the caller's new job.
	Resubmit(ctx context.Context, id int64) (Job, error)
	// Follow sends the job's log (from opts.Offset on, unless opts.NoLog),
	// its progress while it runs, and finally the ended job; it returns when
	// the job has ended (after sending End), when ctx ends, or when send
	// fails.
	Follow(ctx context.Context, id int64, opts FollowOptions, send func(Event) error) error
	Devices(ctx context.Context) ([]Device, error)
	Device(ctx context.Context, name string) (Device, error)
	// Maintenance takes the device out of service (after its current job).
	Maintenance(ctx context.Context, name, reason string) (Device, error)
	// Online puts a device back in service: it takes jobs once its health
	// check passes; Online returns after that check.
	Online(ctx context.Context, name string) (Device, error)
	// CheckHealth runs the device's health check now and returns the
	// device after it.
	CheckHealth(ctx context.Context, name string) (Device, error)
	// Reserve holds a device for the caller (or renews the caller's
	// hold); a device held by someone else is ErrBusy.
	Reserve(ctx context.Context, name string, req ReserveRequest) (Device, error)
	// Release ends a device's reservation: its owner or an operator may.
	Release(ctx context.Context, name string) (Device, error)
	NodeControl
	// Audit lists the audit trail's entries f selects, oldest first.
	Audit(ctx context.Context, f AuditFilter) ([]AuditEntry, error)
}

// NodeControl is the part of a Service that acts on one node's power and
// boot device. labctl power and bootdev use it through a daemon
// (api.Client) or, with --lab, directly (lab.Direct).
type NodeControl interface {
	Power(ctx context.Context, name string, req PowerRequest) (PowerResponse, error)
	SetBootDevice(ctx context.Context, name string, req BootdevRequest) (BootdevResponse, error)
}

// FollowOptions say what a job's event stream carries.
type FollowOptions struct {
	// Offset is the byte of the job log to start at (0: from the start).
	Offset int64
	// NoLog leaves the log out: progress and the end only (submit --wait).
	NoLog bool
}

// JobFilter selects jobs for a listing.
type JobFilter struct {
	States []string // any of these states; empty: all
	Device string   // ran or runs on this device
	Limit  int      // the newest Limit jobs; 0: the server's default (100)
	Before int64    // if positive, jobs with a lower ID only: the next page of a listing
}

type callerKey struct{}

// CallerFrom returns the name of the token that authorized the request.
func CallerFrom(ctx context.Context) string {
	name, _ := ctx.Value(callerKey{}).(string)
	return name
}

// WithCaller returns ctx carrying caller as the request's token name (for
// tests and for callers that use a Service directly).
func WithCaller(ctx context.Context, caller string) context.Context {
	return context.WithValue(ctx, callerKey{}, caller)
}
