package api

import (
	"errors"
	"net/http"
)

// Errors the Service returns (wrapped, with what went wrong) and the client
// gives back, so that callers can branch on them. statusOf is the one place
// where they become HTTP statuses, and errorOf the one place where statuses
// become them again.
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
	// ErrTooLarge: the request body is over the limit.
	ErrTooLarge = errors.New("request body too large")
	// ErrDevice: the node's BMC or console failed the operation.
	ErrDevice = errors.New("device error")
	// ErrUnavailable: the daemon is shutting down.
	ErrUnavailable = errors.New("unavailable")
)

var statuses = []struct {
	err    error
	status int
}{
	{ErrInvalid, http.StatusBadRequest},
	{ErrNotFound, http.StatusNotFound},
	{ErrBusy, http.StatusConflict},
	{ErrUnauthorized, http.StatusUnauthorized},
	{ErrTooLarge, http.StatusRequestEntityTooLarge},
	{ErrDevice, http.StatusBadGateway},
	{ErrUnavailable, http.StatusServiceUnavailable},
}

// statusOf is the HTTP status for err; 500 for anything not listed.
func statusOf(err error) int {
	for _, s := range statuses {
		if errors.Is(err, s.err) {
			return s.status
		}
	}
	return http.StatusInternalServerError
}

// errorOf is the error a status stands for, or nil for a status the API
// does not use on purpose.
func errorOf(status int) error {
	for _, s := range statuses {
		if s.status == status {
			return s.err
		}
	}
	return nil
}
