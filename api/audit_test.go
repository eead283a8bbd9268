package api_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/api"
)

// Audit answers with one entry that says what the filter was and who
// asked from where.
func (f *fakeService) Audit(ctx context.Context, flt labctl.AuditFilter) ([]labctl.AuditEntry, error) {
	if err := f.called(ctx); err != nil {
		return nil, err
	}
	return []labctl.AuditEntry{{
		ID: 1, Time: flt.Since, Who: labctl.CallerFrom(ctx), Role: labctl.RoleFrom(ctx), Remote: labctl.RemoteFrom(ctx),
		Device: flt.Device, Detail: fmt.Sprintf("who=%s limit=%d", flt.Who, flt.Limit), Result: labctl.AuditOK,
	}}, nil
}

// auditService is a console service that keeps the refusals the server
// records.
type auditService struct {
	consoleService
	mu      sync.Mutex
	refused []string
}

func (a *auditService) RecordRefused(ctx context.Context, e labctl.AuditEntry) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.refused = append(a.refused, fmt.Sprintf("%s/%s@%s %s %s job %d %q: %s", labctl.CallerFrom(ctx), labctl.RoleFrom(ctx),
		labctl.RemoteFrom(ctx), e.Action, e.Device, e.Job, e.Detail, e.Error))
}

func (a *auditService) entries() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.refused
}

// A request for an audited action that the server refuses for its role
// goes to the audit trail with the token, its role and the client's
// address; a refused read, an unauthenticated request and an allowed
// action (the daemon records those) do not.
func TestAuditRefusals(t *testing.T) {
	svc := &auditService{consoleService: consoleService{atts: make(chan *fakeAttachment, 4)}}
	var tokens []api.Token
	for _, r := range labctl.Roles {
		tokens = append(tokens, api.Token{Name: string(r) + "1", Secret: "token-of-a-" + string(r), Role: r})
	}
	s, err := api.NewServer(svc, api.Config{Tokens: tokens})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		method, path, token, body string
		want                      int
	}{
		{"POST", "/api/v1/devices/node1/power", "token-of-a-viewer", `{"op":"off"}`, 403},
		{"POST", "/api/v1/jobs/7/cancel", "token-of-a-viewer", "{}", 403},
		{"POST", "/api/v1/devices/node2/maintenance", "token-of-a-submitter", `{"reason":"x"}`, 403},
		{"GET", "/api/v1/audit", "token-of-a-submitter", "", 403},
		{"POST", "/api/v1/devices/node1/power", "", `{"op":"off"}`, 401},
		{"POST", "/api/v1/devices/node1/power", "token-of-a-operator", `{"op":"off"}`, 200},
	} {
		if w := do(s, tt.method, tt.path, tt.token, "application/json", tt.body); w.Code != tt.want {
			t.Errorf("%s %s: %d %s, want %d", tt.method, tt.path, w.Code, w.Body, tt.want)
		}
	}
	req := httptest.NewRequest("GET", "/api/v1/devices/node1/console/attach?force=true", nil)
	req.Header.Set("Authorization", "Bearer token-of-a-viewer")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", api.ConsoleProtocol)
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req)
	if w.Code != http.StatusForbidden {
		t.Errorf("a viewer forcing console write: %d %s, want 403", w.Code, w.Body)
	}
	got := svc.entries()
	want := []string{
		`viewer1/viewer@192.0.2.1:1234 power node1 job 0 "": forbidden: POST /api/v1/devices/node1/power needs role operator; viewer1 has role viewer`,
		`viewer1/viewer@192.0.2.1:1234 cancel  job 7 "": forbidden: POST /api/v1/jobs/7/cancel needs role submitter; viewer1 has role viewer`,
		`submitter1/submitter@192.0.2.1:1234 maintenance node2 job 0 "": forbidden: POST /api/v1/devices/node2/maintenance needs role operator; submitter1 has role submitter`,
		`viewer1/viewer@192.0.2.1:1234 console-write node1 job 0 "force": forbidden: taking write on the console of node1 needs role operator; viewer1 has role viewer`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("refusals recorded:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// The client's filter reaches the service through GET /api/v1/audit,
// with the caller's address; a bad filter is refused.
func TestAuditQuery(t *testing.T) {
	url, _ := serveAPI(t, &fakeService{})
	c, err := api.NewClient(url, goodToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	since := time.Date(2026, 3, 4, 5, 6, 7, 123456789, time.FixedZone("x", 3600))
	list, err := c.Audit(context.Background(), labctl.AuditFilter{Device: "node1", Who: "alice", Since: since, Limit: 5})
	if err != nil || len(list) != 1 {
		t.Fatalf("Audit = %+v, %v", list, err)
	}
	e := list[0]
	if e.Device != "node1" || e.Detail != "who=alice limit=5" || !e.Time.Equal(since) || e.Who != "ci" || e.Role != labctl.RoleAdmin ||
		!strings.HasPrefix(e.Remote, "127.0.0.1:") {
		t.Errorf("Audit entry %+v: the filter or the caller did not arrive", e)
	}
	s := newServer(t, &fakeService{}, 0)
	for _, q := range []string{"since=yesterday", "limit=-1", "limit=x"} {
		if w := do(s, "GET", "/api/v1/audit?"+q, goodToken, "", ""); w.Code != http.StatusBadRequest {
			t.Errorf("GET /api/v1/audit?%s = %d %s, want 400", q, w.Code, w.Body)
		}
	}
}
