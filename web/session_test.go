package web

import (
	"net/http"
	"testing"
	"time"
)

// A token's logins beyond the bound end its own oldest sessions, never
// another token's: a viewer logging in over and over leaves the
// operator's session alone. A token with no session takes the place of
// the oldest session of the token with the most.
func TestSessionsBoundPerToken(t *testing.T) {
	h := start(t, Config{MaxSessions: 3})
	operator := h.browser(t)
	h.login(t, operator, "operator-secret")
	var viewers []*http.Client
	for range 5 {
		h.clock.add(time.Second)
		c := h.browser(t)
		h.login(t, c, "viewer-secret")
		viewers = append(viewers, c)
	}
	if n := h.ui.sessions.count(); n != 3 {
		t.Errorf("%d sessions, want 3", n)
	}
	if _, code := h.session(t, operator); code != http.StatusOK {
		t.Errorf("the operator's session after the viewer's logins: %d, want it kept", code)
	}
	for i, c := range viewers {
		_, code := h.session(t, c)
		if want := i >= 3; (code == http.StatusOK) != want {
			t.Errorf("viewer session %d: %d, want live %v (the viewer's two newest)", i, code, want)
		}
	}
	// The operator logs in again while the bound is full of its own and
	// the viewer's: it ends its own oldest, the viewer keeps both.
	h.clock.add(time.Second)
	again := h.browser(t)
	h.login(t, again, "operator-secret")
	if _, code := h.session(t, operator); code != http.StatusUnauthorized {
		t.Errorf("the operator's first session after its second login: %d, want ended", code)
	}
	for _, c := range append(viewers[3:], again) {
		if _, code := h.session(t, c); code != http.StatusOK {
			t.Errorf("a session that should be live: %d", code)
		}
	}
}
