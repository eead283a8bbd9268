package simlab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
)

// Relay is a node's supervisor: the `simlab relay` process. It owns the
// node's public BMC port (the front), the always-connected console between
// QEMU's serial port and ipmi_sim's SOL device, ipmi_sim itself, and QEMU,
// which it starts and stops when ipmi_sim's chassis hook asks. Every process
// it starts dies with it.
type Relay struct {
	cfg      NodeConfig
	log      *slog.Logger
	password string

	front *front

	mu          sync.Mutex
	filter      lossyFilter
	counters    FaultCounters
	closingSOL  bool // a burst closed the session; input is dropped until the kill is done
	solConn     net.Conn
	qemuConn    net.Conn
	power       bool
	bootDevice  string
	bootEFI     bool // the last boot override asked for EFI boot
	boots       int
	qemuPid     int
	poweredOnAt time.Time
	firstOutput time.Duration
	chassisLog  []ChassisEvent
	ready       bool
	dirty       bool

	// solWriteMu keeps writes to ipmi_sim's SOL device whole.
	solWriteMu sync.Mutex

	// powerMu serialises power actions; qemu belongs to it.
	powerMu sync.Mutex
	qemu    *qemuProc

	consoleLog *cappedFile
}

// NewRelay prepares the relay of the node configured in cfg.
func NewRelay(cfg NodeConfig, log *slog.Logger) (*Relay, error) {
	pw, err := os.ReadFile(cfg.PasswordFile)
	if err != nil {
		return nil, fmt.Errorf("relay %s: read BMC password: %w", cfg.Name, err)
	}
	return &Relay{
		cfg:        cfg,
		log:        log,
		password:   strings.TrimSpace(string(pw)),
		bootDevice: "default",
		dirty:      true,
	}, nil
}

// Serve runs the node until ctx ends, then stops QEMU and ipmi_sim.
func (r *Relay) Serve(ctx context.Context) error {
	c := r.cfg
	_ = os.Remove(c.ControlSocket) // stale from a crashed relay of this slot (we hold the slot)
	ctl, err := net.Listen("unix", c.ControlSocket)
	if err != nil {
		return fmt.Errorf("relay %s: control socket: %w", c.Name, err)
	}
	defer os.Remove(c.ControlSocket)
	solLn, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", c.Ports.SOL))
	if err != nil {
		ctl.Close()
		return fmt.Errorf("relay %s: SOL port: %w", c.Name, err)
	}
	pub, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: c.Ports.BMC})
	if err != nil {
		ctl.Close()
		solLn.Close()
		return fmt.Errorf("relay %s: BMC port: %w", c.Name, err)
	}
	publics := []*net.UDPConn{pub}
	if c.NetNS != "" {
		// The same BMC address inside the lab's namespace, for a labctl
		// running there (ipmi_sim stays in the host's namespace).
		var inNS *net.UDPConn
		err := InNetNS(c.NetNS, func() error {
			var err error
			inNS, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: c.Ports.BMC})
			return err
		})
		if err != nil {
			ctl.Close()
			solLn.Close()
			pub.Close()
			return fmt.Errorf("relay %s: BMC port in the lab network: %w", c.Name, err)
		}
		publics = append(publics, inNS)
	}
	r.front = newFront(publics, &net.UDPAddr{IP: net.ParseIP(BMCInternalIP), Port: c.Ports.BMC}, r.log)
	r.front.flags = newBootFlagReader(r.password)
	cl, err := openCappedFile(filepath.Join(c.Dir, consoleLogFile), 64<<20)
	if err != nil {
		ctl.Close()
		solLn.Close()
		for _, p := range publics {
			p.Close()
		}
		return fmt.Errorf("relay %s: console log: %w", c.Name, err)
	}
	r.consoleLog = cl
	defer cl.Close()

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return r.front.serve(gctx) })
	g.Go(func() error { r.acceptSOL(gctx, solLn); return nil })
	g.Go(func() error { r.serveControl(gctx, ctl); return nil })
	g.Go(func() error { r.writeStatusLoop(gctx); return nil })
	g.Go(func() error { return r.runIPMISim(gctx) })
	g.Go(func() error { r.waitReady(gctx); return nil })
	err = g.Wait()

	r.powerOff()
	r.mu.Lock()
	r.ready = false
	r.dirty = true
	r.mu.Unlock()
	r.writeStatus()
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("relay %s: %w", c.Name, err)
	}
	return nil
}

// runIPMISim runs ipmi_sim until ctx ends; its unexpected exit ends the relay.
func (r *Relay) runIPMISim(ctx context.Context) error {
	c := r.cfg
	logf, err := os.OpenFile(filepath.Join(c.Dir, ipmiSimLogFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	state := filepath.Join(c.Dir, "bmcstate")
	if err := os.MkdirAll(state, 0o755); err != nil {
		return err
	}
	cmd := exec.Command(c.IPMISim, "-c", filepath.Join(c.Dir, lanConfFile), "-f", filepath.Join(c.Dir, bmcEmuFile), "-s", state, "-n")
	cmd.Dir = c.Dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start ipmi_sim: %w", err)
	}
	pidFile := filepath.Join(c.Dir, ipmiSimPidFile)
	_ = writePidFile(pidFile, cmd.Process.Pid)
	defer os.Remove(pidFile)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return fmt.Errorf("ipmi_sim exited: %v (see %s)", err, filepath.Join(c.Dir, ipmiSimLogFile))
	case <-ctx.Done():
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		return nil
	}
}

// waitReady marks the node ready once ipmi_sim answers an RMCP ping on its
// port and its SOL device has connected to the relay.
func (r *Relay) waitReady(ctx context.Context) {
	addr := fmt.Sprintf("%s:%d", BMCInternalIP, r.cfg.Ports.BMC)
	for ctx.Err() == nil {
		if rmcpPing(addr, 200*time.Millisecond) == nil {
			r.mu.Lock()
			linked := r.solConn != nil
			if linked {
				r.ready = true
				r.dirty = true
			}
			r.mu.Unlock()
			if linked {
				r.log.Info("node ready", "bmc", fmt.Sprintf("127.0.0.1:%d", r.cfg.Ports.BMC))
				return
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// acceptSOL takes ipmi_sim's SOL connections; a new one replaces the old.
func (r *Relay) acceptSOL(ctx context.Context, ln net.Listener) {
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		r.mu.Lock()
		old := r.solConn
		r.solConn = conn
		r.dirty = true
		r.mu.Unlock()
		if old != nil {
			old.Close()
		}
		r.log.Info("ipmi_sim SOL connected")
		go r.pumpInput(ctx, conn)
	}
}

// pumpInput carries console input (typed by a SOL client, via ipmi_sim) to
// QEMU's serial port through the break filter and the lossy console
// filter.
func (r *Relay) pumpInput(ctx context.Context, conn net.Conn) {
	defer func() {
		r.mu.Lock()
		if r.solConn == conn {
			r.solConn = nil
			r.dirty = true
		}
		r.mu.Unlock()
		conn.Close()
	}()
	buf := make([]byte, 1024)
	in := make([]byte, 0, 1024)
	out := make([]byte, 0, 1024)
	var breaks breakFilter
	for {
		n, err := conn.Read(buf)
		in = in[:0]
		if n > 0 {
			var brk int
			in, brk = breaks.filter(in, buf[:n])
			if brk > 0 {
				r.log.Info("serial break asked for: dropped (QEMU's serial port here cannot take one)", "breaks", brk)
			}
		}
		if len(in) > 0 {
			now := time.Now()
			out = out[:0]
			kill := false
			r.mu.Lock()
			dropped := r.counters.DroppedInput()
			unechoed := r.filter.unechoed
			for _, b := range in {
				if r.closingSOL {
					r.counters.DroppedBurst++
					continue
				}
				switch r.filter.input(now) {
				case acceptByte:
					out = append(out, b)
				case dropUnechoed:
					r.counters.DroppedUnechoed++
				case dropGap:
					r.counters.DroppedGap++
				case dropBurst, closeSession:
					r.counters.DroppedBurst++
					r.closingSOL = true
					kill = true
				}
			}
			q := r.qemuConn
			if q == nil {
				r.counters.InputWhileOff += int64(len(out))
				out = out[:0]
			} else {
				r.counters.InputBytes += int64(len(out))
			}
			r.dirty = true
			dropped = r.counters.DroppedInput() - dropped
			r.mu.Unlock()
			if dropped > 0 {
				r.log.Info("lossy console dropped input", "bytes", dropped, "of", len(in), "unechoed_before", unechoed, "chunk", fmt.Sprintf("%q", in))
			}
			if len(out) > 0 {
				_, _ = q.Write(out)
			}
			if kill {
				r.log.Info("input burst: closing the SOL session", "lossy", r.filterConfig().String())
				go func() { _ = r.KillSOL(ctx) }()
			}
		}
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("ipmi_sim SOL link lost", "err", err)
			}
			return
		}
	}
}

// pumpOutput carries one QEMU instance's console output to ipmi_sim's SOL
// device and the console log. A slow SOL client pushes back on QEMU rather
// than losing output.
func (r *Relay) pumpOutput(conn net.Conn, started time.Time) {
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			r.mu.Lock()
			r.counters.OutputBytes += int64(n)
			r.filter.echoed(n)
			if r.firstOutput == 0 && r.poweredOnAt.Equal(started) {
				r.firstOutput = time.Since(started)
			}
			sol := r.solConn
			r.dirty = true
			r.mu.Unlock()
			_, _ = r.consoleLog.Write(buf[:n])
			if sol != nil {
				r.solWriteMu.Lock()
				_, _ = sol.Write(buf[:n])
				r.solWriteMu.Unlock()
			}
		}
		if err != nil {
			return
		}
	}
}

// writeSOL writes b to ipmi_sim's SOL device, as if the machine printed it.
func (r *Relay) writeSOL(b []byte) {
	r.mu.Lock()
	sol := r.solConn
	r.mu.Unlock()
	if sol == nil {
		return
	}
	r.solWriteMu.Lock()
	defer r.solWriteMu.Unlock()
	_ = sol.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = sol.Write(b)
	_ = sol.SetWriteDeadline(time.Time{})
}

func (r *Relay) filterConfig() LossyConsole {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.filter.cfg
}

// SetLossy replaces the lossy console setting (counters are kept).
func (r *Relay) SetLossy(l LossyConsole) error {
	if err := l.Validate(); err != nil {
		return err
	}
	r.mu.Lock()
	r.filter = lossyFilter{cfg: l, unechoed: 0}
	r.dirty = true
	r.mu.Unlock()
	r.log.Info("lossy console", "setting", l.String())
	return nil
}

// KillSOL ends the active SOL session from the BMC side: ipmi_sim's payload
// is deactivated (so the next `sol activate` works at once) and every SOL
// client is told the session is over.
func (r *Relay) KillSOL(ctx context.Context) error {
	defer func() {
		r.mu.Lock()
		r.closingSOL = false
		r.counters.SOLKills++
		r.dirty = true
		r.mu.Unlock()
	}()
	// The front knows SOL clients by their SOL datagrams; a client of an
	// idle console has sent none. A notice through the console makes
	// ipmi_sim send one to whoever holds the session.
	r.writeSOL([]byte("\r\n[simlab: the BMC closes this SOL session]\r\n"))
	for i := 0; i < 25 && r.front.solClients() == 0; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	err := r.deactivateSOL(ctx)
	told := r.front.endSOLClients()
	r.log.Info("SOL session killed by the BMC", "clients_told", told, "deactivate_err", err)
	return err
}

// deactivateSOL runs `ipmitool sol deactivate` against ipmi_sim's own port
// (past the front, so it works while the BMC is silenced). The password goes
// through the environment (-E), never the command line.
func (r *Relay) deactivateSOL(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.cfg.IPMITool, "-I", "lanplus", "-C", "3", "-H", BMCInternalIP,
		"-p", strconv.Itoa(r.cfg.Ports.BMC), "-U", r.cfg.BMCUser, "-E", "-N", "1", "-R", "3", "sol", "deactivate")
	cmd.Env = append(os.Environ(), "IPMI_PASSWORD="+r.password)
	out, err := cmd.CombinedOutput()
	if err != nil && !strings.Contains(string(out), "already de-activated") {
		return fmt.Errorf("sol deactivate on %s: %v: %s", r.cfg.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Silence makes the BMC stop answering for d (0 ends a silence now).
func (r *Relay) Silence(d time.Duration) {
	until := r.front.silence(d)
	r.mu.Lock()
	r.dirty = true
	r.mu.Unlock()
	r.log.Info("bmc silence", "until", until)
}

// Chassis executes one chassis_control hook call from ipmi_sim:
//
//	get power|boot ...   -> "power:0|1", "boot:<dev>" (one line each)
//	set power 0|1, set reset 1, set boot <dev>, set shutdown 1, set identify ...
//
// It returns within milliseconds: ipmitool retransmits slow requests and
// ipmi_sim then runs the action twice.
func (r *Relay) Chassis(args []string) (string, error) {
	if len(args) < 2 {
		return "", fmt.Errorf("chassis: want get NAME... or set NAME VALUE, got %q", args)
	}
	switch args[0] {
	case "get":
		var lines []string
		for _, name := range args[1:] {
			switch name {
			case "power":
				r.mu.Lock()
				on := r.power
				r.mu.Unlock()
				lines = append(lines, "power:"+boolDigit(on))
			case "boot":
				r.mu.Lock()
				dev := r.bootDevice
				r.mu.Unlock()
				lines = append(lines, "boot:"+dev)
			default:
				return "", fmt.Errorf("chassis: get %s: not supported", name)
			}
		}
		return strings.Join(lines, "\n"), nil
	case "set":
		if len(args) != 3 {
			return "", fmt.Errorf("chassis: want set NAME VALUE, got %q", args)
		}
		name, val := args[1], args[2]
		switch name {
		case "power":
			if val == "1" {
				return "", r.powerOn()
			}
			r.powerOff()
			return "", nil
		case "reset":
			r.event("reset")
			r.powerOff()
			return "", r.powerOn()
		case "shutdown":
			r.event("soft shutdown")
			r.powerOff()
			return "", nil
		case "boot":
			switch val {
			case "none", "pxe", "default", "cdrom", "bios":
			default:
				return "", fmt.Errorf("chassis: set boot %q: unknown device", val)
			}
			// The front has read the request this hook call answers.
			flags := r.front.flags.last()
			r.mu.Lock()
			r.bootDevice = val
			r.bootEFI = flags.Set && flags.EFI
			r.dirty = true
			if r.bootEFI {
				r.eventLocked("bootdev " + val + " (EFI)")
			} else {
				r.eventLocked("bootdev " + val)
			}
			r.mu.Unlock()
			return "", nil
		case "identify":
			r.event("identify " + val)
			return "", nil
		}
		return "", fmt.Errorf("chassis: set %s: not supported", name)
	}
	return "", fmt.Errorf("chassis: unknown request %q", args)
}

func boolDigit(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func (r *Relay) event(action string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.eventLocked(action)
}

// eventLocked is event with r.mu held, so that a state change and its event
// are seen together by Status.
func (r *Relay) eventLocked(action string) {
	r.chassisLog = append(r.chassisLog, ChassisEvent{At: time.Now(), Action: action})
	if len(r.chassisLog) > 50 {
		r.chassisLog = r.chassisLog[len(r.chassisLog)-50:]
	}
	r.dirty = true
}

// qemuProc is one run of QEMU (one power-on).
type qemuProc struct {
	cmd    *exec.Cmd
	done   chan struct{} // closed once QEMU exited and was reaped
	killed atomic.Bool   // set by powerOff before SIGKILL
}

// running reports whether QEMU has not exited yet (it may stop by itself:
// a guest shutdown with -no-reboot, a crash).
func (q *qemuProc) running() bool {
	select {
	case <-q.done:
		return false
	default:
		return true
	}
}

// powerOn starts QEMU, detached from the hook, booting from the last boot
// device. Its serial port is one end of a socketpair the relay holds.
func (r *Relay) powerOn() error {
	r.powerMu.Lock()
	defer r.powerMu.Unlock()
	if r.qemu != nil && r.qemu.running() {
		return nil
	}
	r.qemu = nil
	c := r.cfg
	r.mu.Lock()
	dev, efi := r.bootDevice, r.bootEFI
	r.mu.Unlock()
	netFirst := dev == "pxe"
	order := "disk first"
	if netFirst {
		order = "network first"
	}
	if netFirst && !efi && firmwareName(c.Firmware) != FirmwareBIOS {
		// UEFI-only firmware has no legacy network boot: it ignores the
		// override and boots its own order, as a real server does.
		netFirst = false
		order = "its own order (a legacy boot override: UEFI-only firmware ignores it)"
	}
	args, err := qemuArgs(c, netFirst)
	if err != nil {
		return fmt.Errorf("power on %s: %w", c.Name, err)
	}
	argv := append([]string{c.QEMU}, args...)
	if c.NetNS != "" {
		// ip netns exec execs QEMU: the pid stays QEMU's.
		argv = append([]string{c.IPTool, "netns", "exec", c.NetNS}, argv...)
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("power on %s: console socketpair: %w", c.Name, err)
	}
	mine := os.NewFile(uintptr(fds[0]), "console")
	theirs := os.NewFile(uintptr(fds[1]), "qemu-console")
	conn, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		theirs.Close()
		return fmt.Errorf("power on %s: console socket: %w", c.Name, err)
	}
	logf, err := os.OpenFile(filepath.Join(c.Dir, qemuLogFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		conn.Close()
		theirs.Close()
		return fmt.Errorf("power on %s: %w", c.Name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = c.Dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.ExtraFiles = []*os.File{theirs} // fd 3 in QEMU: -chardev socket,fd=3
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	fmt.Fprintf(logf, "--- %s power on: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(cmd.Args, " "))
	started := time.Now()
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		logf.Close()
		conn.Close()
		return fmt.Errorf("power on %s: start QEMU: %w", c.Name, err)
	}
	pidFile := filepath.Join(c.Dir, qemuPidFile)
	_ = writePidFile(pidFile, cmd.Process.Pid)
	proc := &qemuProc{cmd: cmd, done: make(chan struct{})}
	r.qemu = proc
	r.mu.Lock()
	r.qemuConn = conn
	r.power = true
	r.boots++
	r.qemuPid = cmd.Process.Pid
	r.poweredOnAt = started
	r.firstOutput = 0
	r.filter.unechoed = 0
	r.dirty = true
	r.eventLocked(fmt.Sprintf("power on (boot %s, %s, firmware %s, accel %s)", dev, order, firmwareName(c.Firmware), c.Accel))
	r.mu.Unlock()
	go r.pumpOutput(conn, started)
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(logf, "--- %s QEMU exited: %v\n", time.Now().Format(time.RFC3339Nano), err)
		logf.Close()
		conn.Close()
		os.Remove(pidFile)
		r.mu.Lock()
		if r.qemuConn == conn {
			r.qemuConn = nil
			r.power = false
			r.qemuPid = 0
			r.dirty = true
		}
		if !proc.killed.Load() {
			r.eventLocked(fmt.Sprintf("machine stopped by itself (%v)", err))
		}
		r.mu.Unlock()
		close(proc.done)
	}()
	return nil
}

// powerOff pulls the plug: SIGKILL, then waits (briefly) until QEMU is gone.
func (r *Relay) powerOff() {
	r.powerMu.Lock()
	defer r.powerMu.Unlock()
	if r.qemu == nil {
		return
	}
	proc := r.qemu
	r.qemu = nil
	if !proc.running() {
		return // it stopped by itself; the power state says so already
	}
	proc.killed.Store(true)
	_ = proc.cmd.Process.Kill()
	select {
	case <-proc.done:
	case <-time.After(3 * time.Second):
		r.log.Warn("QEMU did not exit 3 s after SIGKILL", "pid", proc.cmd.Process.Pid)
	}
	r.mu.Lock()
	r.power = false
	r.qemuPid = 0
	r.dirty = true
	r.eventLocked("power off")
	r.mu.Unlock()
}

// Status returns the node's current state.
func (r *Relay) Status() Status {
	silentUntil, silenced := time.Time{}, int64(0)
	if r.front != nil {
		silentUntil, silenced = r.front.state()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Status{
		Name:        r.cfg.Name,
		Ready:       r.ready,
		SOLLinked:   r.solConn != nil,
		Power:       r.power,
		BootDevice:  r.bootDevice,
		BootEFI:     r.bootEFI,
		Boots:       r.boots,
		QEMUPid:     r.qemuPid,
		Accel:       r.cfg.Accel,
		FirstOutput: Duration(r.firstOutput),
		Chassis:     append([]ChassisEvent(nil), r.chassisLog...),
		Lossy:       r.filter.cfg,
		Counters:    r.counters,
	}
	if r.power {
		s.PoweredOnAt = r.poweredOnAt
	}
	if time.Now().Before(silentUntil) {
		s.SilentUntil = silentUntil
	}
	s.Counters.SilencedPackets = silenced
	return s
}

func (r *Relay) writeStatusLoop(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.mu.Lock()
			dirty := r.dirty
			r.dirty = false
			r.mu.Unlock()
			if dirty {
				r.writeStatus()
			}
		}
	}
}

func (r *Relay) writeStatus() {
	b, err := json.MarshalIndent(r.Status(), "", "  ")
	if err != nil {
		return
	}
	path := filepath.Join(r.cfg.Dir, statusFile)
	tmp := path + ".tmp"
	if os.WriteFile(tmp, append(b, '\n'), 0o644) == nil {
		_ = os.Rename(tmp, path)
	}
}

// serveControl answers control requests until ctx ends.
func (r *Relay) serveControl(ctx context.Context, ln net.Listener) {
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go r.handleControl(ctx, conn)
	}
}

func (r *Relay) handleControl(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	if err != nil {
		return
	}
	var req controlRequest
	var resp controlResponse
	if err := json.Unmarshal(line, &req); err != nil {
		resp.Error = "bad request: " + err.Error()
	} else {
		resp = r.control(ctx, req)
	}
	b, _ := json.Marshal(resp)
	_, _ = conn.Write(append(b, '\n'))
}

func (r *Relay) control(ctx context.Context, req controlRequest) controlResponse {
	var resp controlResponse
	var err error
	switch req.Op {
	case opStatus:
	case opChassis:
		resp.Output, err = r.Chassis(req.Args)
		if err != nil {
			r.log.Warn("chassis hook", "args", req.Args, "err", err)
		}
	case opLossy:
		if req.Lossy == nil {
			err = errors.New("lossy: no setting given")
		} else {
			err = r.SetLossy(*req.Lossy)
		}
	case opSilence:
		r.Silence(time.Duration(req.Silence))
	case opKillSOL:
		err = r.KillSOL(ctx)
	default:
		err = fmt.Errorf("unknown op %q", req.Op)
	}
	if err != nil {
		resp.Error = err.Error()
	}
	if req.Op != opChassis {
		s := r.Status()
		resp.Status = &s
	}
	return resp
}

// cappedFile is an append-only log that stops growing at max bytes.
type cappedFile struct {
	mu      sync.Mutex
	f       *os.File
	written int64
	max     int64
}

func openCappedFile(path string, max int64) (*cappedFile, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &cappedFile{f: f, written: st.Size(), max: max}, nil
}

func (c *cappedFile) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.written >= c.max {
		return len(b), nil
	}
	if c.written+int64(len(b)) > c.max {
		b = b[:c.max-c.written]
	}
	n, err := c.f.Write(b)
	c.written += int64(n)
	return n, err
}

func (c *cappedFile) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.f.Close()
}
