package main

// What a shared lab service needs, on a real simulated node and one
// `labctl serve`: `go test -run LabServeHardening ./cmd/labctl`. TLS with a
// self-signed certificate the clients pin, tokens with roles, a
// reservation and the queue timeout, an incomplete job retried by
// itself, the audit trail, periodic health checks, private state files
// and retention. One node and no full deploy: the jobs that run stop at
// the master (a deploy timeout), so the test costs two master boots.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/api"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/simlab"
	"github.com/labctl/labctl/simlab/simlabtest"
)

func TestLabServeHardening(t *testing.T) {
	t.Parallel()
	lab := simlabtest.StartLab(t, 1, simlab.Options{})
	t.Cleanup(func() { killStrays(lab) })
	node := lab.Nodes[0].Name
	bin := labctlBinary(t)
	start := time.Now()
	step := func(what string) { t.Logf("%5.1fs %s", time.Since(start).Seconds(), what) }

	// The lab file: TLS, a token per role, periodic checks, one retry,
	// retention of the newest finished job.
	tokens := map[string]string{"viewer": "viewer", "alice": "submitter", "bob": "submitter", "ops": "operator"}
	cfg, err := os.ReadFile(lab.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(cfg), "[server]\n", "[server]\ntls = \"self-signed\"\n", 1)
	for name, role := range tokens {
		if err := os.WriteFile(filepath.Join(lab.Dir, name+".token"), []byte(name+"-token-0123456789\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		text += fmt.Sprintf("\n[[server.tokens]]\nname = %q\nrole = %q\ntoken_file = %q\n", name, role, name+".token")
	}
	text += "\n[health]\ninterval = \"3s\"\n\n[jobs]\nretries = 1\n\n[retention]\nmax_jobs = 1\n"
	if err := os.WriteFile(lab.ConfigPath, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	loaded, err := devices.Load(lab.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	// The daemon makes its certificate on first start in STATE/tls; made
	// here first, it is the one the daemon serves, so the test knows the
	// fingerprint to pin before the daemon runs.
	_, pin, err := api.SelfSignedTLS(filepath.Join(loaded.StateDir, "tls"), []string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	server := "https://" + lab.BootServer.ServerAddr
	token, err := os.ReadFile(filepath.Join(lab.Dir, "ci.token"))
	if err != nil {
		t.Fatal(err)
	}
	admin := strings.TrimSpace(string(token))
	pinned, err := api.ClientTLS("", pin)
	if err != nil {
		t.Fatal(err)
	}
	client, err := api.NewClient(server, admin, pinned)
	if err != nil {
		t.Fatal(err)
	}
	daemon := startServeProc(t, bin, lab.ConfigPath, client)
	waitLabDevice(t, client, node, labctl.DeviceIdle, 2*time.Minute)
	step("daemon up over TLS, device idle")

	// TLS: the daemon says which certificate; plain HTTP and another pin
	// get nothing.
	if b, _ := os.ReadFile(daemon.log); !strings.Contains(string(b), "TLS certificate "+pin) {
		t.Errorf("labctl serve's log does not name its certificate %s:\n%s", pin, b)
	}
	if resp, err := http.Get("http://" + lab.BootServer.ServerAddr + "/api/v1/jobs"); err != nil {
		t.Errorf("plain HTTP to the TLS API: %v, want the TLS server's 400", err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP to the TLS API: %s, want 400", resp.Status)
		}
	}
	as := func(who string, args ...string) (int, string) {
		t.Helper()
		tok := admin
		if who != "admin" {
			tok = who + "-token-0123456789"
		}
		return runClient(t, bin, server, tok, append(args, "--pin", pin)...)
	}
	if code, out := runClient(t, bin, server, admin, "devices", "--pin", "sha256:"+strings.Repeat("ab", 32)); code != 1 || !strings.Contains(out, "not the pinned") {
		t.Errorf("labctl devices with another pin: exit %d: %s", code, out)
	}

	// Roles: a viewer reads but does not power, nor read the audit trail.
	if code, out := as("viewer", "devices"); code != 0 || !strings.Contains(out, node) {
		t.Errorf("viewer: labctl devices: exit %d: %s", code, out)
	}
	if code, out := as("viewer", "power", node, "off"); code != 1 || !strings.Contains(out, "needs role operator") {
		t.Errorf("viewer: labctl power off: exit %d: %s", code, out)
	}
	if code, out := as("viewer", "audit"); code != 1 || !strings.Contains(out, "needs role operator") {
		t.Errorf("viewer: labctl audit: exit %d: %s", code, out)
	}
	step("roles")

	// A reservation keeps bob's job off alice's node until its queue
	// timeout cancels it; bob may not release it, an operator may.
	if code, out := as("alice", "reserve", node, "--for", "1h", "--reason", "bisecting"); code != 0 {
		t.Fatalf("alice: labctl reserve: exit %d: %s", code, out)
	}
	if code, out := as("bob", "devices"); code != 0 || !strings.Contains(out, "alice") {
		t.Errorf("labctl devices does not show alice's reservation: exit %d: %s", code, out)
	}
	blocked := labJobFile(t, lab, "blocked", fmt.Sprintf("device = %q\nqueue_timeout = \"4s\"", node), labStep)
	if code, out := as("bob", "submit", "--wait", blocked); code != 3 || !strings.Contains(out, "in the queue") {
		t.Errorf("bob's job on a reserved node: exit %d, want 3 (canceled: queue timeout)\n%s", code, out)
	}
	if code, out := as("bob", "release", node); code != 1 || !strings.Contains(out, "forbidden") {
		t.Errorf("bob releasing alice's reservation: exit %d: %s", code, out)
	}
	if code, out := as("ops", "release", node); code != 0 {
		t.Errorf("ops: labctl release: exit %d: %s", code, out)
	}
	step("reservation and queue timeout")

	// A job whose master cannot come up within its deploy timeout ends
	// incomplete; the lab retries it once on its own, then gives up:
	// submit --wait follows both attempts.
	flaky := labJobFile(t, lab, "flaky", fmt.Sprintf("device = %q", node), labStep)
	b, _ := os.ReadFile(flaky)
	if err := os.WriteFile(flaky, []byte(strings.Replace(string(b), "[deploy]\n", "[deploy]\ntimeout = \"2s\"\n", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := as("alice", "submit", "--wait", flaky)
	if code != 2 {
		t.Errorf("alice's flaky job: exit %d, want 2 (incomplete after its retry)\n%s", code, out)
	}
	jobs, err := client.Jobs(context.Background(), labctl.JobFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var first labctl.Job
	for _, j := range jobs {
		if j.Name == "flaky" && (first.ID == 0 || j.ID < first.ID) {
			first = j // the first attempt: listings leave the links out
		}
	}
	first, err = client.Job(context.Background(), first.ID)
	if err != nil || len(first.Attempts) != 2 || first.RetriedAs == 0 {
		t.Fatalf("the flaky job's attempts: %+v, %v", first, err)
	}
	for _, a := range first.Attempts {
		if a.Outcome != string(labctl.Incomplete) || a.Device != node {
			t.Errorf("attempt %+v, want incomplete on %s", a, node)
		}
	}
	step("incomplete job retried once")

	// Periodic health: the idle node is checked again by itself.
	d := waitLabDevice(t, client, node, labctl.DeviceIdle, 2*time.Minute)
	if d.Health == nil {
		t.Fatalf("device %s has no health check: %+v", node, d)
	}
	checked := d.Health.At
	deadline := time.Now().Add(time.Minute)
	for {
		d, err := client.Device(context.Background(), node)
		if err == nil && d.Health != nil && d.Health.At.After(checked) && d.Health.OK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no periodic health check of %s within a minute of %s: %+v, %v", node, checked, d, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	step("periodic health check")

	// The audit trail: who did what, from where, allowed or not.
	code, out = as("ops", "audit", "-o", "json", "--limit", "100")
	var trail []labctl.AuditEntry
	if code != 0 || json.Unmarshal([]byte(out), &trail) != nil {
		t.Fatalf("ops: labctl audit -o json: exit %d: %s", code, out)
	}
	want := []struct{ who, action, result string }{
		{"viewer", labctl.AuditPower, labctl.AuditRefused},
		{"alice", labctl.AuditReserve, labctl.AuditOK},
		{"bob", labctl.AuditSubmit, labctl.AuditOK},
		{"bob", labctl.AuditRelease, labctl.AuditRefused},
		{"ops", labctl.AuditRelease, labctl.AuditOK},
		{"alice", labctl.AuditSubmit, labctl.AuditOK},
	}
	for _, w := range want {
		found := false
		for _, e := range trail {
			if e.Who == w.who && e.Action == w.action && e.Result == w.result && e.Remote != "" {
				found = true
			}
		}
		if !found {
			t.Errorf("audit trail lacks %s %s %s (with an address):\n%s", w.who, w.action, w.result, out)
		}
	}
	step("audit trail")

	// Private state: nothing under the state directory is for others.
	filepath.WalkDir(loaded.StateDir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if info, err := e.Info(); err == nil && e.Type()&fs.ModeSymlink == 0 && info.Mode().Perm()&0o007 != 0 {
			t.Errorf("%s is %v: other users may use it", path, info.Mode())
		}
		return nil
	})

	// Retention at the next start keeps the newest finished job (the
	// second attempt): the blocked job and the first attempt go, rows and
	// directories.
	daemon.stop()
	startServeProc(t, bin, lab.ConfigPath, client)
	var gone []int64
	for _, j := range jobs {
		if j.Name == "blocked" || j.ID == first.ID {
			gone = append(gone, j.ID)
		}
	}
	if len(gone) != 2 {
		t.Fatalf("jobs before the restart: %+v", jobs)
	}
	for _, id := range gone {
		deadline := time.Now().Add(time.Minute)
		for {
			_, err := client.Job(context.Background(), id)
			_, serr := os.Stat(filepath.Join(loaded.StateDir, "jobs", strconv.FormatInt(id, 10)))
			if errors.Is(err, labctl.ErrNotFound) && errors.Is(serr, fs.ErrNotExist) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("job %d not removed by retention within a minute: %v, %v", id, err, serr)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	if _, err := client.Job(context.Background(), first.RetriedAs); err != nil {
		t.Errorf("the newest finished job %d was removed: %v", first.RetriedAs, err)
	}
	step("retention")
}
