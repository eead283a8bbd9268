package api

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/labctl/labctl"
)

// auditedRoutes names the audited action of each route for one: a
// request the server refuses for its role never reaches the daemon, so
// the server records the refusal itself (refused). What the daemon is
// asked to do it records on its own.
var auditedRoutes = map[string]string{
	"POST /api/v1/jobs":                         labctl.AuditSubmit,
	"POST /api/v1/jobs/{id}/cancel":             labctl.AuditCancel,
	"POST /api/v1/devices/{name}/maintenance":   labctl.AuditMaintenance,
	"POST /api/v1/devices/{name}/online":        labctl.AuditOnline,
	"POST /api/v1/devices/{name}/health":        labctl.AuditHealth,
	"POST /api/v1/devices/{name}/power":         labctl.AuditPower,
	"POST /api/v1/devices/{name}/bootdev":       labctl.AuditBootdev,
	"GET /api/v1/devices/{name}/console/attach": labctl.AuditConsoleWrite,
	"POST /api/v1/devices/{name}/reserve":       labctl.AuditReserve,
	"POST /api/v1/devices/{name}/release":       labctl.AuditRelease,
}

// refused records in the service's audit trail (if it keeps one) that
// the request, for action e, was refused with err. Requests without a
// valid token are not recorded: they have nobody to name, and anyone
// could fill the trail with them.
func (s *Server) refused(r *http.Request, e labctl.AuditEntry, err error) {
	rec, ok := s.svc.(labctl.AuditRecorder)
	if !ok || e.Action == "" {
		return
	}
	e.Device, e.Error = r.PathValue("name"), err.Error()
	if id, err := strconv.ParseInt(r.PathValue("id"), 10, 64); err == nil {
		e.Job = id
	}
	rec.RecordRefused(r.Context(), e)
}

// audit lists the audit trail: ?device=NODE&who=TOKEN&since=RFC3339&limit=N.
func (s *Server) audit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := labctl.AuditFilter{Device: q.Get("device"), Who: q.Get("who")}
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			s.fail(w, r, fmt.Errorf("%w: since %q: want an RFC 3339 time such as 2026-03-04T05:06:07Z", labctl.ErrInvalid, v))
			return
		}
		f.Since = t
	}
	var err error
	if f.Limit, err = listLimit(q); err != nil {
		s.fail(w, r, err)
		return
	}
	list, err := s.svc.Audit(r.Context(), f)
	replyList(s, w, r, list, err)
}

// Audit lists the daemon's audit trail (role operator).
func (c *Client) Audit(ctx context.Context, f labctl.AuditFilter) ([]labctl.AuditEntry, error) {
	q := url.Values{}
	if f.Device != "" {
		q.Set("device", f.Device)
	}
	if f.Who != "" {
		q.Set("who", f.Who)
	}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.UTC().Format(time.RFC3339Nano))
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	var list []labctl.AuditEntry
	err := c.do(ctx, false, "GET", "/api/v1/audit", q, nil, &list)
	return list, err
}
