//go:build !labctl_run

package main

import "github.com/urfave/cli/v2"

// commands lists labctl's commands, one constructor per file.
func commands(env *appEnv) []*cli.Command {
	return []*cli.Command{
		newValidateCommand(env),
		newRunCommand(env),
		newNetbootCommand(env),
		newServeCommand(env),
		newStoreCommand(env),
		newSubmitCommand(env),
		newSaveCommand(env),
		newJobsCommand(env),
		newJobCommand(env),
		newLogsCommand(env),
		newCancelCommand(env),
		newDevicesCommand(env),
		newDeviceCommand(env),
		newReserveCommand(env),
		newReleaseCommand(env),
		newPowerCommand(env),
		newBootdevCommand(env),
		newConsoleCommand(env),
		newConsolesCommand(env),
		newAuditCommand(env),
		newCompletionCommand(env),
	}
}
