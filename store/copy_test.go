package store_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/labctl/labctl/store"
	"github.com/labctl/labctl/store/pgtest"
)

// fillSample gives s a small lab's history: finished jobs with results,
// a retried job, a running and a queued one, devices, a reservation and
// audit entries.
func fillSample(t *testing.T, s store.Store) {
	t.Helper()
	ctx := context.Background()
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	var ids []int64
	for i := range 5 {
		j, err := s.CreateJob(ctx, store.Job{Name: fmt.Sprintf("j%d", i), File: "j.toml", Dir: "/srv", Spec: "x = 1\n",
			DeviceType: "qemu", Tags: []string{"a", "ü"}, Priority: "normal", Submitter: "ci", Submitted: at})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	for _, id := range ids[:3] {
		if err := s.ClaimJob(ctx, id, "node1", at.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	for i, id := range ids[:2] {
		if err := s.FinishJob(ctx, id, store.Running, store.Finish{Outcome: "incomplete", Reason: "x", At: at.Add(time.Minute),
			Result: []byte(fmt.Sprintf(`{"id":"%d"}`, i))}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.RetryJob(ctx, ids[0], store.Job{Name: "j0", Submitted: at}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDevices(ctx, []store.Device{{Name: "node1", State: "running", Since: at}, {Name: "node2", State: "maintenance", Since: at, Maintenance: true, MaintenanceReason: "fan"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetReservation(ctx, store.Reservation{Device: "node2", Owner: "alice", Reason: "bisect", Since: at, Until: at.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	for _, who := range []string{"alice", "bob"} {
		if _, err := s.AddAudit(ctx, store.AuditEntry{At: at, Who: who, Role: "admin", Action: "power", Device: "node1", Result: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
}

// sameContents fails unless a and b hold the same jobs, attempts,
// devices, reservations and audit trail.
func sameContents(t *testing.T, a, b store.Store) {
	t.Helper()
	ctx := context.Background()
	ja, err1 := a.Jobs(ctx, store.JobFilter{})
	jb, err2 := b.Jobs(ctx, store.JobFilter{})
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	if len(ja) != len(jb) {
		t.Fatalf("%d jobs, copied %d", len(ja), len(jb))
	}
	for i := range ja {
		x, y := ja[i], jb[i]
		if x.ID != y.ID || x.Name != y.Name || x.Spec != y.Spec || !slices.Equal(x.Tags, y.Tags) || x.State != y.State ||
			x.RunDevice != y.RunDevice || x.Outcome != y.Outcome || string(x.Result) != string(y.Result) ||
			!x.Submitted.Equal(y.Submitted) || !x.Started.Equal(y.Started) || !x.Finished.Equal(y.Finished) {
			t.Errorf("job %d: %+v, copied %+v", x.ID, x, y)
		}
		aa, err1 := a.Attempts(ctx, x.ID)
		ab, err2 := b.Attempts(ctx, x.ID)
		if err := errors.Join(err1, err2); err != nil || len(aa) != len(ab) {
			t.Errorf("attempts of job %d: %d, copied %d (%v)", x.ID, len(aa), len(ab), err)
		}
	}
	da, err1 := a.Devices(ctx)
	db, err2 := b.Devices(ctx)
	if err := errors.Join(err1, err2); err != nil || fmt.Sprint(da) != fmt.Sprint(db) {
		t.Errorf("devices %v, copied %v (%v)", da, db, err)
	}
	ra, err1 := a.Reservations(ctx)
	rb, err2 := b.Reservations(ctx)
	if err := errors.Join(err1, err2); err != nil || fmt.Sprint(ra) != fmt.Sprint(rb) {
		t.Errorf("reservations %v, copied %v (%v)", ra, rb, err)
	}
	aa, err1 := a.Audit(ctx, store.AuditFilter{})
	ab, err2 := b.Audit(ctx, store.AuditFilter{})
	if err := errors.Join(err1, err2); err != nil || fmt.Sprint(aa) != fmt.Sprint(ab) {
		t.Errorf("audit %v, copied %v (%v)", aa, ab, err)
	}
}

func TestCopy(t *testing.T) {
	ctx := context.Background()
	src, err := store.OpenSQLite(filepath.Join(t.TempDir(), "labctl.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	fillSample(t, src)
	dst := openPostgres(t, pgtest.URL(t))
	counts, err := store.Copy(ctx, src, dst)
	if err != nil {
		t.Fatalf("Copy = %v", err)
	}
	t.Logf("copied %v", counts)
	want := map[string]int{"jobs": 6, "job_attempts": 1, "devices": 2, "reservations": 1, "audit": 2}
	for _, c := range counts {
		if want[c.Table] != c.Rows {
			t.Errorf("copied %d rows of %s, want %d", c.Rows, c.Table, want[c.Table])
		}
	}
	sameContents(t, src, dst)

	// New rows get IDs after the copied ones.
	j, err := dst.CreateJob(ctx, store.Job{Name: "new"})
	if err != nil || j.ID != 7 {
		t.Errorf("a new job after the copy = %d, %v; want ID 7", j.ID, err)
	}
	if id, err := dst.AddAudit(ctx, store.AuditEntry{Who: "x", Action: "y"}); err != nil || id != 3 {
		t.Errorf("a new audit entry after the copy = %d, %v; want ID 3", id, err)
	}

	// Again into the same database: refused, nothing changed.
	if _, err := store.Copy(ctx, src, dst); !errors.Is(err, store.ErrNotEmpty) {
		t.Errorf("Copy into a store with jobs = %v, want ErrNotEmpty", err)
	}
	if got, err := dst.Jobs(ctx, store.JobFilter{}); err != nil || len(got) != 7 {
		t.Errorf("after the refused copy: %d jobs, %v; want 7", len(got), err)
	}
}
