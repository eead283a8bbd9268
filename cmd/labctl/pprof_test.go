package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
)

// serve --pprof listens on loopback only (the endpoints have no token)
// and serves Go's profiles there until its context ends.
func TestPprofListener(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "192.0.2.1:6060", "example.com:6060", "6060"} {
		if l, err := listenPprof(addr); err == nil {
			l.Close()
			t.Errorf("--pprof %s was accepted; want loopback only", addr)
		}
	}
	l, err := listenPprof("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- servePprof(ctx, l) }()
	resp, err := http.Get("http://" + l.Addr().String() + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine profile") {
		t.Errorf("goroutine profile: %s %.100q", resp.Status, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("servePprof = %v after its context ended", err)
	}
}
