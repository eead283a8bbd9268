package api_test

import (
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzServer sends arbitrary requests (method, path with query, content
// type, body) with a valid token: the server must answer each with a
// status it means (never a panic, never a 500 from request decoding, since
// the fake service itself never fails) and a JSON error body for 4xx.
func FuzzServer(f *testing.F) {
	seeds := []struct{ method, path, ct, body string }{
		{"POST", "/api/v1/jobs", "application/json", `{"file":"a.toml","dir":"/","spec":"device = \"n\""}`},
		{"POST", "/api/v1/jobs", "application/json", `{"spec":"\u0000\ud800"}`},
		{"POST", "/api/v1/jobs", "", `{"spec":"x"}{`},
		{"POST", "/api/v1/jobs", "application/json", `[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]`},
		{"GET", "/api/v1/jobs?state=queued&state=running,finished&limit=3", "", ""},
		{"GET", "/api/v1/jobs/7/events?offset=5&log=false", "", ""},
		{"GET", "/api/v1/jobs/%2e%2e/log", "", ""},
		{"POST", "/api/v1/devices/node1/power", "application/json", `{"op":"cycle","force":true}`},
		{"POST", "/api/v1/devices/node1/bootdev", "application/json;;;", `{"device":"pxe"}`},
		{"POST", "/api/v1/devices/../maintenance", "application/json", `{"reason":"` + strings.Repeat("é", 50) + `"}`},
		{"PUT", "/api/v1/jobs/1/cancel", "", ""},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, s.ct, s.body)
	}
	srv := newServer(f, &fakeService{}, 4096)
	f.Fuzz(func(t *testing.T, method, path, contentType, body string) {
		if !validMethod(method) || !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n\t#") {
			return // not an HTTP request line net/http would accept
		}
		if _, err := url.ParseRequestURI(path); err != nil {
			return // net/http answers 400 before any handler
		}
		req := httptest.NewRequest(method, "http://labctl"+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+goodToken)
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, req)
		switch {
		case w.Code >= 500:
			t.Errorf("%s %s %q: status %d %s", method, path, body, w.Code, w.Body)
		case w.Code >= 400 && !strings.HasPrefix(w.Body.String(), "{"):
			t.Errorf("%s %s: status %d without a JSON error body: %q", method, path, w.Code, w.Body)
		}
	})
}

func validMethod(m string) bool {
	switch m {
	case "GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS":
		return true
	}
	return false
}
