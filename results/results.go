// Package results is the record of one finished job: what happened to each
// test step, how long each phase took, and why the job ended as it did. It
// writes that record as results.json, as JUnit XML for CI systems, and as a
// summary table for people.
package results

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/labctl/labctl/internal/statedir"
)

// Step results.
const (
	Pass         = "pass"          // exited 0 as expected
	Fail         = "fail"          // exited non-zero and was not expected to
	ExpectedFail = "expected-fail" // exited non-zero and was marked expect_failure
	UnexpectedOK = "unexpected-pass"
	Timeout      = "timeout" // did not finish within its timeout
	Skipped      = "skipped" // not run because the job ended first
)

// Job is the record of one job run.
type Job struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Device   string    `json:"device"`
	Outcome  string    `json:"outcome"` // complete, failed, incomplete, canceled
	Reason   string    `json:"reason,omitempty"`
	Action   string    `json:"action,omitempty"` // the action that ended the job early, if any
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Phases   []Phase   `json:"phases"`
	Steps    []Step    `json:"steps"`
	// Artifacts lists the files fetched back from the node, relative to the
	// job directory.
	Artifacts []string `json:"artifacts,omitempty"`
	// Saved is the image the job saved the node's disk to (a path on the
	// dispatcher's host), its raw sha256 beside it as NAME.img.sha256.
	Saved string `json:"saved,omitempty"`
}

// Phase is one stage of the pipeline (deploy, boot, test, finalize) and its
// wall time.
type Phase struct {
	Name     string        `json:"name"`
	Duration time.Duration `json:"duration_ns"`
	Error    string        `json:"error,omitempty"`
}

// Step is one test step.
type Step struct {
	Name           string        `json:"name"`
	Result         string        `json:"result"`
	ExitCode       int           `json:"exit_code"`
	ExpectFailure  bool          `json:"expect_failure,omitempty"`
	Duration       time.Duration `json:"duration_ns"`
	FailedCommand  string        `json:"failed_command,omitempty"`
	Output         string        `json:"output,omitempty"`
	TypingDuration time.Duration `json:"typing_ns,omitempty"`
}

// Ok reports whether the step ended as the job file expected.
func (s Step) Ok() bool {
	return s.Result == Pass || s.Result == ExpectedFail
}

// Duration is the job's wall time.
func (j *Job) Duration() time.Duration { return j.Finished.Sub(j.Started) }

// The files WriteFiles writes into a job's directory.
const (
	JSONFile  = "results.json"
	JUnitFile = "junit.xml"
)

// WriteFiles writes results.json and junit.xml into dir.
func (j *Job) WriteFiles(dir string) error {
	if err := writeFile(filepath.Join(dir, JSONFile), j.WriteJSON); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, JUnitFile), j.WriteJUnit)
}

func writeFile(path string, write func(io.Writer) error) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, statedir.FileMode)
	if err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}

// WriteJSON writes the record as indented JSON.
func (j *Job) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(j)
}

// ReadJSON reads a record written by WriteJSON.
func ReadJSON(r io.Reader) (*Job, error) {
	var j Job
	if err := json.NewDecoder(r).Decode(&j); err != nil {
		return nil, fmt.Errorf("read results: %w", err)
	}
	return &j, nil
}
