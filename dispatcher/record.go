package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/internal/statedir"
	"github.com/labctl/labctl/jobs"
	"github.com/labctl/labctl/results"
)

// ErrShutdown is the cause of a job's context when the dispatcher stops
// under the job: nobody canceled it, the lab went away, so it ends
// incomplete.
var ErrShutdown = errors.New("daemon stopped")

// CanceledBy is the cause of a job's context when a person cancels it: the
// job ends canceled, naming them.
type CanceledBy struct{ Caller string }

func (c CanceledBy) Error() string { return "by " + c.Caller }

// End is how a job ended.
type End struct {
	Outcome labctl.Outcome
	Reason  string
	// Action is the pipeline action that went wrong or was cut short.
	Action string
}

// Stopped is how a job ends that its context stopped, by the context's
// cause: incomplete when the dispatcher shut down under it (ErrShutdown),
// canceled when someone canceled it (CanceledBy, or any other cause).
func Stopped(cause error) End {
	var by CanceledBy
	switch {
	case errors.Is(cause, ErrShutdown):
		return End{Outcome: labctl.Incomplete, Reason: ErrShutdown.Error() + " while the job ran", Action: "shutdown"}
	case errors.As(cause, &by):
		return End{Outcome: labctl.Canceled, Reason: "canceled: " + by.Error()}
	case cause == nil || errors.Is(cause, context.Canceled):
		return End{Outcome: labctl.Canceled, Reason: "canceled"}
	}
	return End{Outcome: labctl.Canceled, Reason: "canceled: " + cause.Error()}
}

// NewRecord is the record of a job as it starts on a device: no outcome
// yet, every test step skipped until it runs.
func NewRecord(id string, spec *jobs.Job, device string, started time.Time) *results.Job {
	res := &results.Job{ID: id, Name: spec.Name, Device: device, Started: started}
	for _, t := range spec.Tests {
		res.Steps = append(res.Steps, results.Step{Name: t.Name, Result: results.Skipped, ExpectFailure: t.ExpectFailure})
	}
	return res
}

// EndRecord records in res how the job ended, at when, and writes the
// record to the job directory dir (results.json and junit.xml), creating
// it, unless dir is "".
func EndRecord(res *results.Job, end End, at time.Time, dir string) error {
	res.Outcome, res.Reason, res.Action, res.Finished = string(end.Outcome), end.Reason, end.Action, at
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, statedir.DirMode); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return res.WriteFiles(dir)
}
