package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl/store"
	"github.com/labctl/labctl/store/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// withStore adds a [store] table to a lab file, and a password file.
func withStore(t *testing.T, labFile, url string) {
	t.Helper()
	pw := filepath.Join(filepath.Dir(labFile), "pg.password")
	if err := os.WriteFile(pw, []byte("pg-s3cret-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(labFile, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintf(f, "[store]\nurl = %q\npassword_file = \"pg.password\"\n", url)
}

// labctl serve keeps its jobs and device states in the PostgreSQL
// database of [store] url.
func TestServePostgres(t *testing.T) {
	url := pgtest.URL(t)
	labFile, token := commandLab(t)
	withStore(t, labFile, url)
	vars := map[string]string{"LABCTL_SERVER": startServe(t, labFile), "LABCTL_TOKEN": token}
	waitForDevice(t, vars, "n1", "idle")
	if code, _, _ := runLabctl(t, vars, "device", "n1", "maintenance", "--reason", "new fan"); code != 0 {
		t.Fatalf("device n1 maintenance: exit %d", code)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "disk.img"), []byte("image"), 0o644)
	sum := sha256.Sum256([]byte("image"))
	job := filepath.Join(dir, "j.toml")
	os.WriteFile(job, []byte(fmt.Sprintf("device = \"n1\"\n[deploy]\nimage = \"disk.img\"\nsha256 = %q\n[[test]]\nname = \"t\"\ncommands = [\"true\"]\n", hex.EncodeToString(sum[:]))), 0o644)
	if code, _, _ := runLabctl(t, vars, "submit", job); code != 0 {
		t.Fatalf("submit: exit %d", code)
	}

	s, err := store.OpenPostgres(context.Background(), url, "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	jobs, err := s.Jobs(context.Background(), store.JobFilter{})
	if err != nil || len(jobs) != 1 || jobs[0].Device != "n1" || jobs[0].State != store.Queued {
		t.Errorf("jobs in PostgreSQL: %+v, %v; want the one queued for n1 (in maintenance)", jobs, err)
	}
	devs, err := s.Devices(context.Background())
	if err != nil || len(devs) != 1 || devs[0].Name != "n1" || !devs[0].Maintenance {
		t.Errorf("devices in PostgreSQL: %+v, %v; want n1 in maintenance", devs, err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(labFile), "state", "labctl.db")); !os.IsNotExist(err) {
		t.Errorf("labctl serve with a PostgreSQL store made an SQLite database too: %v", err)
	}
}

// A store that cannot be reached stops labctl serve at once, with an
// error naming the server and not the password, before it writes
// anything.
func TestServeStoreUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	labFile, _ := commandLab(t)
	withStore(t, labFile, "postgres://labctl@"+addr+"/labctl?sslmode=disable&connect_timeout=5")
	env, _, stderr := envWith(nil)
	start := time.Now()
	err = runServe(context.Background(), serveOptions{lab: labFile}, env)
	if err == nil || !strings.Contains(err.Error(), "cannot connect to PostgreSQL at "+addr) {
		t.Fatalf("labctl serve with an unreachable store = %v", err)
	}
	t.Logf("%v (after %v)", err, time.Since(start))
	if strings.Contains(err.Error()+stderr.String(), "pg-s3cret-pw") {
		t.Errorf("the error shows the password: %v\n%s", err, stderr)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(labFile), "state")); !os.IsNotExist(err) {
		t.Errorf("labctl serve wrote its state directory before it had a store: %v", err)
	}
}

// labctl store copy moves a lab's SQLite database into PostgreSQL; not
// while a daemon holds it, not into a database that has data.
func TestStoreCopy(t *testing.T) {
	url := pgtest.URL(t)
	stateDir := filepath.Join(t.TempDir(), "state")
	dbFile := filepath.Join(stateDir, "labctl.db")
	src, err := store.OpenSQLite(dbFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var last store.Job
	for i := range 3 {
		if last, err = src.CreateJob(ctx, store.Job{Name: fmt.Sprintf("j%d", i), Priority: "normal", Submitter: "ci"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.ClaimJob(ctx, last.ID, "n1", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := src.FinishJob(ctx, last.ID, store.Running, store.Finish{Outcome: "complete", At: time.Now(), Result: []byte(`{"outcome":"complete"}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := src.AddAudit(ctx, store.AuditEntry{Who: "ci", Action: "submit", Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	src.Close()

	unlock, err := lockStateDir(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runLabctl(t, nil, "store", "copy", "--from", dbFile, "--to", url)
	if code != 1 || !strings.Contains(stderr, "in use by pid") || !strings.Contains(stderr, "stop the daemon first") {
		t.Errorf("store copy while a daemon holds the database: exit %d, %s", code, stderr)
	}
	unlock()

	code, stdout, stderr := runLabctl(t, nil, "store", "copy", "--from", dbFile, "--to", url)
	if code != 0 || !strings.Contains(stdout, "jobs          3\n") || !strings.Contains(stdout, "audit         1\n") {
		t.Fatalf("store copy: exit %d\n%s%s", code, stdout, stderr)
	}
	dst, err := store.OpenPostgres(ctx, url, "")
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if j, err := dst.Job(ctx, last.ID); err != nil || j.Outcome != "complete" || string(j.Result) != `{"outcome":"complete"}` {
		t.Errorf("the copied job: %+v, %v", j, err)
	}

	code, _, stderr = runLabctl(t, nil, "store", "copy", "--from", dbFile, "--to", url)
	if code != 1 || !strings.Contains(stderr, "not empty") {
		t.Errorf("store copy into a database with data: exit %d, %s", code, stderr)
	}
	code, _, stderr = runLabctl(t, nil, "store", "copy", "--from", dbFile, "--to", "postgres://u:pw@h/db")
	if code != 64 || !strings.Contains(stderr, "holds a password") {
		t.Errorf("store copy to a URL with a password: exit %d, %s", code, stderr)
	}
	code, _, stderr = runLabctl(t, nil, "store", "copy", "--from", filepath.Join(t.TempDir(), "none.db"), "--to", url)
	if code != 1 || !strings.Contains(stderr, "no such file") {
		t.Errorf("store copy from a missing file: exit %d, %s", code, stderr)
	}
}
