// Package store keeps what the lab daemon must not forget across restarts:
// the jobs (queued, running, finished, with their job file and results),
// each device's state, reservations, attempts and the audit trail: the
// Store interface, and two implementations that run the same SQL: an
// embedded SQLite database (modernc.org/sqlite, pure Go) for one host,
// and PostgreSQL (pgx) for labs whose daemons on several hosts share one
// database. Both pass the same suite (store/storetest).
//
// The SQL is written for both ($1 placeholders, RETURNING, ON CONFLICT
// ... DO UPDATE, times as integer nanoseconds); only the schema's types
// differ, in one list of versioned migrations (migrate.go) applied when
// a store is opened. A database newer than the binary is refused.
//
// A job moves queued → running → finished, or queued → finished when it is
// canceled before it starts; a job stored claimed (CreateJob with a
// device) starts at running, and is never seen queued. Each move is one guarded UPDATE ("... WHERE id =
// $1 AND state = 'queued'"): of two processes that race to take the same job
// off the queue, exactly one wins, so a job never runs twice; a job is in the
// store before its submitter hears its ID, so it is never lost.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Store is what the daemon keeps in its database. SQLite and Postgres
// implement it; store/storetest checks the contract.
type Store interface {
	// CreateJob adds a job and returns it with its ID: queued, or, if
	// j.RunDevice names a device, claimed at once: running on it since
	// j.Started under this store's host's claim, as ClaimFirst leaves a
	// job, when the claim holds (the host's lease, as ClaimFirst checks
	// it); queued when it does not. The returned State says which.
	CreateJob(ctx context.Context, j Job) (Job, error)
	// Job returns one job; an error wrapping ErrNotFound if none.
	Job(ctx context.Context, id int64) (Job, error)
	// Jobs lists jobs, oldest first.
	Jobs(ctx context.Context, f JobFilter) ([]Job, error)
	// JobIDs lists the IDs of the jobs Jobs would list, oldest first:
	// a read of the index alone, for a caller that keeps the rows.
	JobIDs(ctx context.Context, f JobFilter) ([]int64, error)
	// ClaimJob moves a queued job to running on device, atomically; an
	// error wrapping ErrConflict if it is not queued.
	ClaimJob(ctx context.Context, id int64, device string, at time.Time) error
	// ClaimFirst moves to running on device, atomically, the first of
	// the jobs ids (in their order) that is queued and not being taken
	// by another claim at this moment, and returns its ID; an error
	// wrapping ErrConflict if there is none, a *ClaimRefusedError naming
	// those no longer queued when ids are several. A store of one of
	// several hosts claims only while its host's lease holds
	// (ErrLeaseExpired).
	ClaimFirst(ctx context.Context, ids []int64, device string, at time.Time) (int64, error)
	// FinishJob ends a job that is in state from; ErrConflict if not.
	FinishJob(ctx context.Context, id int64, from string, f Finish) error
	// SetDevices records device states (one transaction).
	SetDevices(ctx context.Context, devs []Device) error
	Devices(ctx context.Context) ([]Device, error)
	Close() error

	// RetryJob adds j, queued, as the next attempt of job of, in one
	// transaction with the link between them; ErrConflict if of already
	// has a next attempt (a job is retried once), ErrNotFound if there is
	// no job of.
	RetryJob(ctx context.Context, of int64, j Job) (Job, error)
	// Attempts returns every attempt of the job id is one attempt of,
	// first first: just that job if it was never retried.
	Attempts(ctx context.Context, id int64) ([]Job, error)
	// Retries returns those of the jobs ids that are a later attempt of
	// another (RetryJob): the ones whose Attempts are more than
	// themselves. One read for many jobs.
	Retries(ctx context.Context, ids []int64) (map[int64]bool, error)
	// SetReservation records a device's reservation, replacing any other.
	SetReservation(ctx context.Context, r Reservation) error
	// DeleteReservation removes a device's reservation (none: no error).
	DeleteReservation(ctx context.Context, device string) error
	// Reservations returns every recorded reservation, by device.
	Reservations(ctx context.Context) ([]Reservation, error)
	// AddAudit appends an entry to the audit trail and returns its ID.
	// The trail is append-only: no method changes or removes an entry.
	AddAudit(ctx context.Context, e AuditEntry) (int64, error)
	// Audit lists audit entries, oldest first.
	Audit(ctx context.Context, f AuditFilter) ([]AuditEntry, error)
	// CheckWrite commits a write that changes nothing the daemon reads:
	// an error says the store cannot record anything now (a read-only
	// database, a full disk).
	CheckWrite(ctx context.Context) error
	// DeleteFinishedJobs removes finished jobs, oldest first: those that
	// finished before before (unless it is zero) and those beyond the
	// newest keep finished jobs (unless keep is 0); at most limit of them
	// (unless limit is 0). It returns the IDs it removed. Queued and
	// running jobs are never removed. A store of one of several hosts
	// (Hosts.SetHost) removes only the jobs that host ran and those
	// that never ran.
	DeleteFinishedJobs(ctx context.Context, before time.Time, keep, limit int) ([]int64, error)
}

// Reservation holds a device for one person until a time.
type Reservation struct {
	Device string
	Owner  string // the API token's name
	Reason string
	Since  time.Time
	Until  time.Time
}

// Job states.
const (
	Queued   = "queued"
	Running  = "running"
	Finished = "finished"
)

// Errors callers branch on.
var (
	// ErrNotFound: no such job.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the job is not in the state the change starts from
	// (someone else took it, canceled it or finished it first).
	ErrConflict = errors.New("job state changed")
)

// ClaimRefusedError is ClaimFirst's error when none of several jobs was
// queued and free: Gone are those no longer queued (another host took
// them, or they were canceled), as read after the claim; the others were
// being taken by another claim at that moment. It wraps ErrConflict.
type ClaimRefusedError struct {
	IDs  []int64
	Gone []int64
}

func (e *ClaimRefusedError) Error() string {
	return fmt.Sprintf("claim %s: none of them is queued and free (%d no longer queued): %v", jobsNamed(e.IDs), len(e.Gone), ErrConflict)
}

func (e *ClaimRefusedError) Unwrap() error { return ErrConflict }

// Job is a job as the store keeps it.
type Job struct {
	ID   int64
	Name string
	// File is the job file's name as submitted, for messages; Dir is the
	// absolute directory its relative paths are relative to; Spec is its
	// text, exactly as written.
	File string
	Dir  string
	Spec string
	// Device, or DeviceType and Tags, say where the job may run (as in the
	// job file).
	Device     string
	DeviceType string
	Tags       []string
	Priority   string // high, normal, low
	Submitter  string // the API token's name
	State      string // Queued, Running, Finished
	// RunDevice is the device the job runs or ran on.
	RunDevice string
	// Host is the host whose claim the job runs or ran under (empty in a
	// lab of one host).
	Host string
	// Outcome and Reason are set when the job is finished.
	Outcome string
	Reason  string
	// Submitted, Started and Finished are zero until they happen.
	Submitted time.Time
	Started   time.Time
	Finished  time.Time
	// Result is the job's results.json, once finished (may be empty if the
	// job never ran).
	Result []byte
}

// JobFilter selects jobs for a listing.
type JobFilter struct {
	// States, if not empty, keeps the jobs in one of these states.
	States []string
	// Device, if set, keeps the jobs that run or ran on this device.
	Device string
	// Limit, if positive, keeps the newest Limit jobs.
	Limit int
	// Before, if positive, keeps the jobs whose ID is lower (a page
	// further back).
	Before int64
	// IDs, if not empty, keeps the jobs with one of these IDs.
	IDs []int64
	// Host, if set, keeps the jobs that run or ran under this host's
	// claim (a lab of several hosts).
	Host string
}

// Finish is how a job ended.
type Finish struct {
	Outcome string
	Reason  string
	At      time.Time
	Result  []byte // results.json; may be empty
}

// Device is the state of one device, as last recorded.
type Device struct {
	Name   string
	State  string // idle, running, checking, offline, maintenance (the daemon's words)
	Reason string
	Since  time.Time
	// Maintenance is set by an admin and survives restarts; it takes
	// effect when the device's current job ends.
	Maintenance       bool
	MaintenanceReason string
}
