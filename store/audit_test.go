package store_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/labctl/labctl/store"
)

// A database made before the audit trail (schema version 1, with the
// tables of version 2) gets its table when opened.
func TestSQLiteAddsAuditTable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "labctl.db")
	s, err := store.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`DROP TABLE audit; DROP TABLE hosts; DROP TABLE lab_devices; DROP INDEX jobs_claim;
		ALTER TABLE jobs DROP COLUMN claim_host; ALTER TABLE jobs DROP COLUMN cleanup; PRAGMA user_version = 1`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err = store.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.AddAudit(context.Background(), store.AuditEntry{Who: "ci", Action: "submit", Result: "ok"}); err != nil {
		t.Errorf("AddAudit on a database made before the audit trail = %v", err)
	}
}
