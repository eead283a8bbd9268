package store_test

import (
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/labctl/labctl/store"
	"github.com/labctl/labctl/store/storetest"
)

func TestSQLite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) func() (store.Store, error) {
		path := filepath.Join(t.TempDir(), "state", "labctl.db")
		return func() (store.Store, error) { return store.OpenSQLite(path) }
	})
}

func TestSQLiteRefusesNewerSchema(t *testing.T) {
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
	if _, err := db.Exec("PRAGMA user_version = 7"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := store.OpenSQLite(path); err == nil {
		t.Fatal("OpenSQLite opened a database of schema version 7")
	}
}
