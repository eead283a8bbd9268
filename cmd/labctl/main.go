// Command labctl runs jobs on the machines of a lab: it powers them through
// their BMCs, network-boots a master image that writes the job's disk
// image, boots the disk and runs the job's tests over the serial console.
//
// Each command lives in its own file (validate.go, ...) as a constructor
// newXCommand(env) whose Action only collects flags and calls
// runX(ctx, opts, env), which tests call directly. Errors become exit codes
// in one place: exitCode, below. Built with the tag labctl_run, the
// package is labctl-run: the run command alone (commands_run.go).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

// appEnv is what commands get from main: where to write and how to read
// the environment. Tests make their own.
type appEnv struct {
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	// handOff lets the run command hand the process to labctl-run
	// (handOffRun): main sets it; tests run jobs in their own process.
	handOff bool
}

// newLogger is labctl's diagnostics log on stderr: messages at level and
// above, all of them with LABCTL_DEBUG=1.
func newLogger(env *appEnv, level slog.Level) *slog.Logger {
	if env.getenv("LABCTL_DEBUG") == "1" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(env.stderr, &slog.HandlerOptions{Level: level}))
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	env := &appEnv{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, handOff: true}
	err := newApp(env).RunContext(ctx, os.Args)
	stop()
	os.Exit(exitCode(env, err))
}

// newApp builds the command line: labctl and its commands.
func newApp(env *appEnv) *cli.App {
	app := &cli.App{
		Name:                 "labctl",
		Usage:                "run jobs on lab machines: IPMI power, PXE, serial console",
		Writer:               env.stdout,
		ErrWriter:            env.stderr,
		Commands:             commands(env),
		EnableBashCompletion: true,
		HideHelpCommand:      true,
		// Errors are turned into exit codes by exitCode, not by urfave/cli
		// (which would call os.Exit itself).
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError:   onUsageError,
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usageErrorf("unknown command %q (see labctl --help)", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
	}
	for _, cmd := range app.Commands {
		if cmd.OnUsageError == nil {
			cmd.OnUsageError = onUsageError
		}
	}
	return app
}

// usageError is a command line that makes no sense; exit status 64
// (sysexits' EX_USAGE: 1 to 3 are job outcomes, see labctl.Outcome.ExitCode).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

func onUsageError(c *cli.Context, err error, _ bool) error {
	name := c.App.Name
	if c.Command != nil && c.Command.Name != "" && c.Command.Name != c.App.Name {
		name += " " + c.Command.FullName()
	}
	return usageErrorf("%v (see %s --help)", err, name)
}

// exitUsage is the exit status for a wrong command line.
const exitUsage = 64

// exitCoder is an error that chooses labctl's exit status, such as a job
// that ended failed (1), incomplete (2) or canceled (3).
type exitCoder interface {
	error
	ExitCode() int
}

// exitCode prints err (if any) and returns labctl's exit status: 0 success,
// 1 failure, a command's own code for an exitCoder (a job's outcome: 1
// failed, 2 incomplete, 3 canceled), 64 usage error, 130 interrupted.
func exitCode(env *appEnv, err error) int {
	if err == nil {
		return 0
	}
	var usage *usageError
	var coded exitCoder
	switch {
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(env.stderr, "labctl: interrupted")
		return 130
	case errors.As(err, &usage):
		fmt.Fprintf(env.stderr, "labctl: %v\n", err)
		return exitUsage
	case errors.As(err, &coded):
		if msg := err.Error(); msg != "" {
			fmt.Fprintf(env.stderr, "labctl: %s\n", msg)
		}
		return coded.ExitCode()
	}
	fmt.Fprintf(env.stderr, "labctl: %v\n", err)
	return 1
}
