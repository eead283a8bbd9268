package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/api"
	"github.com/labctl/labctl/simlab"
	"github.com/labctl/labctl/simlab/simlabtest"
	"github.com/labctl/labctl/store/pgtest"
)

// labHostProc is one host of a lab of several: its simulated rack (one
// real node, its own boot server), its lab file and its labctl serve.
type labHostProc struct {
	name    string
	lab     *simlab.Lab
	labFile string
	node    string
	client  *api.Client
	token   string
	serve   *serveProc
}

// startLabHost starts simulated rack i with one node, named rI-n1, and
// labctl serve on it as host rackI of the lab on the database at url.
func startLabHost(t *testing.T, bin, url, hostToken string, i int) *labHostProc {
	t.Helper()
	lab := simlabtest.StartLab(t, 1, simlab.Options{})
	h := &labHostProc{name: fmt.Sprint("rack", i), lab: lab, labFile: lab.ConfigPath, node: fmt.Sprintf("r%d-n1", i)}
	dir := filepath.Dir(lab.ConfigPath)
	dev := lab.Nodes[0].DeviceFile
	b, err := os.ReadFile(dev)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(b), `name = "node1"`, fmt.Sprintf("name = %q", h.node), 1)
	if err := os.WriteFile(filepath.Join(filepath.Dir(dev), h.node+".toml"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(dev); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "host.token"), []byte(hostToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	appendFile(t, lab.ConfigPath, fmt.Sprintf("\n[store]\nurl = %q\n\n[host]\nname = %q\ntoken_file = \"host.token\"\nlease = \"5s\"\npoll = \"250ms\"\n", url, h.name))
	h.token, h.client = labAdminClient(t, lab)
	h.serve = startServeProc(t, bin, lab.ConfigPath, h.client)
	return h
}

// TestLabHosts: three labctl serve hosts, each with its own simulated
// rack (one real node, its own boot server), on one PostgreSQL:
//   - jobs submitted through rack1 run on all three racks, each once, and
//     complete; `labctl logs -f` and a console through rack1 work for a
//     node of rack3;
//   - kill -9 of rack2 mid-job: its job ends incomplete ("host rack2
//     lost") once its lease has run out, rack3's job runs on; rack2
//     started again powers its node off before it takes work;
//   - PostgreSQL stopped for 30 s while jobs run and started again: every
//     job completes once, the daemons recover by themselves.
func TestLabHosts(t *testing.T) {
	bin := labctlBinary(t)
	srv := pgtest.Own(t)
	url, err := srv.NewDatabase()
	if err != nil {
		t.Fatal(err)
	}
	const hostToken = "lab-internal-host-token-0123456789"
	var hosts []*labHostProc
	for i := 1; i <= 3; i++ {
		hosts = append(hosts, startLabHost(t, bin, url, hostToken, i))
	}
	rack1, rack2, rack3 := hosts[0], hosts[1], hosts[2]
	for _, h := range hosts {
		waitLabDevice(t, rack1.client, h.node, labctl.DeviceIdle, 3*time.Minute)
	}
	if code, out := runClient(t, bin, rack1.client.Server(), rack1.token, "devices"); code != 0 ||
		!regexp.MustCompile(`(?m)^rack3\s+r3-n1\s`).MatchString(out) {
		t.Errorf("labctl devices through rack1: exit %d\n%s", code, out)
	}
	for _, h := range hosts {
		if strings.Contains(readFile(t, h.serve.log), hostToken) {
			t.Errorf("%s's daemon log shows the lab-internal token", h.name)
		}
	}

	// Jobs through rack1, on every rack.
	var ids []int64
	for i := range 6 {
		job := labJobFile(t, rack1.lab, fmt.Sprint("j", i), `device_type = "simlab-qemu"`, labStep)
		ids = append(ids, submitThrough(t, bin, rack1, job))
	}
	// logs -f through rack1 of the first job rack3 runs, and its console.
	var on3 int64
	deadline := time.Now().Add(5 * time.Minute)
	for on3 == 0 && time.Now().Before(deadline) {
		for _, id := range ids {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			j, err := rack1.client.Job(ctx, id)
			cancel()
			if err == nil && j.Host == "rack3" && j.State == labctl.JobRunning {
				on3 = id
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	if on3 == 0 {
		t.Fatal("no job ran on rack3 within 5 minutes")
	}
	follow := startClient(t, bin, rack1.client.Server(), rack1.token, "logs", "-f", fmt.Sprint(on3))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	att, err := rack1.client.AttachConsole(ctx, rack3.node, labctl.ConsoleOptions{ReadOnly: true, Replay: 50})
	if err != nil {
		t.Fatalf("console of %s through rack1: %v", rack3.node, err)
	}
	var seen strings.Builder
	for !strings.Contains(seen.String(), "login:") && !strings.Contains(seen.String(), "master#") {
		m, err := att.Next(ctx)
		if err != nil {
			t.Fatalf("console of %s through rack1: %v (after %q)", rack3.node, err, tail(seen.String(), 5))
		}
		seen.Write(m.Output)
	}
	att.Close()
	cancel()
	code, out := follow.wait(t, 5*time.Minute)
	if code != 0 || !strings.Contains(out, "kernel") {
		t.Errorf("labctl logs -f %d through rack1 (job on rack3): exit %d\n%s", on3, code, tail(out, 20))
	}
	perHost := map[string]int{}
	retries := 0
	for _, id := range ids {
		j := waitJob(t, rack1.client, id, "finished", 8*time.Minute, func(j labctl.Job) bool { return j.State == labctl.JobFinished })
		if j.Outcome == "incomplete" && j.RetriedAs != 0 {
			// The simulated node failed (a TCG guest can panic on a busy
			// machine): the lab retries it, once, and the retry must pass.
			t.Logf("job %d: incomplete %q: retried as job %d", id, j.Reason, j.RetriedAs)
			retries++
			perHost[j.Host]++
			j = waitJob(t, rack1.client, j.RetriedAs, "finished", 8*time.Minute, func(j labctl.Job) bool { return j.State == labctl.JobFinished })
		}
		if j.Outcome != "complete" || j.RetriedAs != 0 {
			t.Errorf("job %d: %s %q (retry of %d, retried as %d)", j.ID, j.Outcome, j.Reason, j.RetryOf, j.RetriedAs)
		}
		perHost[j.Host]++
	}
	if len(perHost) != 3 {
		t.Errorf("jobs per host: %v, want all three", perHost)
	}

	// kill -9 of rack2 mid-job.
	lost := labJobFile(t, rack1.lab, "lost", fmt.Sprintf("device = %q\nretries = 0", rack2.node), labStep)
	other := labJobFile(t, rack1.lab, "other", fmt.Sprintf("device = %q", rack3.node), labStep)
	var lostID, otherID int64
	for _, f := range []struct {
		file string
		id   *int64
	}{{lost, &lostID}, {other, &otherID}} {
		*f.id = submitThrough(t, bin, rack1, f.file)
	}
	waitJob(t, rack1.client, lostID, "deploying", 3*time.Minute, func(j labctl.Job) bool { return j.State == labctl.JobRunning })
	killed := time.Now()
	rack2.serve.kill9()
	killStrays(rack2.lab)
	j := waitJob(t, rack1.client, lostID, "ended by another host", 2*time.Minute, func(j labctl.Job) bool { return j.State == labctl.JobFinished })
	ended := time.Now()
	if j.Outcome != "incomplete" || !strings.HasPrefix(j.Reason, "host rack2 lost") {
		t.Errorf("job %d of the killed host: %s %q", lostID, j.Outcome, j.Reason)
	}
	if d := waitLabDevice(t, rack1.client, rack2.node, labctl.DeviceDown, time.Minute); !strings.Contains(d.Reason, "host rack2 is down") {
		t.Errorf("%s while rack2 is down: %q", rack2.node, d.Reason)
	}
	if j, err := rack1.client.Job(context.Background(), otherID); err != nil || j.State != labctl.JobRunning {
		t.Errorf("rack3's job after rack2 was lost: %+v, %v; want it running on", j, err)
	}
	restarted := time.Now()
	rack2.serve = startServeProc(t, bin, rack2.labFile, rack2.client)
	waitLabDevice(t, rack1.client, rack2.node, labctl.DeviceIdle, 3*time.Minute)
	cleaned := time.Now()
	if j := waitJob(t, rack3.client, otherID, "finished", 5*time.Minute, func(j labctl.Job) bool { return j.State == labctl.JobFinished }); j.Outcome != "complete" {
		t.Errorf("rack3's job while rack2 was lost: %s %q", j.Outcome, j.Reason)
	}
	if !poweredOffSince(t, rack2.lab.Nodes[0], restarted) && nodePower(t, rack2.lab.Nodes[0]) {
		t.Errorf("%s is on after rack2 came back", rack2.node)
	}
	if log := readFile(t, rack2.serve.log); !strings.Contains(log, "another host ended this host's job while it was away") {
		t.Errorf("rack2's log after the restart does not say it cleans up job %d's node", lostID)
	}
	t.Logf("kill -9 of rack2 at %s; lease 5s; job %d ended incomplete after %s; rack2 restarted after %s, node cleaned up and idle after %s",
		killed.Format(time.TimeOnly), lostID, ended.Sub(killed).Round(time.Millisecond), restarted.Sub(killed).Round(time.Millisecond), cleaned.Sub(restarted).Round(time.Millisecond))

	// PostgreSQL away for 30 s mid-run.
	var running []int64
	for _, h := range hosts {
		job := labJobFile(t, rack1.lab, "db-"+h.name, fmt.Sprintf("device = %q", h.node), labStep)
		running = append(running, submitThrough(t, bin, rack1, job))
	}
	for _, id := range running {
		waitJob(t, rack1.client, id, "running", 3*time.Minute, func(j labctl.Job) bool { return j.State == labctl.JobRunning })
	}
	logged := map[string]int{}
	for _, h := range hosts {
		logged[h.name] = len(readFile(t, h.serve.log))
	}
	srv.Pause()
	down := time.Now()
	code, out = runClient(t, bin, rack2.client.Server(), rack2.token, "jobs")
	if code == 0 || !strings.Contains(out, "store") {
		t.Errorf("labctl jobs while PostgreSQL is away: exit %d\n%s", code, out)
	}
	time.Sleep(30 * time.Second) // the outage itself
	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	t.Logf("PostgreSQL away for %s", time.Since(down).Round(time.Millisecond))
	for i, id := range running {
		j := waitJob(t, hosts[i].client, id, "finished", 8*time.Minute, func(j labctl.Job) bool { return j.State == labctl.JobFinished })
		if j.Outcome != "complete" || j.RetriedAs != 0 || j.Host != hosts[i].name {
			t.Errorf("job %d across the outage: %s %q on %s (retried as %d)", id, j.Outcome, j.Reason, j.Host, j.RetriedAs)
		}
	}
	list, err := rack1.client.Jobs(context.Background(), labctl.JobFilter{Limit: 1000})
	if err != nil {
		t.Fatalf("jobs after PostgreSQL came back: %v", err)
	}
	if want := len(ids) + retries + 2 + len(running); len(list) != want {
		t.Errorf("%d jobs in the lab after the outage, want %d (none lost, none added)", len(list), want)
	}
	for _, h := range hosts {
		if strings.Contains(readFile(t, h.serve.log)[logged[h.name]:], "its host is lost") {
			t.Errorf("host %s ended another host's job as lost after the outage", h.name)
		}
	}
}

// submitThrough submits a job file with labctl submit through host h
// and returns its ID.
func submitThrough(t *testing.T, bin string, h *labHostProc, file string) int64 {
	t.Helper()
	code, out := runClient(t, bin, h.client.Server(), h.token, "submit", file)
	var id int64
	if _, err := fmt.Sscan(out, &id); code != 0 || err != nil {
		t.Fatalf("submit %s through %s: exit %d\n%s", filepath.Base(file), h.name, code, out)
	}
	return id
}

// readFile returns a file's text; a file that cannot be read fails the
// test, so that a check that a log does not say something cannot pass on
// a log that is not there.
func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
