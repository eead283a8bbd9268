package results

import (
	"bytes"
	"encoding/xml"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

func sampleJob(outcome string) *Job {
	t0 := time.Date(2026, 11, 22, 5, 0, 0, 0, time.UTC)
	j := &Job{
		ID: "7", Name: "smoke", Device: "node1", Outcome: outcome,
		Started: t0, Finished: t0.Add(41 * time.Second),
		Phases: []Phase{{Name: "deploy", Duration: 20 * time.Second}, {Name: "boot", Duration: 15 * time.Second}, {Name: "test", Duration: 5 * time.Second}},
		Steps: []Step{
			{Name: "uname", Result: Pass, Duration: time.Second, Output: "Linux testos 6.1.0\x1b[0m\x00"},
			{Name: "broken", Result: Fail, ExitCode: 2, Duration: 2 * time.Second, FailedCommand: "ls /nonexistent"},
			{Name: "false-expected", Result: ExpectedFail, ExitCode: 1, ExpectFailure: true, Duration: time.Second},
		},
	}
	if outcome == "incomplete" {
		j.Reason = "bmc 127.0.0.1:16230 did not answer"
		j.Action = "boot"
		j.Steps[1].Result = Skipped
		j.Steps[2].Result = Skipped
	}
	return j
}

func TestWriteJUnit(t *testing.T) {
	for _, outcome := range []string{"failed", "incomplete"} {
		t.Run(outcome, func(t *testing.T) {
			var buf bytes.Buffer
			if err := sampleJob(outcome).WriteJUnit(&buf); err != nil {
				t.Fatal(err)
			}
			// It must be well-formed XML even though the output had ESC and NUL.
			var doc junitSuites
			if err := xml.Unmarshal(buf.Bytes(), &doc); err != nil {
				t.Fatalf("JUnit is not valid XML: %v\n%s", err, buf.String())
			}
			golden(t, "junit-"+outcome+".xml", buf.Bytes())
		})
	}
}

func TestJUnitCounts(t *testing.T) {
	var buf bytes.Buffer
	if err := sampleJob("failed").WriteJUnit(&buf); err != nil {
		t.Fatal(err)
	}
	var doc junitSuites
	if err := xml.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	s := doc.Suites[0]
	if s.Tests != 3 || s.Failures != 1 || s.Errors != 0 {
		t.Errorf("tests/failures/errors = %d/%d/%d, want 3/1/0", s.Tests, s.Failures, s.Errors)
	}
	if s.Cases[1].Failure == nil || s.Cases[1].Failure.Message != "exit code 2" {
		t.Errorf("step broken: failure = %+v, want exit code 2", s.Cases[1].Failure)
	}
	if s.Cases[2].Failure != nil {
		t.Errorf("expected failure reported as a failure: %+v", s.Cases[2].Failure)
	}
}

func TestJSONRoundTrip(t *testing.T) {
	j := sampleJob("failed")
	var buf bytes.Buffer
	if err := j.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	got, err := ReadJSON(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if got.Outcome != "failed" || len(got.Steps) != 3 || got.Steps[1].ExitCode != 2 || got.Duration() != 41*time.Second {
		t.Errorf("round trip lost data: %+v", got)
	}
}

func TestWriteFiles(t *testing.T) {
	dir := t.TempDir()
	if err := sampleJob("failed").WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"results.json", "junit.xml"} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v", name, err)
		}
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(m) > 0 {
		t.Errorf("temporary files left: %v", m)
	}
}

func TestWriteSummary(t *testing.T) {
	var buf bytes.Buffer
	if err := sampleJob("incomplete").WriteSummary(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"INCOMPLETE: bmc 127.0.0.1:16230 did not answer", "broken", "skipped", "deploy", "20s"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	golden(t, "summary-incomplete.txt", buf.Bytes())
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from golden file:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}
