package daemon_test

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/daemon/daemontest"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/dispatcher"
	"github.com/labctl/labctl/results"
	"github.com/labctl/labctl/store"
)

// dirRun is a RunFunc that writes a job directory (a log line and the
// results) and completes at once; jobs named "hold" run until canceled.
func dirRun(ctx context.Context, j dispatcher.Job) *results.Job {
	res := &results.Job{ID: j.ID, Name: j.Spec.Name, Device: j.Device, Started: time.Now()}
	os.MkdirAll(j.Dir, 0o750)
	os.WriteFile(filepath.Join(j.Dir, "job.log"), []byte("hello\n"), 0o640)
	if j.Spec.Name == "hold" {
		<-ctx.Done()
		end := dispatcher.Stopped(context.Cause(ctx))
		res.Outcome, res.Reason = string(end.Outcome), end.Reason
	} else {
		res.Outcome = "complete"
	}
	res.Finished = time.Now()
	res.WriteFiles(j.Dir)
	return res
}

// Retention keeps the newest max_jobs finished jobs and removes the
// others' rows and directories, never a running or a queued job's; at
// start it removes job directories the database does not know.
func TestRetentionKeepsNewestFinished(t *testing.T) {
	t.Parallel()
	state := t.TempDir()
	for _, orphan := range []string{"jobs/999", "jobs/7.old-1700000000"} {
		os.MkdirAll(filepath.Join(state, orphan), 0o750)
	}
	l := daemontest.Start(t, daemontest.Options{Nodes: 2, Fake: true, Run: dirRun, StateDir: state,
		Retention: devices.Retention{MaxJobs: 3}, RetentionEvery: 20 * time.Millisecond})
	l.WaitIdle()
	hold := l.Submit(daemontest.JobText(t, "name = \"hold\"\ndevice = \"node1\"\n"))
	l.WaitDevice("node1", labctl.DeviceRunning)
	queued := l.Submit(daemontest.JobText(t, "name = \"queued\"\ndevice = \"node1\"\n"))
	var done []int64
	for i := range 8 {
		j := l.Submit(daemontest.JobText(t, fmt.Sprintf("name = \"j%d\"\ndevice = \"node2\"\n", i)))
		l.Wait(j.ID)
		done = append(done, j.ID)
	}
	jobDir := func(id int64) string { return filepath.Join(state, "jobs", strconv.FormatInt(id, 10)) }
	waitFor(t, "retention to remove the oldest finished jobs", func() bool {
		_, err := l.Store.Job(context.Background(), done[4])
		_, serr := os.Stat(jobDir(done[4])) // the rows go first, then the directories
		return err != nil && serr != nil
	})
	for i, id := range done {
		_, err := l.Store.Job(context.Background(), id)
		_, serr := os.Stat(jobDir(id))
		kept := i >= len(done)-3
		if kept != (err == nil) || kept != (serr == nil) {
			t.Errorf("job %d (%d of %d): row %v, directory %v; want kept %v", id, i+1, len(done), err, serr, kept)
		}
	}
	for _, id := range []int64{hold.ID, queued.ID} {
		if rec, err := l.Store.Job(context.Background(), id); err != nil || rec.State == store.Finished {
			t.Errorf("job %d: %+v, %v; want it kept, not finished", id, rec, err)
		}
	}
	if _, err := os.Stat(jobDir(hold.ID)); err != nil {
		t.Errorf("the running job's directory: %v", err)
	}
	for _, orphan := range []string{"jobs/999", "jobs/7.old-1700000000"} {
		if _, err := os.Stat(filepath.Join(state, orphan)); err == nil {
			t.Errorf("%s, of no job in the database, was kept", orphan)
		}
	}
}

// Nothing in the state directory is readable by other users after a job
// (the real pipeline on a simulated node: job log, results, console log,
// health log, database); an existing loose state directory is tightened
// at start.
func TestStateFilesNotReadableByOthers(t *testing.T) {
	t.Parallel()
	state := t.TempDir()
	os.Chmod(state, 0o755)
	os.MkdirAll(filepath.Join(state, "jobs", "old"), 0o755)
	os.WriteFile(filepath.Join(state, "jobs", "old", "job.log"), []byte("password\n"), 0o644)
	l := daemontest.Start(t, daemontest.Options{Nodes: 1, StateDir: state})
	l.WaitIdle()
	j := l.Wait(l.Submit(daemontest.JobText(t, "name = \"a\"\ndevice = \"node1\"\n")).ID)
	if j.Outcome != "complete" {
		t.Fatalf("job: %s %s", j.Outcome, j.Reason)
	}
	l.Shutdown()
	var seen []string
	filepath.WalkDir(state, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			t.Error(err)
			return nil
		}
		fi, err := e.Info()
		if err != nil || fi.Mode()&fs.ModeSymlink != 0 {
			return nil
		}
		rel, _ := filepath.Rel(state, path)
		seen = append(seen, rel)
		if fi.Mode().Perm()&0o007 != 0 {
			t.Errorf("%s is %v: other users may read it", rel, fi.Mode().Perm())
		}
		return nil
	})
	for _, want := range []string{"labctl.db", "jobs/1/job.log", "jobs/1/results.json", "devices/node1/health.log"} {
		if !strings.Contains(strings.Join(seen, "\n")+"\n", want+"\n") {
			t.Errorf("%s was not written (state: %v)", want, seen)
		}
	}
	if !strings.Contains(l.Log(), "tightened") {
		t.Errorf("the daemon did not log the modes it tightened")
	}
}

// TestRetentionRSS measures the daemon's memory after 10,000 jobs have come
// and gone with retention on. It reports, it does not judge: run it with
// LABCTL_MEASURE_RSS=1 (go test -run TestRetentionRSS -v ./daemon).
func TestRetentionRSS(t *testing.T) {
	if os.Getenv("LABCTL_MEASURE_RSS") != "1" {
		t.Skip("a measurement: set LABCTL_MEASURE_RSS=1 to run it")
	}
	total, wave := 10000, 200
	if n, err := strconv.Atoi(os.Getenv("LABCTL_MEASURE_RSS_JOBS")); err == nil {
		total = n
	}
	l := daemontest.Start(t, daemontest.Options{Nodes: 8, Fake: true, Run: dirRun, Quiet: true,
		Retention: devices.Retention{MaxJobs: 500}, RetentionEvery: time.Second})
	l.WaitIdle()
	text := daemontest.JobText(t, "device_type = \"sim\"\n")
	report := func(when string) {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		status, _ := os.ReadFile("/proc/self/status")
		rss := ""
		for _, line := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(line, "VmRSS:") || strings.HasPrefix(line, "VmHWM:") {
				rss += strings.Join(strings.Fields(line), " ") + " "
			}
		}
		t.Logf("%s: %s heap in use %d KiB, goroutines %d", when, rss, m.HeapInuse>>10, runtime.NumGoroutine())
	}
	report("start")
	// One context for all calls: daemontest's per-call contexts each
	// stay registered until the test ends, which is not the daemon's
	// memory.
	c := ctx(t)
	for n := 0; n < total; n += wave {
		ids := make([]int64, 0, wave)
		for range wave {
			j, err := l.Daemon.Submit(c, labctl.SubmitRequest{File: "job.toml", Dir: "/", Spec: text})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, j.ID)
		}
		for _, id := range ids {
			if err := l.Daemon.Follow(c, id, labctl.FollowOptions{NoLog: true}, func(labctl.Event) error { return nil }); err != nil {
				t.Fatal(err)
			}
		}
		if (n+wave)%2000 == 0 {
			report(fmt.Sprintf("after %d jobs", n+wave))
		}
	}
	var list []store.Job
	var entries []os.DirEntry
	waitFor(t, "a last retention pass", func() bool {
		list, _ = l.Store.Jobs(context.Background(), store.JobFilter{})
		entries, _ = os.ReadDir(filepath.Join(l.Config.StateDir, "jobs"))
		return len(list) <= 500 && len(entries) <= 500
	})
	db, _ := os.Stat(l.DBPath)
	t.Logf("kept: %d job directories, %d rows, database %d KiB", len(entries), len(list), db.Size()>>10)
	report(fmt.Sprintf("after %d jobs", total))
}
