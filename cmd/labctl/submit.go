//go:build !labctl_run

package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/api"
	"github.com/labctl/labctl/jobs"
)

type submitOptions struct {
	client  clientOptions
	job     string
	wait    bool
	follow  bool
	junit   string
	timeout time.Duration
	notify  []string
}

func newSubmitCommand(env *appEnv) *cli.Command {
	return &cli.Command{
		Name:      "submit",
		Usage:     "queue a job on the lab daemon; optionally wait for it and follow its log",
		ArgsUsage: "JOB.toml",
		Description: `Checks the job file here first (as labctl validate does), then sends it
to the daemon, which checks it against its lab and queues it. Without
--wait or --follow, prints the job's ID and returns.

Image paths: a relative deploy.image or deploy.sha256_file is taken
relative to the job file's directory, made absolute here, and read by the
daemon on its own host. So the daemon must be able to read that path (the
same machine, or a file system both see), and the file must be readable
by every user (the daemon serves it to a node, so it refuses files only
it could read). For a daemon elsewhere, use an http(s) URL for the image.

--notify URL (repeatable) has the daemon post the job's end to URL, a
signed webhook, as notify = [...] in the job file does (not both); the
lab must sign job notifications ([notify] in the lab file), and the URL
must be one jobs may connect to (its [images] allow_networks rule).

--wait waits for the job to end and exits with its outcome; --follow also
prints its log as it runs (with a progress bar on a terminal while the
image streams to the node). A broken connection (the daemon restarting)
is resumed. --junit writes the job's JUnit XML when it ends. --timeout
cancels the job if it has not ended in time (exit 3). Ctrl-C stops
waiting; the job goes on.

EXAMPLES:
   labctl submit examples/jobs/smoke.toml
   labctl submit --follow examples/jobs/smoke.toml
   labctl submit --wait --junit out/junit.xml --timeout 2h nightly.toml
   labctl submit --notify https://ci.example.com/labctl-hook nightly.toml

EXIT STATUS:
   without --wait/--follow: 0 queued, 1 the job file or the daemon refused it;
   with them: 0 complete, 1 a test step failed (or the job could not be
   submitted), 2 incomplete (the lab went wrong, or the daemon stayed
   unreachable for 10 minutes), 3 canceled or timed out; 64 the command
   line is wrong; 130 interrupted (the job goes on).`,
		Flags: append(clientFlags(),
			&cli.BoolFlag{Name: "wait", Aliases: []string{"w"}, Usage: "wait for the job to end; exit with its outcome"},
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "print the job's log as it runs (implies --wait)"},
			&cli.StringFlag{Name: "junit", Usage: "write the job's JUnit XML to `FILE` when it ends (implies --wait)", TakesFile: true},
			&cli.DurationFlag{Name: "timeout", Usage: "with --wait: cancel the job if it has not ended after `DURATION` (e.g. 2h)"},
			&cli.StringSliceFlag{Name: "notify", Usage: "post the job's end to `URL` (a signed webhook; repeatable)"},
		),
		Action: func(c *cli.Context) error {
			args, err := commandArgs(c)
			if err != nil {
				return err
			}
			if len(args) != 1 {
				return usageErrorf("submit: want one JOB.toml (see labctl submit --help)")
			}
			if c.Duration("timeout") < 0 {
				return usageErrorf("submit: --timeout must be positive")
			}
			return runSubmit(c.Context, submitOptions{
				client: clientOptionsFrom(c), job: args[0],
				wait: c.Bool("wait"), follow: c.Bool("follow"), junit: c.String("junit"), timeout: c.Duration("timeout"),
				notify: c.StringSlice("notify"),
			}, env)
		},
	}
}

func runSubmit(ctx context.Context, opts submitOptions, env *appEnv) error {
	// The daemon parses the text again, against dir; parsing it here first
	// reports the file's problems before anything is sent.
	text, dir, err := jobs.ReadFile(opts.job)
	if err != nil {
		return err
	}
	if _, err := jobs.Parse(opts.job, text, dir); err != nil {
		return err
	}
	if text, err = jobs.WithNotify(opts.job, text, dir, opts.notify); err != nil {
		return err
	}
	client, err := connect(opts.client, env)
	if err != nil {
		return err
	}
	job, err := client.Submit(ctx, labctl.SubmitRequest{File: opts.job, Dir: dir, Spec: string(text)})
	if err != nil {
		return fmt.Errorf("submit %s: %w", opts.job, err)
	}
	wait := opts.wait || opts.follow || opts.junit != "" || opts.timeout > 0
	if !wait {
		fmt.Fprintln(env.stdout, job.ID)
		return nil
	}
	fmt.Fprintf(env.stderr, "job %d (%s) %s on %s\n", job.ID, job.Name, job.State, client.Server())

	wctx, cancel := ctx, context.CancelFunc(func() {})
	if opts.timeout > 0 {
		wctx, cancel = context.WithTimeoutCause(ctx, opts.timeout, errWaitTimeout)
	}
	defer cancel()
	v := newFollowView(env.stdout, env.stderr, false)
	end, err := followJob(wctx, client, job.ID, !opts.follow, v, env, 0)
	v.done()
	switch {
	case errors.Is(err, errWaitTimeout) && ctx.Err() == nil:
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Minute)
		cur := lastAttempt(cctx, client, job.ID)
		fmt.Fprintf(env.stderr, "labctl: job %d has not ended after %s: canceling it\n", cur, opts.timeout)
		end, err = client.Cancel(cctx, cur)
		ccancel()
		if err != nil {
			return fmt.Errorf("job %d timed out after %s; cancel: %w", job.ID, opts.timeout, err)
		}
		if end.Outcome == string(labctl.Canceled) {
			end.Reason = fmt.Sprintf("timed out: not ended after %s (%s)", opts.timeout, end.Reason)
		}
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		fmt.Fprintf(env.stderr, "labctl: stopped waiting; job %d goes on (labctl cancel %d)\n", job.ID, job.ID)
		return err
	case err != nil:
		return err
	}
	return finishWait(ctx, client, end, opts.junit, env)
}

// errWaitTimeout ends a wait that ran out of --timeout.
var errWaitTimeout = errors.New("--timeout reached")

// finishWait writes the JUnit file and the summary of an ended job and
// returns its outcome as the exit status.
func finishWait(ctx context.Context, client *api.Client, end labctl.Job, junit string, env *appEnv) error {
	if junit != "" {
		xml, err := client.JUnit(ctx, end.ID)
		if err != nil {
			return fmt.Errorf("--junit: %w", err)
		}
		if err := writeFileAll(junit, xml); err != nil {
			return fmt.Errorf("--junit: %w", err)
		}
	}
	res := end.Result
	if res == nil {
		return fmt.Errorf("job %d ended %s (%s), but the daemon sent no results", end.ID, end.Outcome, end.Reason)
	}
	res.Reason = end.Reason
	if err := res.WriteSummary(env.stdout); err != nil {
		return err
	}
	if end.Outcome != string(labctl.Complete) {
		return jobExit{res: res}
	}
	return nil
}
