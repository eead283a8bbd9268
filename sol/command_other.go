//go:build !unix

package sol

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
)

// errNoPty is what Dial returns where there are no ptys.
var errNoPty = fmt.Errorf("console command: running a console program in a pty is not supported on %s; use labctl console through a daemon", runtime.GOOS)

// ownProcessGroup leaves cmd as it is: Dial refuses before it runs one.
func ownProcessGroup(*exec.Cmd) {}

// killProcessGroup kills the process itself: there are no process groups.
func killProcessGroup(p *os.Process) { _ = p.Kill() }

// pollable is never reached: Dial refuses first.
func pollable(*os.File) (*os.File, error) { return nil, errNoPty }
