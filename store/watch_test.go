package store_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/labctl/labctl/store"
	"github.com/labctl/labctl/store/pgtest"
)

// A host watching the queue hears each job queued, and canceled while
// queued, through another host's store, once the change is committed:
// when it hears, it reads the change.
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
	// queued returns the IDs of the queued jobs, as b reads them.
	queued := func() []int64 {
		t.Helper()
		js, err := b.Jobs(context.Background(), store.JobFilter{States: []string{store.Queued}})
		if err != nil {
			t.Fatal(err)
		}
		var ids []int64
		for _, j := range js {
			ids = append(ids, j.ID)
		}
		return ids
	}
	next("the first call, once listening")
	j, err := a.CreateJob(context.Background(), store.Job{Name: "j", Priority: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	next("a job queued")
	if got := queued(); !slices.Equal(got, []int64{j.ID}) {
		t.Errorf("queued when the submit was heard: %v, want [%d]", got, j.ID)
	}
	if err := a.FinishJob(context.Background(), j.ID, store.Queued, store.Finish{Outcome: "canceled", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	next("a queued job canceled")
	if got := queued(); len(got) != 0 {
		t.Errorf("queued when the cancel was heard: %v, want none", got)
	}
	k, err := a.CreateJob(context.Background(), store.Job{Name: "k", Priority: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	next("another job queued")
	if got := queued(); !slices.Equal(got, []int64{k.ID}) {
		t.Errorf("queued when the second submit was heard: %v, want [%d]", got, k.ID)
	}
}

// A burst of changes of the queue is heard, and heard once it has all
// committed: the last announcement follows the last change.
func TestPostgresWatchQueueBurst(t *testing.T) {
	url := pgtest.URL(t)
	a, b := openPostgres(t, url), openPostgres(t, url)
	ctx, cancel := context.WithCancel(context.Background())
	changes := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.WatchQueue(ctx, func() {
			select {
			case changes <- struct{}{}:
			default:
			}
		})
	}()
	defer func() { cancel(); <-done }()
	select {
	case <-changes:
	case <-time.After(30 * time.Second):
		t.Fatal("not listening within 30s")
	}
	const n = 20
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := a.CreateJob(context.Background(), store.Job{Name: fmt.Sprint("j", i), Priority: "normal"}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case <-changes:
		case <-deadline:
			t.Fatalf("the burst of %d submits was not all heard within 30s", n)
		}
		js, err := b.Jobs(context.Background(), store.JobFilter{States: []string{store.Queued}})
		if err != nil {
			t.Fatal(err)
		}
		if len(js) == n {
			return
		}
	}
}
