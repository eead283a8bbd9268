package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/labctl/labctl/store"
	"github.com/labctl/labctl/store/pgtest"
)

// asHost appends a [host] table to a lab file.
func asHost(t *testing.T, labFile, name string) {
	t.Helper()
	appendFile(t, labFile, fmt.Sprintf("[host]\nname = %q\nlease = \"4s\"\npoll = \"250ms\"\n", name))
}

// Bad input stops labctl serve at start with a clear error, and writes
// nothing to the database: a store URL that does not parse, a database a
// newer labctl migrated, a device another host of the lab has.
func TestServeHostsBadInput(t *testing.T) {
	labFile, _ := commandLab(t)
	withStore(t, labFile, "postgres://labctl@db:port/labctl")
	err := runServe(context.Background(), serveOptions{lab: labFile}, &appEnv{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv})
	if err == nil || !strings.Contains(err.Error(), "lab.toml:") || !strings.Contains(err.Error(), "store.url") {
		t.Errorf("labctl serve with a store URL that does not parse = %v, want the file, line and key", err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(labFile), "state")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("labctl serve with a bad store URL made its state directory: %v", err)
	}

	// A newer schema.
	url := pgtest.URL(t)
	s, err := store.OpenPostgres(context.Background(), url, "")
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE schema_version SET version = 99`); err != nil {
		t.Fatal(err)
	}
	labFile, _ = commandLab(t)
	withStore(t, labFile, url)
	asHost(t, labFile, "rack1")
	env, _, _ := envWith(nil)
	err = runServe(context.Background(), serveOptions{lab: labFile}, env)
	if err == nil || !strings.Contains(err.Error(), "the database is at schema version 99, this labctl knows versions up to") {
		t.Errorf("labctl serve on a newer schema = %v", err)
	}
	var hosts int
	if err := db.QueryRow(`SELECT COUNT(*) FROM hosts`).Scan(&hosts); err != nil || hosts != 0 {
		t.Errorf("hosts after a refused start on a newer schema: %d, %v", hosts, err)
	}

	// Two hosts claiming one device.
	url = pgtest.URL(t)
	first, _ := commandLab(t)
	withStore(t, first, url)
	asHost(t, first, "rack1")
	startServe(t, first)
	second, _ := commandLab(t)
	withStore(t, second, url)
	asHost(t, second, "rack2")
	env, _, _ = envWith(nil)
	err = runServe(context.Background(), serveOptions{lab: second}, env)
	if !errors.Is(err, store.ErrDeviceTaken) || !strings.Contains(err.Error(), "device n1 is host rack1's, and host rack2 claims it too") {
		t.Errorf("a second host with the same device = %v, want refused naming rack1 and rack2", err)
	}
	s, err = store.OpenPostgres(context.Background(), url, "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if hs, err := s.Hosts(context.Background()); err != nil || len(hs) != 1 || hs[0].Name != "rack1" {
		t.Errorf("hosts after the refused start: %+v, %v; want rack1 only", hs, err)
	}
	// --host names the host, over the lab file.
	env, _, _ = envWith(nil)
	err = runServe(context.Background(), serveOptions{lab: second, host: "bad name"}, env)
	if err == nil || !strings.Contains(err.Error(), `host name "bad name"`) {
		t.Errorf("labctl serve --host 'bad name' = %v", err)
	}
}
