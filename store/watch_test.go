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
// when it hears, it reads the change. A submit is heard naming its job;
// a cancel (or the start of the watch) says to read the whole queue.
func TestPostgresWatchQueue(t *testing.T) {
	url := pgtest.URL(t)
	a, b := openPostgres(t, url), openPostgres(t, url)
	ctx, cancel := context.WithCancel(context.Background())
	changes := make(chan store.QueueNews, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.WatchQueue(ctx, func(news store.QueueNews) { changes <- news })
	}()
	defer func() { cancel(); <-done }()
	next := func(what string, want store.QueueNews) {
		t.Helper()
		select {
		case got := <-changes:
			if !slices.Equal(got.Submitted, want.Submitted) || got.Whole != want.Whole {
				t.Errorf("%s: heard %+v, want %+v", what, got, want)
			}
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
	next("the first call, once listening", store.QueueNews{Whole: true})
	j, err := a.CreateJob(context.Background(), store.Job{Name: "j", Priority: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	next("a job queued", store.QueueNews{Submitted: []int64{j.ID}})
	if got := queued(); !slices.Equal(got, []int64{j.ID}) {
		t.Errorf("queued when the submit was heard: %v, want [%d]", got, j.ID)
	}
	if err := a.FinishJob(context.Background(), j.ID, store.Queued, store.Finish{Outcome: "canceled", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	next("a queued job canceled", store.QueueNews{Whole: true})
	if got := queued(); len(got) != 0 {
		t.Errorf("queued when the cancel was heard: %v, want none", got)
	}
	k, err := a.CreateJob(context.Background(), store.Job{Name: "k", Priority: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	next("another job queued", store.QueueNews{Submitted: []int64{k.ID}})
	if got := queued(); !slices.Equal(got, []int64{k.ID}) {
		t.Errorf("queued when the second submit was heard: %v, want [%d]", got, k.ID)
	}
}

// A burst of changes of the queue is heard, and heard once it has all
// committed: the last announcement follows the last change. The
// announcements name every job submitted, each once, and only jobs
// already queued.
func TestPostgresWatchQueueBurst(t *testing.T) {
	url := pgtest.URL(t)
	a, b := openPostgres(t, url), openPostgres(t, url)
	ctx, cancel := context.WithCancel(context.Background())
	changes := make(chan struct{}, 1)
	var mu sync.Mutex
	named := map[int64]int{}
	wholes := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.WatchQueue(ctx, func(news store.QueueNews) {
			mu.Lock()
			if news.Whole {
				wholes++
			}
			for _, id := range news.Submitted {
				named[id]++
			}
			mu.Unlock()
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
		if len(js) < n {
			continue
		}
		// Every submit is named once (the first call, on listening, is
		// the only read of the whole queue).
		deadline := time.After(30 * time.Second)
		for {
			mu.Lock()
			all, twice := len(named) == n, false
			for _, c := range named {
				twice = twice || c > 1
			}
			w := wholes
			mu.Unlock()
			if twice || w != 1 {
				t.Fatalf("announcements named %v, and %d said to read the whole queue; want each of %d jobs once, and 1", named, w, n)
			}
			for _, j := range js {
				mu.Lock()
				_, ok := named[j.ID]
				mu.Unlock()
				if all && !ok {
					t.Fatalf("announcements named %v, not job %d", named, j.ID)
				}
			}
			if all {
				return
			}
			select {
			case <-changes:
			case <-deadline:
				t.Fatalf("the burst of %d submits was not all named within 30s: %v", n, named)
			}
		}
	}
}
