//go:build !labctl_run

package main

import (
	"context"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/labctl/labctl"
)

type auditOptions struct {
	client clientOptions
	device string
	who    string
	since  time.Time
	limit  int
	output string
}

func newAuditCommand(env *appEnv) *cli.Command {
	return &cli.Command{
		Name:  "audit",
		Usage: "list who did what on the lab: the daemon's audit trail",
		Description: `Lists the daemon's audit trail, oldest first: one entry per action a
token took or tried, with its time, the token's name (WHO) and role, the
address it came from, the action (submit, cancel, power, bootdev,
maintenance, online, health, console-write), the device and job, what
exactly (the power operation, the boot device, the reason, whom console
write was forced from) and the result: ok, refused (the token's role
does not allow it) or failed (with why). Reads and power status queries
are not recorded. The trail is append-only. It needs an operator token.

--since takes a duration back from now (2h, 30m) or a time (2026-03-04,
2026-03-04T15:04:05Z). --limit keeps the newest N entries (default 50).

EXAMPLES:
   labctl audit
   labctl audit --device node1 --since 24h
   labctl audit --who ci --limit 200 -o json

EXIT STATUS:
   0 listed, 1 an error (no daemon, a token that is not an operator's),
   64 the command line is wrong.`,
		Flags: append(clientFlags(),
			&cli.StringFlag{Name: "device", Usage: "only entries about `NODE`"},
			&cli.StringFlag{Name: "who", Usage: "only entries by the token named `NAME`"},
			&cli.StringFlag{Name: "since", Usage: "only entries since `WHEN`: a duration back from now (24h) or a time (2026-03-04T15:04:05Z)"},
			&cli.IntFlag{Name: "limit", Value: 50, Usage: "at most the newest `N` entries"},
			outputFlag(),
		),
		Action: func(c *cli.Context) error {
			out, err := listArgs(c, "--device NODE selects a device")
			if err != nil {
				return err
			}
			opts := auditOptions{client: clientOptionsFrom(c), device: c.String("device"), who: c.String("who"), limit: c.Int("limit"), output: out}
			if s := c.String("since"); s != "" {
				if opts.since, err = parseSince(s, time.Now()); err != nil {
					return usageErrorf("audit: --since %q: %v", s, err)
				}
			}
			if opts.limit <= 0 {
				return usageErrorf("audit: --limit must be positive")
			}
			return runAudit(c.Context, opts, env)
		},
	}
}

// parseSince reads a duration back from now, an RFC 3339 time or a date
// (local midnight).
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation(time.DateOnly, s, time.Local); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("use a duration (24h, 30m), a date (2026-03-04) or a time (2026-03-04T15:04:05Z)")
}

func runAudit(ctx context.Context, opts auditOptions, env *appEnv) error {
	client, err := connect(opts.client, env)
	if err != nil {
		return err
	}
	list, err := client.Audit(ctx, labctl.AuditFilter{Device: opts.device, Who: opts.who, Since: opts.since, Limit: opts.limit})
	if err != nil {
		return err
	}
	if opts.output == outputJSON {
		if list == nil {
			list = []labctl.AuditEntry{}
		}
		return printJSON(env.stdout, list)
	}
	tw := table(env.stdout)
	fmt.Fprintln(tw, "TIME\tWHO\tROLE\tFROM\tACTION\tDEVICE\tJOB\tDETAIL\tRESULT")
	for _, e := range list {
		job := "-"
		if e.Job != 0 {
			job = fmt.Sprint(e.Job)
		}
		result := e.Result
		if e.Error != "" {
			result += ": " + shorten(e.Error, 80)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.Local().Format("2006-01-02 15:04:05"), dash(e.Who), e.Role,
			dash(e.Remote), e.Action, dash(e.Device), job, dash(shorten(e.Detail, 50)), result)
	}
	return tw.Flush()
}

// dash is s, or "-" for an empty table cell.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
