package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labctl/labctl/store"
	"github.com/labctl/labctl/store/pgtest"
	"github.com/labctl/labctl/store/storetest"
)

func TestPostgres(t *testing.T) {
	storetest.Run(t, func(t *testing.T) func() (store.Store, error) {
		url := pgtest.URL(t)
		return func() (store.Store, error) { return store.OpenPostgres(context.Background(), url, "") }
	})
}

func openPostgres(t *testing.T, url string) *store.Postgres {
	t.Helper()
	s, err := store.OpenPostgres(context.Background(), url, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Two stores on one database (two daemon hosts) race to claim the same
// jobs: each job is claimed exactly once.
func TestPostgresClaimRaceTwoStores(t *testing.T) {
	url := pgtest.URL(t)
	stores := []*store.Postgres{openPostgres(t, url), openPostgres(t, url)}
	ctx := context.Background()
	var jobs []int64
	for i := range 40 {
		j, err := stores[i%2].CreateJob(ctx, store.Job{Name: fmt.Sprintf("j%d", i), Priority: "normal"})
		if err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, j.ID)
	}
	var claimers []storetest.Claimer
	for h, s := range stores {
		for w := range 4 {
			claimers = append(claimers, storetest.Claimer{Store: s, Device: fmt.Sprintf("host%d-node%d", h, w)})
		}
	}
	won := storetest.RaceClaims(t, claimers, jobs, time.Now())
	hosts := map[byte]int{}
	for _, id := range jobs {
		w, ok := won[id]
		if !ok {
			continue
		}
		hosts[w[4]]++
		for _, s := range stores {
			if j, err := s.Job(ctx, id); err != nil || j.RunDevice != w {
				t.Errorf("job %d: %+v, %v; want it on %s", id, j, err, w)
			}
		}
	}
	t.Logf("claims by host: %v", hosts)
}

// Two stores retrying the same job at once: one retry.
func TestPostgresRetryRace(t *testing.T) {
	url := pgtest.URL(t)
	a, b := openPostgres(t, url), openPostgres(t, url)
	ctx := context.Background()
	j, err := a.CreateJob(ctx, store.Job{Name: "flaky"})
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	for _, s := range []*store.Postgres{a, b} {
		go func() {
			_, err := s.RetryJob(ctx, j.ID, store.Job{Name: "flaky"})
			errs <- err
		}()
	}
	e1, e2 := <-errs, <-errs
	if (e1 == nil) == (e2 == nil) || !errors.Is(errors.Join(e1, e2), store.ErrConflict) {
		t.Errorf("two RetryJob at once = %v, %v; want one nil, one ErrConflict", e1, e2)
	}
	if got, err := a.Attempts(ctx, j.ID); err != nil || len(got) != 2 {
		t.Errorf("Attempts = %d, %v; want 2", len(got), err)
	}
}

// A new database gets the whole schema; hosts opening it at once migrate
// it once; opening it again changes nothing.
func TestPostgresMigrates(t *testing.T) {
	url := pgtest.URL(t)
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := store.OpenPostgres(context.Background(), url, "")
			if err != nil {
				t.Errorf("OpenPostgres at once = %v", err)
				return
			}
			s.Close()
		}()
	}
	wg.Wait()
	s := openPostgres(t, url)
	if v, err := s.SchemaVersion(context.Background()); err != nil || v != store.SchemaVersion {
		t.Errorf("SchemaVersion = %d, %v; want %d", v, err, store.SchemaVersion)
	}
}

func TestPostgresRefusesNewerSchema(t *testing.T) {
	url := pgtest.URL(t)
	openPostgres(t, url).Close()
	db := sqlOpen(t, "pgx", url)
	newer := store.SchemaVersion + 4
	if _, err := db.Exec(`UPDATE schema_version SET version = $1`, newer); err != nil {
		t.Fatal(err)
	}
	_, err := store.OpenPostgres(context.Background(), url, "")
	if !errors.Is(err, store.ErrNewerSchema) || !strings.Contains(err.Error(), fmt.Sprintf("schema version %d, this labctl knows versions up to %d", newer, store.SchemaVersion)) {
		t.Errorf("OpenPostgres of a newer database = %v", err)
	}
	var v int
	if err := db.QueryRow(`SELECT version FROM schema_version`).Scan(&v); err != nil || v != newer {
		t.Errorf("after refusing, the version is %d, %v; want %d untouched", v, err, newer)
	}
}

// A database with labctl's table names but no schema_version is someone
// else's: refused, not changed.
func TestPostgresRefusesForeignDatabase(t *testing.T) {
	url := pgtest.URL(t)
	db := sqlOpen(t, "pgx", url)
	if _, err := db.Exec(`CREATE TABLE jobs (id INTEGER)`); err != nil {
		t.Fatal(err)
	}
	if _, err := store.OpenPostgres(context.Background(), url, ""); err == nil || !strings.Contains(err.Error(), "not a labctl database") {
		t.Errorf("OpenPostgres of a foreign database = %v", err)
	}
}

func TestPostgresBadURL(t *testing.T) {
	srv := pgtest.Shared(t)
	closed := fmt.Sprintf("postgres://labctl@127.0.0.1:%d/labctl?sslmode=disable&connect_timeout=5", freePort(t))
	tests := []struct{ url, want string }{
		{"postgres://labctl:hunter2@db.example:5432/labctl", "holds a password"},
		{"postgres://labctl@db.example/labctl?password=hunter2", "holds a password"},
		{"mysql://labctl@db.example/labctl", `the scheme is "mysql", not postgres`},
		{"postgres://labctl@db.example:99x/labctl", "does not parse"},
		{closed, "cannot connect to PostgreSQL at 127.0.0.1:"},
		{fmt.Sprintf("postgres://nobody@%s:%d/nosuchdb?sslmode=disable", srv.Host, srv.Port), "cannot connect"},
	}
	for _, tt := range tests {
		_, err := store.OpenPostgres(context.Background(), tt.url, "s3cret-pw")
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("OpenPostgres(%s) = %v, want an error with %q", tt.url, err, tt.want)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "s3cret-pw") {
			t.Errorf("OpenPostgres(%s) = %v: the error shows the password", tt.url, err)
		}
		t.Logf("%s: %v", tt.url, err)
	}
}

func sqlOpen(t *testing.T, driver, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Jobs submitted at once are inserted together; one the database
// refuses (PostgreSQL takes no NUL byte in text) fails alone.
func TestPostgresCreateBurstOneRefused(t *testing.T) {
	s := openPostgres(t, pgtest.URL(t))
	ctx := context.Background()
	const n = 20
	errs := make([]error, n)
	jobs := make([]store.Job, n)
	var wg sync.WaitGroup
	for i := range n {
		name := fmt.Sprintf("j%d", i)
		if i == 7 {
			name = "bad\x00name"
		}
		wg.Go(func() { jobs[i], errs[i] = s.CreateJob(ctx, store.Job{Name: name, Priority: "normal"}) })
	}
	wg.Wait()
	for i := range n {
		if i == 7 {
			if errs[i] == nil {
				t.Errorf("job with a NUL byte in its name was stored as %d", jobs[i].ID)
			}
			continue
		}
		if errs[i] != nil {
			t.Errorf("job %d: %v", i, errs[i])
			continue
		}
		if j, err := s.Job(ctx, jobs[i].ID); err != nil || j.Name != fmt.Sprintf("j%d", i) {
			t.Errorf("job %d (ID %d) reads back as %+v, %v", i, jobs[i].ID, j, err)
		}
	}
}
