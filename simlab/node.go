package simlab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Status asks the node's relay for its state.
func (n *Node) Status(ctx context.Context) (Status, error) {
	resp, err := callControl(ctx, n.control, controlRequest{Op: opStatus})
	if err != nil {
		return Status{}, fmt.Errorf("%s: %w", n.Name, err)
	}
	return *resp.Status, nil
}

// Counters returns what the fault knobs did so far.
func (n *Node) Counters(ctx context.Context) (FaultCounters, error) {
	s, err := n.Status(ctx)
	return s.Counters, err
}

// SetLossyConsole makes the console drop input as l says (LossyConsole{}
// turns it off). Counters keep counting across changes.
func (n *Node) SetLossyConsole(ctx context.Context, l LossyConsole) error {
	if err := l.Validate(); err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	if _, err := callControl(ctx, n.control, controlRequest{Op: opLossy, Lossy: &l}); err != nil {
		return fmt.Errorf("%s: set lossy console: %w", n.Name, err)
	}
	return nil
}

// SilenceBMC makes the BMC stop answering IPMI (every datagram to and from
// it is dropped) for d; d <= 0 ends a silence now.
func (n *Node) SilenceBMC(ctx context.Context, d time.Duration) error {
	if _, err := callControl(ctx, n.control, controlRequest{Op: opSilence, Silence: Duration(d)}); err != nil {
		return fmt.Errorf("%s: silence BMC: %w", n.Name, err)
	}
	return nil
}

// KillSOL ends the active SOL session from the BMC side: the payload is
// deactivated in the BMC and every SOL client gets a zero-length datagram,
// which ends ipmitool's `sol activate` with "SOL session closed by BMC"
// (a client that ignores it sees its SOL packets go unanswered).
func (n *Node) KillSOL(ctx context.Context) error {
	if _, err := callControl(ctx, n.control, controlRequest{Op: opKillSOL}); err != nil {
		return fmt.Errorf("%s: kill SOL session: %w", n.Name, err)
	}
	return nil
}

// IPMIToolArgs is the ipmitool command line (without the command) for this
// node's BMC. The password is not in it: run it with IPMIToolEnv.
func (n *Node) IPMIToolArgs() []string {
	return []string{"-I", "lanplus", "-C", strconv.Itoa(n.BMC.CipherSuite), "-H", n.BMC.Host,
		"-p", strconv.Itoa(n.BMC.Port), "-U", n.BMC.User, "-E"}
}

// IPMIToolEnv is the environment for IPMIToolArgs: the current one plus
// IPMI_PASSWORD.
func (n *Node) IPMIToolEnv() []string {
	return append(os.Environ(), "IPMI_PASSWORD="+n.BMC.Password)
}

// IPMITool runs `ipmitool <lanplus options> args...` against the node's BMC
// and returns its combined output.
func (n *Node) IPMITool(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ipmitool", append(n.IPMIToolArgs(), args...)...)
	cmd.Env = n.IPMIToolEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: ipmitool %s: %w: %s", n.Name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// LogTail returns the last lines of the node's console, relay and QEMU
// logs: what to show when something on the node went wrong.
func (n *Node) LogTail() string {
	return logTail(n.ConsoleLog, filepath.Join(n.Dir, relayLogFile), filepath.Join(n.Dir, qemuLogFile))
}
