package main

import (
	"fmt"
	"io"
	"os"

	"github.com/labctl/labctl/simlab"
	"github.com/urfave/cli/v2"
)

func downCommand() *cli.Command {
	return &cli.Command{
		Name:  "down",
		Usage: "stop exactly the processes `simlab up` started (by their pid files)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Value: "build/simlab/lab", Usage: "lab directory"},
		},
		Action: func(c *cli.Context) error {
			return runDown(c.String("dir"), os.Stdout)
		},
	}
}

func runDown(dir string, out io.Writer) error {
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		fmt.Fprintf(out, "no lab in %s\n", dir)
		return nil
	}
	if err := simlab.Down(dir); err != nil {
		return err
	}
	fmt.Fprintf(out, "lab in %s stopped\n", dir)
	return nil
}
