package labctl

import (
	"context"
	"fmt"
)

// Role is what an API token may do. Each role may do what the ones before
// it may, and more:
//
//	viewer     read jobs, logs, devices; watch consoles (read-only)
//	submitter  also submit jobs and cancel its own
//	operator   also power and boot-device requests, maintenance, health
//	           checks, typing on consoles (and taking write), canceling any
//	           job, reading the audit trail
//	admin      everything
type Role string

// The roles, least to most.
const (
	RoleViewer    Role = "viewer"
	RoleSubmitter Role = "submitter"
	RoleOperator  Role = "operator"
	RoleAdmin     Role = "admin"
)

// Roles lists the roles, least to most.
var Roles = []Role{RoleViewer, RoleSubmitter, RoleOperator, RoleAdmin}

func (r Role) rank() int {
	for i, o := range Roles {
		if o == r {
			return i
		}
	}
	return -1
}

// Allows reports whether a caller with role r may do what needs role need.
func (r Role) Allows(need Role) bool {
	return r.rank() >= 0 && r.rank() >= need.rank()
}

// UnmarshalText accepts the four roles, so that a config file naming
// another is refused where it is read.
func (r *Role) UnmarshalText(text []byte) error {
	for _, o := range Roles {
		if string(text) == string(o) {
			*r = o
			return nil
		}
	}
	return fmt.Errorf("%q is not a role: use viewer, submitter, operator or admin", text)
}

type roleKey struct{}

// WithRole returns ctx carrying the caller's role (package api sets it
// from the request's token).
func WithRole(ctx context.Context, r Role) context.Context {
	return context.WithValue(ctx, roleKey{}, r)
}

// RoleFrom returns the caller's role. A context without one is an
// in-process caller (labctl run, tests): the lab's owner, admin.
func RoleFrom(ctx context.Context) Role {
	if r, ok := ctx.Value(roleKey{}).(Role); ok {
		return r
	}
	return RoleAdmin
}

// Authorize returns nil if the caller's role allows need, else an error
// wrapping ErrForbidden that says what needs which role.
func Authorize(ctx context.Context, need Role, what string) error {
	r := RoleFrom(ctx)
	if r.Allows(need) {
		return nil
	}
	who := CallerFrom(ctx)
	if who == "" {
		who = "this caller"
	}
	return fmt.Errorf("%w: %s needs role %s; %s has role %s", ErrForbidden, what, need, who, r)
}
