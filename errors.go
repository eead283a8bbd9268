package labctl

import "errors"

// Error kinds. Every layer wraps one of these (with what went wrong) when
// the caller or the lab is at fault, so that callers can branch with
// errors.Is; package api turns them into HTTP statuses and back in one
// place. Any other error is the daemon's own ("internal error" to a client).
var (
	// ErrInvalid: the request makes no sense (a bad job file, an unknown
	// power operation, a malformed body).
	ErrInvalid = errors.New("invalid request")
	// ErrNotFound: no such job or device.
	ErrNotFound = errors.New("not found")
	// ErrBusy: the device is owned by a job or a health check, or the job
	// is not in a state that allows the request.
	ErrBusy = errors.New("busy")
	// ErrUnauthorized: the request has no valid token.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrForbidden: the caller's role does not allow the request.
	ErrForbidden = errors.New("forbidden")
	// ErrDevice: the node's BMC or console failed the operation.
	ErrDevice = errors.New("device error")
	// ErrUnavailable: the daemon is shutting down.
	ErrUnavailable = errors.New("unavailable")
)
