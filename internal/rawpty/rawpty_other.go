//go:build !unix

package rawpty

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
)

// Start needs a pseudo-terminal, which this system does not have.
func Start(*exec.Cmd) (*os.File, error) {
	return nil, fmt.Errorf("a pseudo-terminal is not available on %s", runtime.GOOS)
}
