package store_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/labctl/labctl/store"
)

func BenchmarkCreateJob(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	for b.Loop() {
		s.CreateJob(ctx, store.Job{Name: "a", File: "a.toml", Dir: "/", Spec: "device = \"x\"\n[deploy]\nimage = \"/x\"\n", Tags: []string{"x"}, Priority: "normal"})
	}
}

func BenchmarkSetDevice(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	for b.Loop() {
		s.SetDevices(ctx, []store.Device{{Name: "node1", State: "idle", Since: time.Now()}})
	}
}

// benchStore is an empty SQLite store that is closed when the benchmark
// ends.
func benchStore(b *testing.B) *store.SQLite {
	b.Helper()
	s, err := store.OpenSQLite(filepath.Join(b.TempDir(), "x.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}
