package simlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Port plan. Slot s owns the ports BasePort+s*SlotStride ... +SlotStride-1,
// all bound on 127.0.0.1. The first slot of a lab also gives the lab's boot
// server and labctl server ports.
const (
	BasePort   = 16230
	SlotStride = 10
	// MaxSlots is the number of slots of the port plan (ports below 16730).
	MaxSlots = 50
	// LabSlotsFirst is the first of the slots kept for labs started by
	// hand (`simlab up`, `make simlab`): slots LabSlotsFirst..MaxSlots-1.
	// Test slots (StartLab) are 0..LABCTL_SIMLAB_SLOTS-1, so an idle demo
	// lab never starves the test suite of slots.
	LabSlotsFirst = 40
	// DefaultSlots is how many nodes tests may run at once on a machine
	// when LABCTL_SIMLAB_SLOTS is not set: four, one node of each firmware
	// kind (TestLabMixedFirmware); more TCG VMs than that overload 2 cores.
	DefaultSlots = 4
)

// Ports are the loopback ports one slot owns.
type Ports struct {
	// BMC is the node's IPMI lanplus port: the relay's front on 127.0.0.1,
	// and ipmi_sim itself on BMCInternalIP (the same port number, because
	// ipmitool refuses a SOL activation that names another port).
	BMC    int
	SOL    int // TCP: the relay listens, ipmi_sim's SOL device connects
	TFTP   int // UDP: the lab's boot server TFTP (first slot of a lab)
	HTTP   int // TCP: the lab's boot server HTTP (first slot of a lab)
	Server int // TCP: `labctl serve` for the lab (first slot of a lab)
}

// BMCInternalIP is the loopback address ipmi_sim listens on, behind the
// relay's front on 127.0.0.1 (all of 127.0.0.0/8 is local on Linux).
const BMCInternalIP = "127.83.76.1"

// SlotPorts returns the ports of slot s.
func SlotPorts(s int) Ports {
	b := BasePort + s*SlotStride
	return Ports{BMC: b, SOL: b + 2, TFTP: b + 4, HTTP: b + 5, Server: b + 6}
}

// Pool hands out machine-wide slots. A slot is held by an flock on
// DIR/slots/N.lock; the lock lives as long as any process holds the file
// open, so a node's relay keeps its slot after `simlab up` exits, and a
// crashed process frees its slots automatically.
type Pool struct {
	// Dir holds the lock files and control sockets (default
	// $LABCTL_SIMLAB_POOL or /tmp/labctl-simlab).
	Dir string
	// First is the pool's first slot; it has slots First..First+Size-1.
	First int
	// Size is how many slots the pool has (DefaultPool: $LABCTL_SIMLAB_SLOTS or 3).
	Size int
	// Owner is written into held lock files, so a waiting process can say
	// who holds the slots it waits for.
	Owner string
	// PortsFree reports whether a slot's ports can be bound; a slot whose
	// ports are taken by something else is skipped. Nil means portsFree.
	PortsFree func(Ports) error
}

// DefaultPool is the machine-wide pool of test slots: slots
// 0..$LABCTL_SIMLAB_SLOTS-1 (default 3), in $LABCTL_SIMLAB_POOL (default
// /tmp/labctl-simlab). It caps how many test nodes run at once, so parallel
// test packages queue instead of overloading the machine.
func DefaultPool() (*Pool, error) {
	size := DefaultSlots
	if v := os.Getenv("LABCTL_SIMLAB_SLOTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > LabSlotsFirst {
			return nil, fmt.Errorf("LABCTL_SIMLAB_SLOTS=%q: want a number from 1 to %d", v, LabSlotsFirst)
		}
		size = n
	}
	return newPool(0, size), nil
}

// LabPool is the pool of slots for labs started by hand (`simlab up`):
// slots 40..49, outside the test slots, so `make simlab` and `make test`
// can run side by side. Its first lab's node1 has BMC port 16630.
func LabPool() *Pool { return newPool(LabSlotsFirst, MaxSlots-LabSlotsFirst) }

func newPool(first, size int) *Pool {
	dir := os.Getenv("LABCTL_SIMLAB_POOL")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "labctl-simlab")
	}
	host, _ := os.Hostname()
	return &Pool{Dir: dir, First: first, Size: size, Owner: fmt.Sprintf("pid %d on %s: %s", os.Getpid(), host, strings.Join(os.Args, " "))}
}

// Slot is one held slot.
type Slot struct {
	N     int
	Ports Ports
	file  *os.File
}

// File is the locked file; pass it to a child process (exec.Cmd.ExtraFiles)
// to let the child keep the slot after this process exits.
func (s *Slot) File() *os.File { return s.file }

// ControlSocket is the path of the control socket of the node in this slot.
// It lives in the pool directory, which keeps the path short (unix socket
// paths are limited to 108 bytes) and unique on the machine.
func (p *Pool) ControlSocket(n int) string {
	return filepath.Join(p.Dir, "slots", strconv.Itoa(n)+".sock")
}

// Release gives the slot back (other holders of the same open file, such as
// a relay that inherited it, keep it held until they exit too).
func (s *Slot) Release() error {
	if s == nil || s.file == nil {
		return nil
	}
	err := s.file.Close()
	s.file = nil
	return err
}

// ErrNotEnoughSlots is returned when more slots are asked for than the pool has.
var ErrNotEnoughSlots = errors.New("not enough simlab slots")

// Acquire takes n slots, waiting (polling) until that many are free at once
// or ctx ends. Slots are taken all or nothing, so two waiters never deadlock
// holding half of what each needs. While it waits, progress reports who holds
// the slots (may be nil).
func (p *Pool) Acquire(ctx context.Context, n int, progress func(string)) ([]*Slot, error) {
	if n < 1 {
		return nil, fmt.Errorf("acquire %d simlab slots: need at least one", n)
	}
	if n > p.Size {
		return nil, fmt.Errorf("acquire %d simlab slots: the pool has %d (slots %d-%d; LABCTL_SIMLAB_SLOTS sets the test pool): %w", n, p.Size, p.First, p.First+p.Size-1, ErrNotEnoughSlots)
	}
	if err := os.MkdirAll(filepath.Join(p.Dir, "slots"), 0o777); err != nil {
		return nil, fmt.Errorf("acquire simlab slots: %w", err)
	}
	reported := ""
	delay := 200 * time.Millisecond
	for {
		slots, busy, err := p.tryAcquire(n)
		if err != nil {
			return nil, err
		}
		if slots != nil {
			return slots, nil
		}
		if progress != nil && busy != reported {
			progress(fmt.Sprintf("waiting for %d free simlab slot(s) of %d: %s", n, p.Size, busy))
			reported = busy
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("acquire %d simlab slots of %d: %w (%s)", n, p.Size, ctx.Err(), busy)
		case <-t.C:
		}
		if delay < 2*time.Second {
			delay += delay / 2
		}
	}
}

// tryAcquire takes n free slots or none; busy describes the slots it could
// not take.
func (p *Pool) tryAcquire(n int) (slots []*Slot, busy string, err error) {
	var why []string
	for i := p.First; i < p.First+p.Size && len(slots) < n; i++ {
		s, reason, err := p.tryLock(i)
		if err != nil {
			releaseAll(slots)
			return nil, "", err
		}
		if s == nil {
			why = append(why, fmt.Sprintf("slot %d %s", i, reason))
			continue
		}
		slots = append(slots, s)
	}
	if len(slots) < n {
		releaseAll(slots)
		return nil, strings.Join(why, "; "), nil
	}
	return slots, "", nil
}

func (p *Pool) tryLock(i int) (*Slot, string, error) {
	path := filepath.Join(p.Dir, "slots", strconv.Itoa(i)+".lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return nil, "", fmt.Errorf("open simlab slot %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder, _ := os.ReadFile(path)
			return nil, "held by " + strings.TrimSpace(string(holder)), nil
		}
		return nil, "", fmt.Errorf("lock simlab slot %s: %w", path, err)
	}
	ports := SlotPorts(i)
	check := p.PortsFree
	if check == nil {
		check = portsFree
	}
	if err := check(ports); err != nil {
		f.Close()
		return nil, "has a port in use by another program: " + err.Error(), nil
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(p.Owner+"\n"), 0)
	return &Slot{N: i, Ports: ports, file: f}, "", nil
}

func releaseAll(slots []*Slot) {
	for _, s := range slots {
		s.Release()
	}
}

// portsFree checks that the slot's ports can be bound on 127.0.0.1.
func portsFree(p Ports) error {
	for _, addr := range []string{"127.0.0.1", BMCInternalIP} {
		c, err := net.ListenPacket("udp4", fmt.Sprintf("%s:%d", addr, p.BMC))
		if err != nil {
			return err
		}
		c.Close()
	}
	for _, port := range []int{p.SOL} {
		l, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return err
		}
		l.Close()
	}
	return nil
}
