package store_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/labctl/labctl/store"
)

func BenchmarkCreateJob(b *testing.B) {
	s, err := store.OpenSQLite(filepath.Join(b.TempDir(), "x.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for b.Loop() {
		s.CreateJob(ctx, store.Job{Name: "a", File: "a.toml", Dir: "/", Spec: "device = \"x\"\n[deploy]\nimage = \"/x\"\n", Tags: []string{"x"}, Priority: "normal"})
	}
}

func BenchmarkSetDevice(b *testing.B) {
	s, err := store.OpenSQLite(filepath.Join(b.TempDir(), "x.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for b.Loop() {
		s.SetDevices(ctx, []store.Device{{Name: "node1", State: "idle", Since: time.Now()}})
	}
}
