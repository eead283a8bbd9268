package simlab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"
)

// The relay's control protocol: one JSON request line, one JSON response
// line, over the node's unix control socket. The chassis hook, `simlab
// fault`, `simlab up` (readiness) and the Go API all speak it.

const (
	opStatus  = "status"
	opChassis = "chassis"
	opLossy   = "lossy"
	opSilence = "silence"
	opKillSOL = "kill-sol"
)

type controlRequest struct {
	Op string `json:"op"`
	// Args are the chassis hook's arguments, e.g. ["set", "power", "1"].
	Args []string `json:"args,omitempty"`
	// Lossy is the new lossy console setting (op "lossy").
	Lossy *LossyConsole `json:"lossy,omitempty"`
	// Silence is how long the BMC stays silent from now (op "silence"); 0 ends it.
	Silence Duration `json:"silence,omitempty"`
}

type controlResponse struct {
	Error string `json:"error,omitempty"`
	// Output is what the chassis hook prints for ipmi_sim.
	Output string  `json:"output,omitempty"`
	Status *Status `json:"status,omitempty"`
}

// Status is a node's state as its relay sees it. The relay also writes it to
// DIR/status.json whenever it changes.
type Status struct {
	Name string `json:"name"`
	// Ready: ipmi_sim runs and its SOL device is connected to the relay.
	Ready     bool `json:"ready"`
	SOLLinked bool `json:"sol_linked"`
	// Power is on while QEMU runs.
	Power bool `json:"power"`
	// BootDevice is the device the next power-on boots from, as ipmi_sim
	// names it: "pxe", "default" (disk), "cdrom", "bios" or "none".
	BootDevice string `json:"boot_device"`
	// BootEFI says whether the last boot override asked for EFI boot (read
	// from the client's request: ipmi_sim does not pass the bit on).
	BootEFI bool `json:"boot_efi"`
	// Boots counts QEMU starts; QEMUPid is the running QEMU's pid.
	Boots   int    `json:"boots"`
	QEMUPid int    `json:"qemu_pid,omitempty"`
	Accel   string `json:"accel"`
	// PoweredOnAt is when the running QEMU started; FirstOutput is how long
	// after that its first console byte arrived (zero until it does).
	PoweredOnAt time.Time `json:"powered_on_at,omitzero"`
	FirstOutput Duration  `json:"first_output,omitzero"`
	// Chassis is the log of chassis hook requests that changed something,
	// newest last (at most 50): "power on", "bootdev pxe", ...
	Chassis []ChassisEvent `json:"chassis,omitempty"`
	// Fault knobs in force and what they did.
	Lossy       LossyConsole  `json:"lossy"`
	SilentUntil time.Time     `json:"silent_until,omitzero"`
	Counters    FaultCounters `json:"counters"`
}

// ChassisEvent is one chassis action the BMC asked for.
type ChassisEvent struct {
	At     time.Time `json:"at"`
	Action string    `json:"action"`
}

// callControl sends one request to the relay at socket and waits for the
// answer (bounded by ctx and a 10 s ceiling).
func callControl(ctx context.Context, socket string, req controlRequest) (controlResponse, error) {
	var resp controlResponse
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return resp, fmt.Errorf("relay control %s: %w", socket, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	b, err := json.Marshal(req)
	if err != nil {
		return resp, err
	}
	if _, err := conn.Write(append(b, '\n')); err != nil {
		return resp, fmt.Errorf("relay control %s: %s: %w", socket, req.Op, err)
	}
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	if err != nil {
		return resp, fmt.Errorf("relay control %s: %s: no answer: %w", socket, req.Op, err)
	}
	if err := json.Unmarshal(line, &resp); err != nil {
		return resp, fmt.Errorf("relay control %s: %s: bad answer: %w", socket, req.Op, err)
	}
	if resp.Error != "" {
		return resp, fmt.Errorf("relay control %s: %s: %w", socket, req.Op, errors.New(resp.Error))
	}
	return resp, nil
}

// Chassis sends a chassis_control hook call (e.g. "get", "power") to the
// relay listening on control and returns what the hook must print.
func Chassis(ctx context.Context, control string, args []string) (string, error) {
	resp, err := callControl(ctx, control, controlRequest{Op: opChassis, Args: args})
	if err != nil {
		return "", err
	}
	return resp.Output, nil
}
