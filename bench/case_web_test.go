package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/labctl/labctl/store"
)

// fillFinished leaves n finished jobs, oldest first, with their
// outcomes and devices (the lab's, each in turn), as the daemon's listing
// reads them.
func TestFillFinished(t *testing.T) {
	path := filepath.Join(t.TempDir(), "labctl.db")
	if err := fillFinished(context.Background(), path, 50, 8); err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	jobs, err := st.Jobs(context.Background(), store.JobFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 50 {
		t.Fatalf("%d jobs, want 50", len(jobs))
	}
	outcomes, devices := map[string]int{}, map[string]int{}
	for i, j := range jobs {
		if j.State != store.Finished || j.RunDevice == "" || j.Finished.Before(j.Started) {
			t.Errorf("job %d: %+v", i, j)
		}
		devices[j.RunDevice]++
		if i > 0 && jobs[i-1].ID >= j.ID {
			t.Errorf("jobs out of order at %d", i)
		}
		outcomes[j.Outcome]++
	}
	if outcomes["complete"] != 30 || outcomes["failed"] != 10 || outcomes["incomplete"] != 10 {
		t.Errorf("outcomes %v", outcomes)
	}
	// 50 jobs on 8 devices: node001 to node002 run 7, the others 6.
	for d := 1; d <= 8; d++ {
		name := fmt.Sprintf("node%03d", d)
		want := 6
		if d <= 2 {
			want = 7
		}
		if devices[name] != want {
			t.Errorf("%s ran %d jobs, want %d", name, devices[name], want)
		}
		delete(devices, name)
	}
	if len(devices) != 0 {
		t.Errorf("jobs on devices not in the lab: %v", devices)
	}
}
