// Package labctl is the lab's vocabulary: what a job and a device are and
// the states they go through, how a job ends, what a node offers (power,
// boot device, console, boot-server entry), the errors every layer uses to
// say what went wrong, and the Service a lab answers with. The daemon
// implements Service; package api carries it over HTTP (its client
// implements it too); the dispatcher drives a Node.
//
// The package imports no transport and no driver: it is what the rest of
// the code base talks about.
package labctl

import (
	"time"

	"github.com/labctl/labctl/results"
)

// SubmitRequest submits a job file.
type SubmitRequest struct {
	// File is the job file's name as the submitter knows it, for messages.
	File string `json:"file"`
	// Dir is the absolute directory of the job file: relative paths in it
	// (deploy.image, deploy.sha256_file) are relative to Dir, and must be
	// readable by the daemon (same host or a shared file system; otherwise
	// use an http(s) URL for the image).
	Dir string `json:"dir"`
	// Spec is the job file's text.
	Spec string `json:"spec"`
}

// Job states.
const (
	JobQueued   = "queued"
	JobRunning  = "running"
	JobFinished = "finished"
)

// Job is a job as the daemon reports it.
type Job struct {
	ID         int64    `json:"id"`
	Name       string   `json:"name"`
	Device     string   `json:"device,omitempty"` // asked for, or running/ran on
	DeviceType string   `json:"device_type,omitempty"`
	Tags       []string `json:"tags,omitempty"`
	Priority   string   `json:"priority"`
	Submitter  string   `json:"submitter"`
	State      string   `json:"state"`             // queued, running, finished
	Outcome    string   `json:"outcome,omitempty"` // complete, failed, incomplete, canceled
	Reason     string   `json:"reason,omitempty"`
	// Submitted, Started and Finished are when these happened (Started and
	// Finished omitted until then).
	Submitted time.Time  `json:"submitted"`
	Started   *time.Time `json:"started,omitempty"`
	Finished  *time.Time `json:"finished,omitempty"`
	// Phase is what a running job is doing (deploy, boot, test, save, finalize).
	Phase string `json:"phase,omitempty"`
	// Transfer is a running job's image (deploy) or disk (save) transfer, while it streams.
	Transfer *Transfer `json:"transfer,omitempty"`
	// Result is the job's record once it is finished (in `GET /jobs/{id}`).
	Result *results.Job `json:"result,omitempty"`
	// RetryOf is the attempt this job retries, RetriedAs the attempt that
	// retries it: a job that ended incomplete because the lab went wrong is
	// queued again as a new job, up to its retries.
	RetryOf   int64 `json:"retry_of,omitempty"`
	RetriedAs int64 `json:"retried_as,omitempty"`
	// Attempts are every attempt of the job, first first, when there is
	// more than one (in `GET /jobs/{id}`).
	Attempts []Attempt `json:"attempts,omitempty"`
}

// Attempt is one run of a job that the lab retried.
type Attempt struct {
	ID       int64      `json:"id"`
	Device   string     `json:"device,omitempty"`
	State    string     `json:"state"`
	Outcome  string     `json:"outcome,omitempty"`
	Reason   string     `json:"reason,omitempty"`
	Started  *time.Time `json:"started,omitempty"`
	Finished *time.Time `json:"finished,omitempty"`
}

// Transfer is how far a job's image has streamed to the node.
type Transfer struct {
	Done    int64         `json:"done"`
	Total   int64         `json:"total"` // 0 when unknown
	Elapsed time.Duration `json:"elapsed_ns"`
}

// Event is one line of a job's event stream: a piece of its log, news of
// its progress, or (last) the job as it ended. Exactly one field is set.
type Event struct {
	// Log is whole lines of the job log, starting at byte Offset of the
	// file; the next piece starts at Offset+len(Log).
	Log    string `json:"log,omitempty"`
	Offset int64  `json:"offset,omitempty"`
	// Progress is the job's current phase and transfer.
	Progress *JobProgress `json:"progress,omitempty"`
	// End is the finished job; the stream ends after it.
	End *Job `json:"end,omitempty"`
}

// JobProgress is a running job's phase and image transfer.
type JobProgress struct {
	Phase    string    `json:"phase"`
	Transfer *Transfer `json:"transfer,omitempty"`
}

// Device states.
const (
	DeviceIdle        = "idle"        // healthy, waiting for a job
	DeviceRunning     = "running"     // a job runs on it
	DeviceChecking    = "checking"    // its health check runs
	DeviceOffline     = "offline"     // its health check failed: no jobs until one passes
	DeviceMaintenance = "maintenance" // taken out by an admin
)

// Device is a device as the daemon reports it.
type Device struct {
	Name       string    `json:"name"`
	DeviceType string    `json:"device_type"`
	Tags       []string  `json:"tags,omitempty"`
	State      string    `json:"state"`
	Reason     string    `json:"reason,omitempty"`
	Since      time.Time `json:"since"`
	// Job is the job running on it, if any.
	Job int64 `json:"job,omitempty"`
	// Maintenance is set when an admin took the device out; while a job
	// still runs on it, State is running and the device goes to
	// maintenance when the job ends.
	Maintenance bool `json:"maintenance,omitempty"`
	// Health is the last health check, if one ran since the daemon started.
	Health *Health `json:"health,omitempty"`
	// Reservation is the person holding the device, if anyone does: only
	// their jobs run on it until it expires or is released.
	Reservation *Reservation `json:"reservation,omitempty"`
}

// Reservation holds a device for one person (a token name) until a time.
type Reservation struct {
	Owner  string    `json:"owner"`
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since"`
	Until  time.Time `json:"until"`
}

// ReserveRequest reserves a device for the caller, or renews the caller's
// reservation, for a while from now.
type ReserveRequest struct {
	For    time.Duration `json:"for_ns"`
	Reason string        `json:"reason,omitempty"`
}

// Health is the result of a device's health check.
type Health struct {
	At       time.Time     `json:"at"`
	OK       bool          `json:"ok"`
	Detail   string        `json:"detail"` // what was checked, or what failed
	Duration time.Duration `json:"duration_ns"`
}

// DeviceRequest is the body of maintenance (and optionally online).
type DeviceRequest struct {
	Reason string `json:"reason,omitempty"`
}

// PowerStatus is the PowerRequest operation that only reads the node's
// power state.
const PowerStatus = "status"

// PowerRequest asks for a power operation on a node.
type PowerRequest struct {
	// Op is a PowerOp, or "status" to only read the power state.
	Op string `json:"op"`
	// Force runs it even while a job or a health check owns the node.
	Force bool `json:"force,omitempty"`
}

// BootdevRequest sets a node's next boot device.
type BootdevRequest struct {
	Device BootDevice `json:"device"`
	Force  bool       `json:"force,omitempty"`
}

// PowerResponse is the node's power state after a power request.
type PowerResponse struct {
	Node string `json:"node"`
	On   bool   `json:"on"`
}

// BootdevResponse confirms the next boot device that was set.
type BootdevResponse struct {
	Node   string     `json:"node"`
	Device BootDevice `json:"device"`
}

// Outcome is how a job ended.
type Outcome string

// The outcomes.
const (
	// Complete: every test step ended as expected.
	Complete Outcome = "complete"
	// Failed: a test step failed unexpectedly (or passed when expected to fail).
	Failed Outcome = "failed"
	// Incomplete: the lab, not the test, went wrong (which action, and why).
	Incomplete Outcome = "incomplete"
	// Canceled: someone canceled the job, or it ran out of time.
	Canceled Outcome = "canceled"
)

// ExitCode is the labctl exit status for a job that ended with o: 0
// complete, 1 failed, 2 incomplete, 3 canceled. An unknown outcome counts
// as incomplete.
func (o Outcome) ExitCode() int {
	switch o {
	case Complete:
		return 0
	case Failed:
		return 1
	case Canceled:
		return 3
	}
	return 2
}
