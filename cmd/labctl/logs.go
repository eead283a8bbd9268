//go:build !labctl_run

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/api"
	"github.com/labctl/labctl/sol"
)

type logsOptions struct {
	client clientOptions
	id     int64
	follow bool
	raw    bool
}

func newLogsCommand(env *appEnv) *cli.Command {
	return &cli.Command{
		Name:      "logs",
		Usage:     "print a job's log: console output, what was typed, the dispatcher's events",
		ArgsUsage: "JOB-ID",
		Description: `Prints the job's log, one record per line: the time, then < for console
output, > for what the job typed, ! for console session events and # for
the dispatcher's events. Control characters and terminal escapes are
left out; --raw prints the log file as the daemon keeps it (escaped, UTC
times). -f follows a queued or running job until it ends, with a progress
bar on a terminal while the image streams to the node.

EXAMPLES:
   labctl logs 42
   labctl logs -f 42
   labctl logs --raw 42 > job42.log

EXIT STATUS:
   0 printed (whatever the job's outcome), 1 an error (no such job, no
   daemon), 64 the command line is wrong.`,
		Flags: append(clientFlags(),
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "follow the job until it ends"},
			&cli.BoolFlag{Name: "raw", Usage: "print the log file as it is"},
		),
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
			return runLogs(c.Context, logsOptions{client: clientOptionsFrom(c), id: id, follow: c.Bool("follow"), raw: c.Bool("raw")}, env)
		},
	}
}

// jobArg is the one JOB-ID argument of a command.
func jobArg(c *cli.Context, args []string) (int64, error) {
	if len(args) != 1 {
		return 0, usageErrorf("%s: want one JOB-ID (see labctl %s --help)", c.Command.Name, c.Command.Name)
	}
	id, err := strconv.ParseInt(args[0], 10, 64)
	if err != nil || id <= 0 {
		return 0, usageErrorf("%s: JOB-ID %q is not a job number", c.Command.Name, args[0])
	}
	return id, nil
}

func runLogs(ctx context.Context, opts logsOptions, env *appEnv) error {
	client, err := connect(opts.client, env)
	if err != nil {
		return err
	}
	if !opts.follow {
		log, err := client.JobLog(ctx, opts.id)
		if err != nil {
			return err
		}
		defer log.Close()
		if opts.raw {
			if _, err := io.Copy(env.stdout, log); err != nil {
				return fmt.Errorf("job %d log: %w", opts.id, err)
			}
			return nil
		}
		text, err := io.ReadAll(log)
		if err != nil {
			return fmt.Errorf("job %d log: %w", opts.id, err)
		}
		v := newFollowView(env.stdout, env.stderr, opts.raw)
		v.log(string(text))
		v.done()
		return nil
	}
	v := newFollowView(env.stdout, env.stderr, opts.raw)
	defer v.done()
	_, err = followJob(ctx, client, opts.id, false, v, env, 0)
	return err
}

// followJob follows a job to its end through its event stream, showing
// its log (unless noLog) and progress on v, and returns the ended job. A
// job the lab retries (it ended incomplete and runs again as a new job)
// is followed to its last attempt, whose end is returned. A broken stream
// (the daemon restarting) is resumed where it stopped; if the daemon
// cannot be reached for giveUp (0: 10 minutes), followJob gives up.
func followJob(ctx context.Context, client *api.Client, id int64, noLog bool, v *followView, env *appEnv, giveUp time.Duration) (labctl.Job, error) {
	if giveUp <= 0 {
		giveUp = 10 * time.Minute
	}
	var offset int64
	var end *labctl.Job
	backoff := 500 * time.Millisecond
	var failingSince time.Time
	for {
		err := client.Follow(ctx, id, labctl.FollowOptions{Offset: offset, NoLog: noLog}, func(e labctl.Event) error {
			failingSince = time.Time{}
			backoff = 500 * time.Millisecond
			switch {
			case e.Log != "":
				if e.Offset != offset {
					return fmt.Errorf("job %d log: got bytes from %d, expected %d", id, e.Offset, offset)
				}
				offset += int64(len(e.Log))
				v.log(e.Log)
			case e.Progress != nil:
				v.progress(*e.Progress)
			case e.End != nil:
				end = e.End
			}
			return nil
		})
		if end != nil && end.RetriedAs != 0 {
			v.note(fmt.Sprintf("job %d ended %s (%s); the lab runs it again as job %d", id, end.Outcome, end.Reason, end.RetriedAs))
			id, offset, end = end.RetriedAs, 0, nil
			continue
		}
		if end != nil {
			return *end, nil
		}
		if ctx.Err() != nil {
			return labctl.Job{}, context.Cause(ctx)
		}
		var apiErr *api.Error
		if errors.As(err, &apiErr) && apiErr.Status/100 == 4 {
			return labctl.Job{}, err // no such job, bad token: retrying does not help
		}
		if failingSince.IsZero() {
			failingSince = time.Now()
			v.note(fmt.Sprintf("lost the daemon (%v); retrying", err))
		}
		if time.Since(failingSince) > giveUp {
			return labctl.Job{}, lostDaemon{id: id, err: err, after: giveUp}
		}
		select {
		case <-ctx.Done():
			return labctl.Job{}, context.Cause(ctx)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// lostDaemon is a wait for a job that ended because the daemon could not
// be reached: exit status 2, as for an incomplete job (the lab went wrong).
type lostDaemon struct {
	id    int64
	err   error
	after time.Duration
}

func (e lostDaemon) Error() string {
	return fmt.Sprintf("job %d: no answer from the daemon for %s (%v); the job may still run: labctl job %d", e.id, e.after, e.err, e.id)
}

func (e lostDaemon) ExitCode() int { return 2 }

// lastAttempt is the job's last attempt so far: the job itself, or the
// attempt that retries it, and so on.
func lastAttempt(ctx context.Context, client *api.Client, id int64) int64 {
	for range 100 {
		j, err := client.Job(ctx, id)
		if err != nil || j.RetriedAs == 0 {
			return id
		}
		id = j.RetriedAs
	}
	return id
}

// followView shows a followed job to a person: its log records as
// readable lines on out, and on a terminal err a progress bar while the
// image streams to the node.
type followView struct {
	out, errw io.Writer
	raw       bool
	live      *liveView // the progress bar (labctl run's)

	mu      sync.Mutex
	partial []byte
	phase   string
}

func newFollowView(out, errw io.Writer, raw bool) *followView {
	return &followView{out: out, errw: errw, raw: raw, live: newLiveView(errw, false)}
}

// log shows log text (whole lines; a partial last line waits).
func (v *followView) log(text string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.live.Done() // clears a progress bar before text goes on the screen
	data := append(v.partial, text...)
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		line := data[:i]
		data = data[i+1:]
		if v.raw {
			fmt.Fprintf(v.out, "%s\n", line)
			continue
		}
		fmt.Fprintln(v.out, renderRecord(line))
	}
	v.partial = append(v.partial[:0], data...)
}

// progress shows the phase and the image transfer.
func (v *followView) progress(p labctl.JobProgress) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.live.Phase(p.Phase)
	if p.Transfer != nil {
		v.live.Transfer(p.Transfer.Done, p.Transfer.Total, p.Transfer.Elapsed)
	}
	v.phase = p.Phase
}

// note shows a message of labctl's own on the error stream.
func (v *followView) note(msg string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.live.Done()
	fmt.Fprintf(v.errw, "labctl: %s\n", msg)
}

// done shows what is left and clears the progress bar.
func (v *followView) done() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.live.Done()
	if len(v.partial) > 0 {
		fmt.Fprintln(v.out, renderRecord(v.partial))
		v.partial = nil
	}
}

// renderRecord turns a job log line into what a person reads: local
// time, direction, and the text without escapes, control characters or
// terminal sequences. A line that is not a record is shown as it is.
func renderRecord(line []byte) string {
	rec, err := sol.ParseRecord(line)
	if err != nil {
		return printable(string(line))
	}
	return rec.Time.Local().Format("15:04:05.000") + " " + string(rec.Dir) + " " + printable(string(rec.Data))
}

// printable drops terminal escape sequences and control characters (a
// line end at the end of a console line included).
func printable(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == 0x1b:
			// ESC [ ... final byte, or ESC and one more byte.
			if i+1 < len(s) && s[i+1] == '[' {
				i += 2
				for i < len(s) && (s[i] < 0x40 || s[i] > 0x7e) {
					i++
				}
			} else {
				i++
			}
		case c == '\t':
			b.WriteByte(' ')
		case c < 0x20 || c == 0x7f:
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
