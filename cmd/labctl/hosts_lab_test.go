package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/api"
	"github.com/labctl/labctl/simlab"
	"github.com/labctl/labctl/simlab/farm"
	"github.com/labctl/labctl/simlab/simlabtest"
	"github.com/labctl/labctl/store"
	"github.com/labctl/labctl/store/pgtest"
)

// labHostProc is one host of a lab of several: its simulated rack (one
// real node, fake nodes, its own boot server), its lab file and its
// labctl serve.
type labHostProc struct {
	name    string
	lab     *simlab.Lab
	labFile string
	node    string
	fakes   *farm.Farm
	client  *api.Client
	token   string
	serve   *serveProc
}

// fakeNodeType is the device type of the lab tests' fake nodes.
const fakeNodeType = "farm-node"

// startLabHost starts simulated rack i with one real node, named rI-n1,
// and fakes fake nodes (simlab/farm) named rI-fJ on its boot server, and
// labctl serve on them as host rackI of the lab on the database at url.
func startLabHost(t *testing.T, bin, url, hostToken string, i, fakes int) *labHostProc {
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
	if fakes > 0 {
		h.fakes = startFakeNodes(t, lab, i, fakes)
	}
	appendFile(t, lab.ConfigPath, fmt.Sprintf("\n[store]\nurl = %q\n\n[host]\nname = %q\ntoken_file = \"host.token\"\nlease = \"5s\"\npoll = \"250ms\"\n", url, h.name))
	h.token, h.client = labAdminClient(t, lab)
	h.serve = startServeProc(t, bin, lab.ConfigPath, h.client)
	return h
}

// startFakeNodes plays n fake nodes rI-f1... for the simulated rack i
// (simlab/farm, in this process: a BMC on a UDP port each, their shells
// on the rack's boot server) and adds them, and their device type, to
// the rack's lab file. They are stopped when the test ends.
func startFakeNodes(t *testing.T, lab *simlab.Lab, i, n int) *farm.Farm {
	t.Helper()
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("fake nodes: busybox (busybox-static): %v", err)
	}
	dir := t.TempDir()
	if err := farm.WriteBin(dir, busybox); err != nil {
		t.Fatal(err)
	}
	var nodes []farm.NodeConfig
	for j := 1; j <= n; j++ {
		nodes = append(nodes, farm.NodeConfig{Name: fmt.Sprintf("r%d-f%d", i, j),
			MAC: net.HardwareAddr{0x52, 0x54, 0x02, byte(i), 0, byte(j)}, BootURL: lab.BootServer.HTTPURL})
	}
	const password = "farm-bmc-password"
	f, err := farm.Start(dir, password, nodes)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	types := filepath.Join(lab.Dir, "farm-types")
	if err := os.MkdirAll(types, 0o755); err != nil {
		t.Fatal(err)
	}
	// The master's files are simlab's (the fake nodes never read them).
	dt := farm.DeviceType(fakeNodeType, "simlab/vmlinuz", "simlab/master.gz")
	if err := os.WriteFile(filepath.Join(types, fakeNodeType+".toml"), []byte(dt), 0o644); err != nil {
		t.Fatal(err)
	}
	devices := filepath.Dir(lab.Nodes[0].DeviceFile)
	if err := os.WriteFile(filepath.Join(devices, "farm.password"), []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for k, node := range f.Nodes {
		dev := fmt.Sprintf("name = %q\ndevice_type = %q\nmac = %q\n[bmc]\nhost = \"127.0.0.1\"\nport = %d\nuser = %q\npassword_file = \"farm.password\"\n",
			node.Name, fakeNodeType, nodes[k].MAC.String(), node.Port, farm.User)
		if err := os.WriteFile(filepath.Join(devices, node.Name+".toml"), []byte(dev), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	labText := readFile(t, lab.ConfigPath)
	withTypes := strings.Replace(labText, "device_types = [", "device_types = [\"farm-types\", ", 1)
	if withTypes == labText {
		t.Fatalf("%s has no device_types line", lab.ConfigPath)
	}
	if err := os.WriteFile(lab.ConfigPath, []byte(withTypes), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// fakeJobFile writes a job file for the fake nodes: it deploys image
// (raw, sha256 sum) and writes its name to the node's ran.log.
func fakeJobFile(t *testing.T, name, image, sum string) string {
	t.Helper()
	return writeJobFile(t, name, fmt.Sprintf("name = %q\ndevice_type = %q\nretries = 0\n[deploy]\nimage = %q\nsha256 = %q\n[boot]\npassword = \"test\"\n"+
		"[[test]]\nname = \"mark\"\ncommands = [\"echo %s >> ran.log\"]\n", name, fakeNodeType, image, sum, name))
}

// fakesPerHost is how many fake nodes each host of TestLabHosts has
// besides its real one.
const fakesPerHost = 3

// TestLabHosts: three labctl serve hosts, each with its own simulated
// rack (one real node, three fake nodes of simlab/farm, its own boot
// server), on one PostgreSQL:
//   - 30 jobs submitted through rack1 run on all three racks, each once
//     (the store's rows, the hosts' job directories, the fake nodes' own
//     record), and complete; `labctl logs -f` and a console through
//     rack1 work for a node of rack3;
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
		hosts = append(hosts, startLabHost(t, bin, url, hostToken, i, fakesPerHost))
	}
	rack1, rack2, rack3 := hosts[0], hosts[1], hosts[2]
	for _, h := range hosts {
		waitLabDevice(t, rack1.client, h.node, labctl.DeviceIdle, 3*time.Minute)
		for _, n := range h.fakes.Nodes {
			waitLabDevice(t, rack1.client, n.Name, labctl.DeviceIdle, time.Minute)
		}
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

	// 30 jobs through rack1, on every rack: one per real node, the rest
	// on the fake nodes.
	image := filepath.Join(t.TempDir(), "fake-disk.img")
	img := farm.Image(256 << 10)
	if err := os.WriteFile(image, img, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := fmt.Sprintf("%x", sha256.Sum256(img))
	var ids []int64
	name := map[int64]string{}
	submitted := time.Now()
	for i := range 30 {
		var id int64
		if i < len(hosts) {
			id = submitThrough(t, bin, rack1, labJobFile(t, rack1.lab, fmt.Sprint("j", i), `device_type = "simlab-qemu"`, labStep))
		} else {
			id = submitThrough(t, bin, rack1, fakeJobFile(t, fmt.Sprint("f", i), image, sum))
		}
		ids = append(ids, id)
		name[id] = fmt.Sprint("j", i)
		if i >= len(hosts) {
			name[id] = fmt.Sprint("f", i)
		}
	}
	// logs -f through rack1 of the job rack3's real node runs, and its
	// console.
	var on3 int64
	deadline := time.Now().Add(5 * time.Minute)
	for on3 == 0 && time.Now().Before(deadline) {
		for _, id := range ids[:len(hosts)] {
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
		t.Fatal("no job ran on rack3's real node within 5 minutes")
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
	fakePerHost := map[string]int{}
	retries := 0
	final := map[int64]labctl.Job{} // each job's last attempt
	for k, id := range ids {
		j := waitJob(t, rack1.client, id, "finished", 8*time.Minute, func(j labctl.Job) bool { return j.State == labctl.JobFinished })
		if k < len(hosts) && j.Outcome == "incomplete" && j.RetriedAs != 0 {
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
		if k >= len(hosts) {
			fakePerHost[j.Host]++
		}
		final[id] = j
	}
	if len(perHost) != 3 || len(fakePerHost) != 3 {
		t.Errorf("jobs per host: %v (on fake nodes: %v), want all three", perHost, fakePerHost)
	}
	var lastReal, lastFake time.Time
	for k, id := range ids {
		if f := final[id].Finished; f != nil && k < len(hosts) && f.After(lastReal) {
			lastReal = *f
		} else if f != nil && k >= len(hosts) && f.After(lastFake) {
			lastFake = *f
		}
	}
	t.Logf("%d jobs through rack1: the last of the %d on real nodes finished %s after the first submit, the last on fake nodes after %s; per host %v, on fake nodes %v",
		len(ids), len(hosts), lastReal.Sub(submitted).Round(time.Second), lastFake.Sub(submitted).Round(time.Second), perHost, fakePerHost)
	checkRanOnce(t, url, hosts, ids, name, final)

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

// checkRanOnce checks that each job ran once, where the store says: its
// row is finished complete under the host that owns its device, with the
// test's result; its directory (log, results) is on that host only; and
// a fake node's ran.log names a job once, on the job's device only.
func checkRanOnce(t *testing.T, url string, hosts []*labHostProc, ids []int64, name map[int64]string, final map[int64]labctl.Job) {
	t.Helper()
	st, err := store.OpenPostgres(context.Background(), url, "")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rows, err := st.Jobs(context.Background(), store.JobFilter{})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[int64]store.Job{}
	for _, r := range rows {
		if _, dup := byID[r.ID]; dup {
			t.Errorf("job %d: two rows in the store", r.ID)
		}
		byID[r.ID] = r
	}
	owner := map[string]string{} // device -> host
	ran := map[string][]string{} // job name -> fake devices whose ran.log names it
	for _, h := range hosts {
		owner[h.node] = h.name
		for _, n := range h.fakes.Nodes {
			owner[n.Name] = h.name
			b, err := os.ReadFile(filepath.Join(n.Dir, "ran.log"))
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
			for _, line := range strings.Fields(string(b)) {
				ran[line] = append(ran[line], n.Name)
			}
		}
	}
	for _, id := range ids {
		j := final[id]
		r, ok := byID[j.ID]
		switch {
		case !ok:
			t.Errorf("job %d is not in the store", j.ID)
			continue
		case r.State != store.Finished || r.Outcome != "complete" || r.Host == "" || owner[r.RunDevice] != r.Host:
			t.Errorf("job %d in the store: %s %s on %s under host %q (its device's host: %q)", r.ID, r.State, r.Outcome, r.RunDevice, r.Host, owner[r.RunDevice])
		case !strings.Contains(string(r.Result), `"mark"`) && !strings.Contains(string(r.Result), `"kernel"`):
			t.Errorf("job %d's results in the store name no test step: %s", r.ID, r.Result)
		}
		for _, h := range hosts {
			_, err := os.Stat(filepath.Join(filepath.Dir(h.labFile), "state", "jobs", fmt.Sprint(r.ID), "job.log"))
			if mine := h.name == r.Host; mine != (err == nil) {
				t.Errorf("job %d (ran under %s): host %s has its log: %v", r.ID, r.Host, h.name, err == nil)
			}
		}
		if n := name[id]; strings.HasPrefix(n, "f") {
			if got := ran[n]; len(got) != 1 || got[0] != r.RunDevice {
				t.Errorf("job %d (%s): the fake nodes' ran.log name it on %v, want once on %s", r.ID, n, got, r.RunDevice)
			}
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
