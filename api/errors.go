package api

import (
	"errors"
	"net/http"

	"github.com/labctl/labctl"
)

// ErrTooLarge: the request body is over the limit.
var ErrTooLarge = errors.New("request body too large")

// statuses maps the error kinds (package labctl) to HTTP statuses: statusOf
// is the one place where errors become statuses, and errorOf the one place
// where statuses become them again, so a client gives back the error kind
// the daemon returned.
var statuses = []struct {
	err    error
	status int
}{
	{labctl.ErrInvalid, http.StatusBadRequest},
	{labctl.ErrNotFound, http.StatusNotFound},
	{labctl.ErrBusy, http.StatusConflict},
	{labctl.ErrUnauthorized, http.StatusUnauthorized},
	{labctl.ErrForbidden, http.StatusForbidden},
	{ErrTooLarge, http.StatusRequestEntityTooLarge},
	{labctl.ErrDevice, http.StatusBadGateway},
	{labctl.ErrUnavailable, http.StatusServiceUnavailable},
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
