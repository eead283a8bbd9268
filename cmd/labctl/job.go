//go:build !labctl_run

package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/labctl/labctl"
)

type jobOptions struct {
	client clientOptions
	id     int64
	output string
}

func newJobCommand(env *appEnv) *cli.Command {
	return &cli.Command{
		Name:      "job",
		Usage:     "show one job: its state, where it runs, and its results once it ended",
		ArgsUsage: "JOB-ID",
		Description: `Shows a job: name, state, device, priority, who submitted it and when,
how long it waited and ran; while it runs, its phase and the image
transfer; once it ended, its outcome, the reason, and the results of
each test step. A job the lab retried (it ended incomplete: the lab, not
the test, went wrong) lists its attempts, each a job of its own;
retry_of and retried_as link them. -o json prints the whole record
(results included).

EXAMPLES:
   labctl job 42
   labctl job 42 -o json | jq .result.steps

EXIT STATUS:
   0 shown, 1 an error (no such job, no daemon), 64 the command line is wrong.`,
		Flags:        append(clientFlags(), outputFlag()),
		BashComplete: completeJobIDs(env),
		Action: func(c *cli.Context) error {
			args, err := commandArgs(c)
			if err != nil {
				return err
			}
			id, err := jobArg(c, args)
			if err != nil {
				return err
			}
			out, err := outputFormat(c)
			if err != nil {
				return err
			}
			return runJob(c.Context, jobOptions{client: clientOptionsFrom(c), id: id, output: out}, env)
		},
	}
}

// printAttempts lists the attempts of a job the lab retried.
func printAttempts(w io.Writer, j labctl.Job) {
	if len(j.Attempts) < 2 {
		return
	}
	fmt.Fprintln(w, "attempts:")
	for i, a := range j.Attempts {
		mark := " "
		if a.ID == j.ID {
			mark = "*"
		}
		end := a.State
		if a.Outcome != "" {
			end = a.Outcome
			if a.Reason != "" {
				end += ": " + a.Reason
			}
		}
		fmt.Fprintf(w, " %s %d. job %d on %s: %s\n", mark, i+1, a.ID, cmp.Or(a.Device, "-"), shorten(end, 90))
	}
}

func runJob(ctx context.Context, opts jobOptions, env *appEnv) error {
	client, err := connect(opts.client, env)
	if err != nil {
		return err
	}
	j, err := client.Job(ctx, opts.id)
	if err != nil {
		return err
	}
	if opts.output == outputJSON {
		return printJSON(env.stdout, j)
	}
	w := env.stdout
	fmt.Fprintf(w, "job %d: %s\n", j.ID, j.Name)
	fmt.Fprintf(w, "state:     %s\n", jobState(j))
	where := j.Device
	if j.DeviceType != "" {
		where = fmt.Sprintf("%s (device type %s", cmp.Or(j.Device, "-"), j.DeviceType)
		if len(j.Tags) > 0 {
			where += ", tags " + strings.Join(j.Tags, ",")
		}
		where += ")"
	}
	fmt.Fprintf(w, "device:    %s\n", where)
	fmt.Fprintf(w, "priority:  %s\n", j.Priority)
	fmt.Fprintf(w, "submitted: %s by %s\n", j.Submitted.Local().Format("2006-01-02 15:04:05"), j.Submitter)
	if j.Started != nil {
		fmt.Fprintf(w, "started:   %s (waited %s)\n", j.Started.Local().Format("2006-01-02 15:04:05"), since(j.Submitted, j.Started))
	}
	if j.Finished != nil {
		fmt.Fprintf(w, "finished:  %s", j.Finished.Local().Format("2006-01-02 15:04:05"))
		if j.Started != nil {
			fmt.Fprintf(w, " (ran %s)", since(*j.Started, j.Finished))
		}
		fmt.Fprintln(w)
	}
	if j.Transfer != nil {
		fmt.Fprintf(w, "transfer:  %s\n", progressBar(transferLabel(j.Phase), j.Transfer.Done, j.Transfer.Total, j.Transfer.Elapsed, 30))
	}
	if j.State == labctl.JobQueued && j.Reason != "" {
		fmt.Fprintf(w, "waiting:   %s\n", j.Reason)
	}
	printAttempts(w, j)
	if j.Result != nil {
		fmt.Fprintln(w)
		return j.Result.WriteSummary(w)
	}
	return nil
}
