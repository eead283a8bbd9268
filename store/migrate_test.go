package store_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/labctl/labctl/store"
)

// legacySchema is the database an older labctl made: user_version 1 with
// jobs and devices; later ones also created the attempt, reservation and
// audit tables on every open.
const legacySchema = `
CREATE TABLE jobs (
	id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, file TEXT NOT NULL, dir TEXT NOT NULL,
	spec TEXT NOT NULL, device TEXT NOT NULL, device_type TEXT NOT NULL, tags TEXT NOT NULL,
	priority TEXT NOT NULL, submitter TEXT NOT NULL, state TEXT NOT NULL,
	run_device TEXT NOT NULL DEFAULT '', outcome TEXT NOT NULL DEFAULT '', reason TEXT NOT NULL DEFAULT '',
	submitted INTEGER NOT NULL, started INTEGER NOT NULL DEFAULT 0, finished INTEGER NOT NULL DEFAULT 0, result BLOB
);
CREATE INDEX jobs_state ON jobs (state, id);
CREATE INDEX jobs_run_device ON jobs (run_device, id);
CREATE TABLE devices (
	name TEXT PRIMARY KEY, state TEXT NOT NULL, reason TEXT NOT NULL, since INTEGER NOT NULL,
	maintenance INTEGER NOT NULL, maintenance_reason TEXT NOT NULL
);
PRAGMA user_version = 1;
INSERT INTO jobs (name, file, dir, spec, device, device_type, tags, priority, submitter, state, submitted)
	VALUES ('old', 'old.toml', '/', 'x', 'node1', '', '[]', 'normal', 'ci', 'queued', 1);
`

const legacyExtra = `
CREATE TABLE job_attempts (job INTEGER PRIMARY KEY, first INTEGER NOT NULL, retry_of INTEGER NOT NULL UNIQUE);
CREATE INDEX job_attempts_first ON job_attempts (first, job);
CREATE TABLE reservations (device TEXT PRIMARY KEY, owner TEXT NOT NULL, reason TEXT NOT NULL, since INTEGER NOT NULL, until INTEGER NOT NULL);
INSERT INTO reservations VALUES ('node1', 'alice', 'x', 1, 2);
`

const legacyAudit = `
CREATE TABLE audit (
	id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, who TEXT NOT NULL, role TEXT NOT NULL,
	remote TEXT NOT NULL, action TEXT NOT NULL, device TEXT NOT NULL, job INTEGER NOT NULL,
	detail TEXT NOT NULL, result TEXT NOT NULL, error TEXT NOT NULL
);
INSERT INTO audit (at, who, role, remote, action, device, job, detail, result, error)
	VALUES (1, 'alice', 'admin', '', 'power', 'node1', 0, 'off', 'ok', '');
`

// Databases made by earlier labctl versions, with or without the tables
// added to them on open, are recognised as version 1 and brought to the
// current version, keeping what they hold.
func TestSQLiteMigratesLegacyDatabases(t *testing.T) {
	for name, sql := range map[string]string{
		"version 1":               legacySchema,
		"with attempts":           legacySchema + legacyExtra,
		"with attempts and audit": legacySchema + legacyExtra + legacyAudit,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "labctl.db")
			db := sqlOpen(t, "sqlite", path)
			if _, err := db.Exec(sql); err != nil {
				t.Fatal(err)
			}
			db.Close()
			s, err := store.OpenSQLite(path)
			if err != nil {
				t.Fatalf("OpenSQLite of a legacy database = %v", err)
			}
			defer s.Close()
			ctx := context.Background()
			if v, err := s.SchemaVersion(ctx); err != nil || v != store.SchemaVersion {
				t.Errorf("SchemaVersion = %d, %v; want %d", v, err, store.SchemaVersion)
			}
			if j, err := s.Job(ctx, 1); err != nil || j.Name != "old" || j.State != store.Queued {
				t.Errorf("the old job = %+v, %v", j, err)
			}
			if _, err := s.RetryJob(ctx, 1, store.Job{Name: "old"}); err != nil {
				t.Errorf("RetryJob = %v", err)
			}
			if err := s.SetReservation(ctx, store.Reservation{Device: "node2", Owner: "bob"}); err != nil {
				t.Errorf("SetReservation = %v", err)
			}
			if _, err := s.AddAudit(ctx, store.AuditEntry{Who: "ci", Action: "submit", Result: "ok"}); err != nil {
				t.Errorf("AddAudit = %v", err)
			}
			if strings.Contains(sql, "reservations") {
				if r, err := s.Reservations(ctx); err != nil || len(r) != 2 {
					t.Errorf("reservations kept: %+v, %v", r, err)
				}
			}
			if strings.Contains(sql, "audit") {
				if a, err := s.Audit(ctx, store.AuditFilter{}); err != nil || len(a) != 2 || a[0].Who != "alice" {
					t.Errorf("audit kept: %+v, %v", a, err)
				}
			}
			if err := s.CheckWrite(ctx); err != nil {
				t.Fatal(err)
			}
			if v, err := s.SchemaVersion(ctx); err != nil || v != store.SchemaVersion {
				t.Errorf("after CheckWrite, SchemaVersion = %d, %v; want %d", v, err, store.SchemaVersion)
			}
		})
	}
}

func TestSQLiteRefusesNewerSchemaNamingBoth(t *testing.T) {
	path := filepath.Join(t.TempDir(), "labctl.db")
	s, err := store.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	newer := store.SchemaVersion + 1
	db := sqlOpen(t, "sqlite", path)
	if _, err := db.Exec(fmt.Sprintf("PRAGMA user_version = %d", newer)); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = store.OpenSQLite(path)
	want := fmt.Sprintf("the database is at schema version %d, this labctl knows versions up to %d", newer, store.SchemaVersion)
	if !errors.Is(err, store.ErrNewerSchema) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
		t.Errorf("OpenSQLite of a newer database = %v, want %q", err, want)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
