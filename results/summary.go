package results

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteSummary writes a table a person can read at a glance: the phases
// with their wall times, one row per test step, and the outcome.
func (j *Job) WriteSummary(w io.Writer) error {
	fmt.Fprintf(w, "job %s (%s) on %s\n\n", j.ID, j.Name, j.Device)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PHASE\tTIME\tNOTE")
	for _, p := range j.Phases {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", p.Name, round(p.Duration), p.Error)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(j.Steps) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "STEP\tRESULT\tEXIT\tTIME")
		for _, s := range j.Steps {
			exit := fmt.Sprint(s.ExitCode)
			if s.Result == Skipped || s.Result == Timeout {
				exit = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Name, s.Result, exit, round(s.Duration))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	outcome := strings.ToUpper(j.Outcome)
	if j.Reason != "" {
		outcome += ": " + j.Reason
	}
	if _, err := fmt.Fprintf(w, "\n%s in %s\n", outcome, round(j.Duration())); err != nil {
		return err
	}
	if j.Saved != "" {
		_, err := fmt.Fprintf(w, "saved: %s (sha256 in %s)\n", j.Saved, strings.TrimSuffix(j.Saved, ".zst")+".sha256")
		return err
	}
	return nil
}

func round(d time.Duration) time.Duration {
	if d > time.Minute {
		return d.Round(time.Second)
	}
	return d.Round(10 * time.Millisecond)
}
