package labctl

import (
	"context"
	"time"
)

// AuditEntry is one action a person took on the lab through its daemon,
// or tried to: who (the API token's name and role), when, from which
// address, what, and whether it was allowed. The daemon appends one per
// action to its audit trail and never changes or removes one.
type AuditEntry struct {
	ID   int64     `json:"id"`
	Time time.Time `json:"time"`
	// Who is the token's name ("" for an in-process caller, which has
	// role admin).
	Who  string `json:"who"`
	Role Role   `json:"role"`
	// Remote is the client's address (host:port) as the API saw it.
	Remote string `json:"remote,omitempty"`
	Action string `json:"action"` // AuditSubmit, AuditCancel, ...
	Device string `json:"device,omitempty"`
	Job    int64  `json:"job,omitempty"`
	// Detail says what exactly: the power operation, the boot device,
	// the maintenance reason, the job file, whom write was taken from.
	Detail string `json:"detail,omitempty"`
	Result string `json:"result"` // AuditOK, AuditRefused or AuditFailed
	// Error says why the action was refused or failed.
	Error string `json:"error,omitempty"`
}

// Audited actions.
const (
	AuditSubmit       = "submit"
	AuditCancel       = "cancel"
	AuditPower        = "power"   // a power operation (not a status query)
	AuditBootdev      = "bootdev" // the next boot device
	AuditMaintenance  = "maintenance"
	AuditOnline       = "online"
	AuditHealth       = "health"        // a health check on demand
	AuditConsoleWrite = "console-write" // took write on a console (Detail: from whom, if forced)
	AuditReserve      = "reserve"       // reserved or renewed a device (Detail: for how long, why)
	AuditRelease      = "release"       // ended a device's reservation
)

// Audit results.
const (
	AuditOK      = "ok"
	AuditRefused = "refused" // the caller's role does not allow it (403)
	AuditFailed  = "failed"  // allowed, but it did not happen (no such device, busy, the BMC failed)
)

// AuditFilter selects audit entries.
type AuditFilter struct {
	Device string    // about this device
	Who    string    // by this token
	Since  time.Time // at or after this time; zero: any
	Limit  int       // the newest Limit entries; 0: the server's default (100)
}

// AuditRecorder is a Service that keeps an audit trail (the daemon).
// Package api records through it the requests for audited actions it
// refuses itself (the caller's role is too low), which never reach the
// Service's methods.
type AuditRecorder interface {
	// RecordRefused appends e as refused, with the caller, role and
	// address in ctx.
	RecordRefused(ctx context.Context, e AuditEntry)
}

type remoteKey struct{}

// WithRemote returns ctx carrying the address a request came from
// (package api sets it from the connection).
func WithRemote(ctx context.Context, addr string) context.Context {
	return context.WithValue(ctx, remoteKey{}, addr)
}

// RemoteFrom returns the address the request came from; "" for an
// in-process caller.
func RemoteFrom(ctx context.Context) string {
	addr, _ := ctx.Value(remoteKey{}).(string)
	return addr
}
