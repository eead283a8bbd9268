//go:build !labctl_run

package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/labctl/labctl"
)

type jobsOptions struct {
	client clientOptions
	states []string
	device string
	limit  int
	output string
}

func newJobsCommand(env *appEnv) *cli.Command {
	return &cli.Command{
		Name:  "jobs",
		Usage: "list the daemon's jobs: queued, running and recent ones",
		Description: `Lists jobs, oldest first: the newest --limit (default 50) of those in the
given states (--state queued,running,finished; default all) and on the
given device. STATE is queued, the phase of a running job (deploy, boot,
test, finalize), or the outcome of a finished one. WAIT is the time from
submission to start, TIME the time since the start (or the run time).

EXAMPLES:
   labctl jobs
   labctl jobs --state queued,running
   labctl jobs --device node1 --limit 10 -o json

EXIT STATUS:
   0 listed, 1 an error (no daemon, bad token), 64 the command line is wrong.`,
		Flags: append(clientFlags(),
			&cli.StringFlag{Name: "state", Usage: "only jobs in these `STATES` (queued, running, finished; comma-separated)"},
			&cli.StringFlag{Name: "device", Usage: "only jobs that run or ran on `NODE`"},
			&cli.IntFlag{Name: "limit", Value: 50, Usage: "at most the newest `N` jobs"},
			outputFlag(),
		),
		Action: func(c *cli.Context) error {
			out, err := listArgs(c, "labctl job ID shows one job")
			if err != nil {
				return err
			}
			opts := jobsOptions{client: clientOptionsFrom(c), device: c.String("device"), limit: c.Int("limit"), output: out}
			if s := c.String("state"); s != "" {
				for _, st := range strings.Split(s, ",") {
					if st != labctl.JobQueued && st != labctl.JobRunning && st != labctl.JobFinished {
						return usageErrorf("jobs: --state %q: use queued, running or finished", st)
					}
					opts.states = append(opts.states, st)
				}
			}
			if opts.limit <= 0 {
				return usageErrorf("jobs: --limit must be positive")
			}
			return runJobs(c.Context, opts, env)
		},
	}
}

func runJobs(ctx context.Context, opts jobsOptions, env *appEnv) error {
	client, err := connect(opts.client, env)
	if err != nil {
		return err
	}
	list, err := client.Jobs(ctx, labctl.JobFilter{States: opts.states, Device: opts.device, Limit: opts.limit})
	if err != nil {
		return err
	}
	if opts.output == outputJSON {
		return printJSON(env.stdout, list)
	}
	tw := table(env.stdout)
	fmt.Fprintln(tw, "ID\tNAME\tSTATE\tDEVICE\tPRIORITY\tSUBMITTED\tWAIT\tTIME\tBY\tREASON")
	for _, j := range list {
		device := j.Device
		if device == "" {
			device = j.DeviceType
			if len(j.Tags) > 0 {
				device += "[" + strings.Join(j.Tags, ",") + "]"
			}
		}
		if j.Host != "" {
			device += "@" + j.Host // a lab of several hosts: where it ran
		}
		wait, took := "-", "-"
		if j.Started != nil {
			wait = since(j.Submitted, j.Started)
			took = since(*j.Started, j.Finished)
		} else if j.State == labctl.JobQueued {
			wait = since(j.Submitted, nil)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.Name, jobState(j), device, j.Priority,
			when(j.Submitted), wait, took, j.Submitter, shorten(j.Reason, 60))
	}
	return tw.Flush()
}

// jobState is the state column: queued, the phase of a running job, or
// the outcome.
func jobState(j labctl.Job) string {
	switch {
	case j.State == labctl.JobFinished:
		return j.Outcome
	case j.State == labctl.JobRunning && j.Phase != "":
		return j.Phase
	}
	return j.State
}
