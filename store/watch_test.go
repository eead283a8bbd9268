package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/labctl/labctl/store"
	"github.com/labctl/labctl/store/pgtest"
)

// A host watching the queue hears each job queued and each queued job
// canceled through another host's store.
func TestPostgresWatchQueue(t *testing.T) {
	url := pgtest.URL(t)
	a, b := openPostgres(t, url), openPostgres(t, url)
	ctx, cancel := context.WithCancel(context.Background())
	changes := make(chan struct{}, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.WatchQueue(ctx, func() { changes <- struct{}{} })
	}()
	defer func() { cancel(); <-done }()
	next := func(what string) {
		t.Helper()
		select {
		case <-changes:
		case <-time.After(30 * time.Second):
			t.Fatalf("no change heard within 30s: %s", what)
		}
	}
	next("the first call, once listening")
	j, err := a.CreateJob(context.Background(), store.Job{Name: "j", Priority: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	next("a job queued")
	if err := a.FinishJob(context.Background(), j.ID, store.Queued, store.Finish{Outcome: "canceled", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	next("a queued job canceled")
}
