//go:build !labctl_run

package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/dispatcher"
	"github.com/labctl/labctl/jobs"
)

type saveOptions struct {
	client  clientOptions
	lab     string // run here, without a daemon
	node    string
	output  string
	disk    string
	timeout time.Duration
	quiet   bool
}

func newSaveCommand(env *appEnv) *cli.Command {
	return &cli.Command{
		Name:      "save",
		Usage:     "save a node's disk as an image that jobs can deploy again",
		ArgsUsage: "NODE --output NAME.img.zst",
		Description: `Boots the node into the master image, reads its disk (master.disk, or
--disk) and stores it as a zstd image with the raw disk's sha256 beside
it (NAME.img.sha256, as sha256sum writes it), ready for a job's
  [deploy]
  image = ".../NAME.img.zst"
  sha256_file = ".../NAME.img.sha256"
The master compresses (zstd level master.zstd_level of the device type),
so runs of zeros cost nothing: a sparse disk's image is about the size
of its data. The disk is hashed on the node and again by the boot server
as it arrives; the image gets its name only when both agree, and never
replaces a file. The node is powered off at the end.

Through the daemon it is a job like any other (it waits for a running
job or a reservation, and shows up in labctl jobs); it needs the operator
role, and --output is a file name in the lab's save directory ([images]
save_dir, default images/ beside the lab file) on the daemon's host: the
daemon writes nowhere else. A job file can save too, after its tests: a
[save] section with output = "NAME.img.zst".

The master needs zstd and busybox's dd, sha256sum, nc, stty and
blockdev (make master builds one); the boot server's host needs zstd
(Debian package zstd) to check what arrives.

With --lab FILE it runs here, without a daemon, as labctl run does, and
--output is any path ending in .img.zst (do not use it on a node a
running daemon owns).

EXAMPLES:
   labctl save node1 --output node1-configured.img.zst
   labctl save --lab build/simlab/lab/lab.toml node1 --output /srv/images/golden.img.zst

EXIT STATUS:
   0 saved, 2 incomplete (the lab went wrong: the reason names what
   failed; nothing is left under the name), 3 canceled, 1 refused,
   64 the command line is wrong.`,
		Flags: append(clientFlags(),
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "the image: `NAME.img.zst` (with --lab: a path)", TakesFile: true},
			&cli.StringFlag{Name: "lab", Usage: "run here without a daemon, with the lab `FILE`", TakesFile: true},
			&cli.StringFlag{Name: "disk", Usage: "read the device node `DEV` (default: the device type's master.disk)"},
			&cli.DurationFlag{Name: "timeout", Usage: "give the save at most `DURATION` (default: the device type's timeouts.deploy)"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only the summary"},
		),
		BashComplete: completeNodes(env, nil),
		Action: func(c *cli.Context) error {
			args, err := commandArgs(c)
			if err != nil {
				return err
			}
			if len(args) != 1 {
				return usageErrorf("save: want one NODE (see labctl save --help)")
			}
			if c.String("output") == "" {
				return usageErrorf("save: --output NAME.img.zst is required (see labctl save --help)")
			}
			if c.Duration("timeout") < 0 {
				return usageErrorf("save: --timeout must be positive")
			}
			return runSave(c.Context, saveOptions{
				client: clientOptionsFrom(c), lab: c.String("lab"), node: args[0], output: c.String("output"),
				disk: c.String("disk"), timeout: c.Duration("timeout"), quiet: c.Bool("quiet"),
			}, env)
		},
	}
}

// saveJob is the job file a save is: the node, and a [save] section.
func saveJob(opts saveOptions, name string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "name = \"save\"\ndevice = %q\n[save]\noutput = %q\n", opts.node, name)
	if opts.disk != "" {
		fmt.Fprintf(&b, "disk = %q\n", opts.disk)
	}
	if opts.timeout > 0 {
		fmt.Fprintf(&b, "timeout = %q\n", opts.timeout.String())
	}
	return b.String()
}

func runSave(ctx context.Context, opts saveOptions, env *appEnv) error {
	name := filepath.Base(opts.output)
	if opts.lab == "" && name != opts.output {
		return usageErrorf("save: through the daemon --output is a file name (it goes into the lab's save directory on the daemon's host), not %q", opts.output)
	}
	if !jobs.ValidSaveName(name) {
		return usageErrorf("save: --output %q: want a file name ending in .img.zst (letters, digits, '.', '_', '+', '-')", opts.output)
	}
	text := saveJob(opts, name)
	spec, err := jobs.Parse("save", []byte(text), "/")
	if err != nil {
		return usageErrorf("save: %v", err)
	}
	if opts.lab != "" {
		out, err := filepath.Abs(opts.output)
		if err != nil {
			return err
		}
		if err := dispatcher.CheckSaveTarget(out); err != nil {
			return err
		}
		return runRun(ctx, runOptions{lab: opts.lab, spec: spec, saveTo: out, quiet: opts.quiet}, env)
	}
	client, err := connect(opts.client, env)
	if err != nil {
		return err
	}
	job, err := client.Submit(ctx, labctl.SubmitRequest{File: "save", Dir: "/", Spec: text})
	if err != nil {
		return fmt.Errorf("save %s: %w", opts.node, err)
	}
	fmt.Fprintf(env.stderr, "job %d (save %s to %s) %s on %s\n", job.ID, opts.node, name, job.State, client.Server())
	v := newFollowView(env.stdout, env.stderr, false)
	end, err := followJob(ctx, client, job.ID, opts.quiet, v, env, 0)
	v.done()
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintf(env.stderr, "labctl: stopped waiting; job %d goes on (labctl cancel %d)\n", job.ID, job.ID)
		}
		return err
	}
	return finishWait(ctx, client, end, "", env)
}
