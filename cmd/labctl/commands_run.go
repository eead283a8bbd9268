//go:build labctl_run

package main

import "github.com/urfave/cli/v2"

// labctl-run: labctl built with the tag labctl_run (make build) holds only
// the run command and what it needs, not the daemon, web UI, databases and
// API client of the other commands. `labctl run` hands its process to it
// (handOffRun), so that the dispatcher of a job run without a daemon maps
// the pages of a binary half the size (bench/RESULTS.md: its peak resident
// set).

// commands lists labctl-run's one command.
func commands(env *appEnv) []*cli.Command {
	return []*cli.Command{newRunCommand(env)}
}

// handOffRun does nothing: labctl-run runs the job itself.
func handOffRun(*appEnv) error { return nil }
