package api_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/api"
)

// A host forwarding for a person: only the lab-internal token may name
// the caller, the caller gets the named role (never more than the
// token's), and the client sends its ctx's caller and role.
func TestOnBehalf(t *testing.T) {
	svc := &fakeService{}
	s, err := api.NewServer(svc, api.Config{Tokens: []api.Token{
		{Name: "ci", Secret: goodToken, Role: labctl.RoleAdmin},
		{Name: "lab-hosts", Secret: "lab-internal-token", Role: labctl.RoleOperator, Host: true},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		token, header string
		status        int
		caller        string
	}{
		{goodToken, "alice viewer", http.StatusForbidden, ""},
		{"lab-internal-token", "alice viewer", http.StatusOK, "alice"},
		{"lab-internal-token", "", http.StatusOK, "lab-hosts"},
		{"lab-internal-token", "alice admin", http.StatusBadRequest, ""},
		{"lab-internal-token", "alice nobody", http.StatusBadRequest, ""},
		{"lab-internal-token", "alice", http.StatusBadRequest, ""},
	} {
		svc.mu.Lock()
		svc.callers = nil
		svc.mu.Unlock()
		req := httptest.NewRequest("GET", "/api/v1/devices", nil)
		req.Header.Set("Authorization", "Bearer "+tt.token)
		if tt.header != "" {
			req.Header.Set(api.OnBehalfHeader, tt.header)
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		svc.mu.Lock()
		callers := svc.callers
		svc.mu.Unlock()
		if w.Code != tt.status || (tt.caller != "" && (len(callers) != 1 || callers[0] != tt.caller)) {
			t.Errorf("token %s, %s %q: %d %s, callers %v; want %d, %q", tt.token[:3], api.OnBehalfHeader, tt.header, w.Code, w.Body, callers, tt.status, tt.caller)
		}
	}
	// A viewer's request forwarded keeps the viewer's limits.
	req := httptest.NewRequest("POST", "/api/v1/devices/n1/power", nil)
	req.Header.Set("Authorization", "Bearer lab-internal-token")
	req.Header.Set(api.OnBehalfHeader, "alice viewer")
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req)
	if w.Code != http.StatusForbidden {
		t.Errorf("power for a viewer through the host token: %d %s, want 403", w.Code, w.Body)
	}

	// The client sends the ctx's caller and role.
	hs := httptest.NewServer(s)
	defer hs.Close()
	c, err := api.NewClient(hs.URL, "lab-internal-token", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.OnBehalf = true
	ctx := labctl.WithRole(labctl.WithCaller(context.Background(), "bob"), labctl.RoleViewer)
	if _, err := c.Power(ctx, "n1", labctl.PowerRequest{Op: "on"}); !errors.Is(err, labctl.ErrForbidden) {
		t.Errorf("power through an on-behalf client for a viewer = %v, want forbidden", err)
	}
	svc.mu.Lock()
	svc.callers = nil
	svc.mu.Unlock()
	if _, err := c.Devices(ctx); err != nil {
		t.Fatal(err)
	}
	if svc.callers[0] != "bob" {
		t.Errorf("caller of a forwarded request = %v, want bob", svc.callers)
	}
}
