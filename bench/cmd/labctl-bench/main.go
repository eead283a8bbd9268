// Command labctl-bench measures labctl against the programs a lab would
// otherwise use: `labctl-bench run` runs the cases and prints
// markdown tables; the other subcommands are the processes it starts.
package main

import (
	"errors"
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: labctl-bench run|bootserver|farm [flags]")
		os.Exit(64)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = runRun(os.Args[2:], os.Stdout, os.Stderr)
	case "farm":
		err = runFarm(os.Args[2:])
	case "bootserver":
		err = runBootServer(os.Args[2:], os.Stdout)
	default:
		err = errors.New("unknown subcommand " + os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "labctl-bench:", err)
		os.Exit(1)
	}
}
