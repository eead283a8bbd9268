package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/console"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/dispatcher"
	"github.com/labctl/labctl/jobs"
	"github.com/labctl/labctl/lab"
	"github.com/labctl/labctl/results"
)

type runOptions struct {
	job    string
	lab    string
	device string // overrides the job's device choice
	dir    string // job directory; default under the lab's state_dir
	junit  string // also write the JUnit XML here
	quiet  bool
	// spec, if set, is the job (labctl save), instead of the file job.
	spec *jobs.Job
	// saveTo, if set, is where the job's [save] goes instead of the lab's
	// save directory.
	saveTo string
}

func newRunCommand(env *appEnv) *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "run one job now, in this process, on a node of the lab",
		ArgsUsage: "JOB.toml",
		Description: `Runs the job on a node without a daemon: starts the lab's boot server
(TFTP + HTTP) in this process, PXE-boots the node into the master image,
streams the job's image to its disk, boots the disk, logs in, runs the
test steps and prints a summary. The node is powered off and its PXE
entry set back to local boot at the end, also on failure or Ctrl-C.

The job directory (--dir, default STATE_DIR/jobs/ID) gets job.log (the
console transcript and the dispatcher's events), results.json, junit.xml
and the artifacts.

The device is the job's device, or the first device of its device_type
with its tags; --device picks another.

EXAMPLES:
   labctl run --lab build/simlab/lab/lab.toml examples/jobs/smoke.toml
   labctl run --lab lab.toml --device x86-02 --junit out/junit.xml nightly.toml

EXIT STATUS:
   0 complete, 1 a test step failed, 2 incomplete (the lab went wrong),
   3 canceled, 64 the command line is wrong.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "lab", Usage: "the lab `FILE`", EnvVars: []string{"LABCTL_LAB"}, TakesFile: true, Required: true},
			&cli.StringFlag{Name: "device", Usage: "run on the device `NAME` instead of the job's choice"},
			&cli.StringFlag{Name: "dir", Usage: "job `DIR`ectory (default: the lab's state_dir/jobs/ID)", TakesFile: true},
			&cli.StringFlag{Name: "junit", Usage: "also write the JUnit XML to `FILE`", TakesFile: true},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only the summary"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageErrorf("run: want one JOB.toml (see labctl run --help)")
			}
			if env.handOff && c.Context.Err() == nil {
				// (Interrupted already: this process winds down itself.)
				if err := handOffRun(env); err != nil {
					fmt.Fprintf(env.stderr, "labctl: run: %v; running the job in this process\n", err)
				}
			}
			return runRun(c.Context, runOptions{
				job: c.Args().First(), lab: c.String("lab"), device: c.String("device"),
				dir: c.String("dir"), junit: c.String("junit"), quiet: c.Bool("quiet"),
			}, env)
		},
	}
}

// consoleOpenTimeout bounds opening a node's console before a job: a SOL
// session opens in well under a second when the BMC answers.
const consoleOpenTimeout = 30 * time.Second

// jobExit is a job that did not end complete: its outcome is the exit
// status.
type jobExit struct{ res *results.Job }

func (e jobExit) Error() string {
	return fmt.Sprintf("job %s %s: %s", e.res.ID, e.res.Outcome, e.res.Reason)
}

func (e jobExit) ExitCode() int { return labctl.Outcome(e.res.Outcome).ExitCode() }

func runRun(ctx context.Context, opts runOptions, env *appEnv) error {
	spec := opts.spec
	if spec == nil {
		var err error
		if spec, err = jobs.Load(opts.job); err != nil {
			return err
		}
	}
	// The job opens its files without following a link in their last
	// component: links are the user's own here, resolved once.
	dispatcher.ResolveFiles(spec)
	cfg, err := devices.Load(opts.lab)
	if err != nil {
		return err
	}
	dev, err := pickDevice(cfg, spec, opts.device)
	if err != nil {
		return err
	}
	unlock, err := lockNode(cfg.StateDir, dev.Name, "run", "submit the job to it (labctl submit), or stop it")
	if err != nil {
		return err
	}
	defer unlock()
	saveTo := opts.saveTo
	if saveTo == "" {
		saveTo = dispatcher.SavePath(cfg.Images.SaveDir, spec)
	}
	if saveTo != "" {
		// Before the node is touched, not after the tests.
		if err := dispatcher.CheckSaveTarget(saveTo); err != nil {
			return fmt.Errorf("save.output: %w", err)
		}
	}
	id := time.Now().UTC().Format("20060102-150405") + "-" + spec.Name
	dir := opts.dir
	if dir == "" {
		dir = filepath.Join(cfg.StateDir, "jobs", id)
	}

	level := slog.LevelWarn
	if opts.quiet {
		level = slog.LevelError
	}
	log := newLogger(env, level)
	boot, err := newBootServer(cfg, log)
	if err != nil {
		return err
	}
	l := lab.New(cfg, boot, log)
	defer l.Close()
	node, err := l.Node(dev.Name)
	if err != nil {
		return err
	}

	view := newLiveView(env.stderr, opts.quiet)
	g, gctx := errgroup.WithContext(context.WithoutCancel(ctx))
	serveCtx, stopServing := context.WithCancel(gctx)
	g.Go(func() error { return boot.Serve(serveCtx) })

	if !opts.quiet {
		fmt.Fprintf(env.stderr, "job %s on %s, directory %s\n", id, dev.Name, dir)
	}
	// The console is opened where the daemon opens it (one owner per
	// node). A console that does not open is the job's infrastructure
	// error: the dispatcher reports it (and still powers the node off).
	consoles := console.New(console.Config{Log: log})
	defer consoles.Close()
	session, release, err := consoles.Acquire(ctx, dev.Name, node.Console, dev.Settings.Timeouts.Power)
	if err != nil {
		log.Warn("console did not open", "device", dev.Name, "err", err)
	}
	defer release()
	res := dispatcher.Run(ctx, dispatcher.Job{
		ID: id, Spec: spec, Device: dev.Name, Settings: dev.Settings,
		Power: node.Power, Console: session, Netboot: node.Netboot,
		Dir: dir, CacheDir: filepath.Join(cfg.StateDir, "cache"),
		Images:   dispatcher.ImagePolicy{AllowNetworks: cfg.Images.Networks, MaxDownload: cfg.Images.MaxDownload()},
		SaveTo:   saveTo,
		Progress: view, Events: view.Event, Log: log,
	})
	view.Done()
	stopServing()
	if err := g.Wait(); err != nil {
		fmt.Fprintf(env.stderr, "labctl: boot server: %v\n", err)
	}

	if err := res.WriteSummary(env.stdout); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "results: %s\n", dir)
	if opts.junit != "" {
		xml, err := os.ReadFile(filepath.Join(dir, "junit.xml"))
		if err == nil {
			err = writeFileAll(opts.junit, xml)
		}
		if err != nil {
			return fmt.Errorf("--junit: %w", err)
		}
	}
	if res.Outcome != string(labctl.Complete) {
		return jobExit{res: res}
	}
	return nil
}

// pickDevice chooses the device a job runs on without a daemon: the one
// asked for, the job's device, or the first device of its type and tags.
func pickDevice(cfg *devices.Lab, spec *jobs.Job, name string) (*devices.Device, error) {
	if name == "" {
		name = spec.Device
	}
	if name != "" {
		d, ok := cfg.Device(name)
		if !ok {
			return nil, fmt.Errorf("no device %q in lab %s", name, cfg.File)
		}
		if spec.DeviceType != "" && d.DeviceType != spec.DeviceType {
			return nil, fmt.Errorf("device %s is a %s, the job wants a %s", d.Name, d.DeviceType, spec.DeviceType)
		}
		return d, nil
	}
	match := cfg.Match(spec.DeviceType, spec.Tags)
	if len(match) == 0 {
		return nil, fmt.Errorf("no device of type %q with tags %v in lab %s", spec.DeviceType, spec.Tags, cfg.File)
	}
	return match[0], nil
}
