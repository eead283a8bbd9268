//go:build !labctl_run

package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/devices"
)

func newCompletionCommand(env *appEnv) *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print the shell completion script for bash, zsh or fish",
		ArgsUsage: "bash|zsh|fish",
		Description: `Prints a script that makes the shell complete labctl's commands, flags,
and for bash and zsh also node names (from --lab, else the daemon), power
operations and the IDs of queued and running jobs.

EXAMPLES:
   labctl completion bash > /etc/bash_completion.d/labctl
   source <(labctl completion bash)          # or this, in ~/.bashrc
   labctl completion zsh > "${fpath[1]}/_labctl"
   labctl completion fish > ~/.config/fish/completions/labctl.fish

EXIT STATUS:
   0 printed, 64 unknown shell.`,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageErrorf("completion: want bash, zsh or fish")
			}
			switch c.Args().First() {
			case "bash":
				_, err := fmt.Fprint(env.stdout, bashCompletion)
				return err
			case "zsh":
				_, err := fmt.Fprint(env.stdout, zshCompletion)
				return err
			case "fish":
				s, err := c.App.ToFishCompletion()
				if err != nil {
					return err
				}
				_, err = fmt.Fprint(env.stdout, s)
				return err
			}
			return usageErrorf("completion: shell %q: use bash, zsh or fish", c.Args().First())
		},
	}
}

// The scripts ask labctl itself (urfave/cli's --generate-bash-completion).
const bashCompletion = `# bash completion for labctl: source <(labctl completion bash)
_labctl() {
  local cur opts
  COMPREPLY=()
  cur="${COMP_WORDS[COMP_CWORD]}"
  if [[ "$cur" == "-"* ]]; then
    opts=$("${COMP_WORDS[@]:0:$COMP_CWORD}" "${cur}" --generate-bash-completion 2>/dev/null)
  else
    opts=$("${COMP_WORDS[@]:0:$COMP_CWORD}" --generate-bash-completion 2>/dev/null)
  fi
  COMPREPLY=($(compgen -W "${opts}" -- "${cur}"))
  return 0
}
complete -o bashdefault -o default -F _labctl labctl
`

const zshCompletion = `#compdef labctl
# zsh completion for labctl: labctl completion zsh > "${fpath[1]}/_labctl"
_labctl() {
  local -a opts
  local cur=${words[-1]}
  if [[ "$cur" == "-"* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} ${cur} --generate-bash-completion 2>/dev/null)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
  fi
  if [[ "${opts[1]}" != "" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}
compdef _labctl labctl
`

// completeFlags completes a flag being typed; false if no flag is. Like
// urfave/cli's own flag completion it reads os.Args: the shell scripts put
// the word being typed right before --generate-bash-completion.
func completeFlags(c *cli.Context) bool {
	n := len(os.Args)
	if n > 2 && os.Args[n-1] == "--generate-bash-completion" && strings.HasPrefix(os.Args[n-2], "-") {
		cli.DefaultCompleteWithFlags(c.Command)(c)
		return true
	}
	return false
}

// completeNodes completes NODE (from --lab, else the daemon), then one of
// actions.
func completeNodes(env *appEnv, actions []string) cli.BashCompleteFunc {
	return func(c *cli.Context) {
		if completeFlags(c) {
			return
		}
		switch c.NArg() {
		case 0:
			for _, name := range nodeNames(c, env) {
				fmt.Fprintln(c.App.Writer, name)
			}
		case 1:
			for _, a := range actions {
				fmt.Fprintln(c.App.Writer, a)
			}
		}
	}
}

// nodeNames lists the devices of --lab, else those of the daemon (quietly:
// completion must not print errors).
func nodeNames(c *cli.Context, env *appEnv) []string {
	var names []string
	if lab := c.String("lab"); lab != "" {
		cfg, err := devices.Load(lab)
		if err != nil {
			return nil
		}
		for _, d := range cfg.Devices {
			names = append(names, d.Name)
		}
		return names
	}
	client, err := connect(clientOptionsFrom(c), env)
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(c.Context, 2*time.Second)
	defer cancel()
	list, err := client.Devices(ctx)
	if err != nil {
		return nil
	}
	for _, d := range list {
		names = append(names, d.Name)
	}
	return names
}

// completeJobIDs completes the IDs of queued and running jobs, newest
// last.
func completeJobIDs(env *appEnv) cli.BashCompleteFunc {
	return func(c *cli.Context) {
		if completeFlags(c) {
			return
		}
		client, err := connect(clientOptionsFrom(c), env)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(c.Context, 2*time.Second)
		defer cancel()
		list, err := client.Jobs(ctx, labctl.JobFilter{States: []string{labctl.JobQueued, labctl.JobRunning}, Limit: 100})
		if err != nil {
			return
		}
		for _, j := range list {
			fmt.Fprintln(c.App.Writer, j.ID)
		}
	}
}
