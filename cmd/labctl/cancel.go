//go:build !labctl_run

package main

import (
	"context"
	"fmt"
	"strconv"

	"github.com/urfave/cli/v2"
)

type cancelOptions struct {
	client clientOptions
	ids    []int64
}

func newCancelCommand(env *appEnv) *cli.Command {
	return &cli.Command{
		Name:      "cancel",
		Usage:     "cancel jobs: a queued job never runs, a running one is stopped and its node powered off",
		ArgsUsage: "JOB-ID...",
		Description: `Cancels each job. A queued job ends canceled at once. A running job is
stopped where it is: the daemon finalizes its node (powers it off and
sets its PXE entry back to local boot) and cancel returns once the job
has ended canceled.

EXAMPLES:
   labctl cancel 42
   labctl cancel 42 43 44

EXIT STATUS:
   0 every job ended canceled, 1 a job could not be canceled (no such job,
   already ended), 64 the command line is wrong.`,
		Flags:        clientFlags(),
		BashComplete: completeJobIDs(env),
		Action: func(c *cli.Context) error {
			args, err := commandArgs(c)
			if err != nil {
				return err
			}
			if len(args) == 0 {
				return usageErrorf("cancel: want a JOB-ID (see labctl cancel --help)")
			}
			var ids []int64
			for _, a := range args {
				id, err := strconv.ParseInt(a, 10, 64)
				if err != nil || id <= 0 {
					return usageErrorf("cancel: JOB-ID %q is not a job number", a)
				}
				ids = append(ids, id)
			}
			return runCancel(c.Context, cancelOptions{client: clientOptionsFrom(c), ids: ids}, env)
		},
	}
}

func runCancel(ctx context.Context, opts cancelOptions, env *appEnv) error {
	client, err := connect(opts.client, env)
	if err != nil {
		return err
	}
	var failed error
	for _, id := range opts.ids {
		j, err := client.Cancel(ctx, id)
		if err != nil {
			fmt.Fprintf(env.stderr, "labctl: cancel %d: %v\n", id, err)
			failed = fmt.Errorf("cancel: some jobs were not canceled")
			continue
		}
		fmt.Fprintf(env.stdout, "job %d %s: %s\n", j.ID, j.Outcome, j.Reason)
	}
	return failed
}
