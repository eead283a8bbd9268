package simlab

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testPool(t *testing.T, dir string, size int, owner string) *Pool {
	t.Helper()
	return &Pool{Dir: dir, Size: size, Owner: owner, PortsFree: func(Ports) error { return nil }}
}

func TestSlotPorts(t *testing.T) {
	p0, p1 := SlotPorts(0), SlotPorts(1)
	if p0.BMC != BasePort || p1.BMC != BasePort+SlotStride {
		t.Errorf("BMC ports %d, %d", p0.BMC, p1.BMC)
	}
	seen := map[int]bool{}
	for s := 0; s < MaxSlots; s++ {
		p := SlotPorts(s)
		for _, port := range []int{p.BMC, p.SOL, p.TFTP, p.HTTP, p.Server} {
			if seen[port] {
				t.Fatalf("slot %d: port %d used twice", s, port)
			}
			seen[port] = true
		}
	}
}

func TestPoolAcquire(t *testing.T) {
	dir := t.TempDir()
	a := testPool(t, dir, 3, "pool A")
	b := testPool(t, dir, 3, "pool B")
	ctx := context.Background()

	got, err := a.Acquire(ctx, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].N != 0 || got[1].N != 1 || got[1].Ports != SlotPorts(1) {
		t.Errorf("first acquire: slots %d, %d", got[0].N, got[1].N)
	}
	// B needs two but only one is free: it waits (all or nothing) and says
	// who holds the others.
	var msgs []string
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = b.Acquire(short, 2, func(s string) { msgs = append(msgs, s) })
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("acquire with one slot free: %v, want deadline exceeded", err)
	}
	if len(msgs) == 0 || !strings.Contains(msgs[0], "held by pool A") {
		t.Errorf("progress messages %q do not name the holder", msgs)
	}
	// Nothing was kept by the failed attempt: one slot is still free.
	one, err := b.Acquire(ctx, 1, nil)
	if err != nil || one[0].N != 2 {
		t.Fatalf("acquire 1: %v, %v", one, err)
	}
	// Releasing lets a waiter through.
	done := make(chan []*Slot, 1)
	go func() {
		s, err := b.Acquire(ctx, 2, nil)
		if err != nil {
			t.Error(err)
		}
		done <- s
	}()
	time.Sleep(100 * time.Millisecond)
	releaseAll(got)
	select {
	case s := <-done:
		if len(s) != 2 {
			t.Errorf("waiter got %d slots", len(s))
		}
		releaseAll(s)
	case <-time.After(5 * time.Second):
		t.Fatal("waiter did not get the released slots")
	}
	releaseAll(one)

	if _, err := a.Acquire(ctx, 4, nil); !errors.Is(err, ErrNotEnoughSlots) {
		t.Errorf("acquire 4 of 3: %v", err)
	}
	if _, err := a.Acquire(ctx, 0, nil); err == nil {
		t.Error("acquire 0 accepted")
	}
}

func TestPoolSkipsBusyPorts(t *testing.T) {
	p := testPool(t, t.TempDir(), 2, "me")
	p.PortsFree = func(ports Ports) error {
		if ports.BMC == SlotPorts(0).BMC {
			return errors.New("in use")
		}
		return nil
	}
	s, err := p.Acquire(context.Background(), 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseAll(s)
	if s[0].N != 1 {
		t.Errorf("got slot %d, want 1 (slot 0's ports are busy)", s[0].N)
	}
}

func TestDefaultPool(t *testing.T) {
	t.Setenv("LABCTL_SIMLAB_POOL", "/x/pool")
	t.Setenv("LABCTL_SIMLAB_SLOTS", "5")
	p, err := DefaultPool()
	if err != nil || p.Dir != "/x/pool" || p.Size != 5 {
		t.Fatalf("DefaultPool = %+v, %v", p, err)
	}
	if got := p.ControlSocket(4); got != filepath.Join("/x/pool", "slots", "4.sock") {
		t.Errorf("ControlSocket(4) = %q", got)
	}
	if lp := LabPool(); lp.First != LabSlotsFirst || lp.First+lp.Size != MaxSlots || SlotPorts(lp.First).BMC != 16630 {
		t.Errorf("LabPool = slots %d..%d", lp.First, lp.First+lp.Size-1)
	}
	for _, bad := range []string{"0", "-1", "many", "41"} {
		t.Setenv("LABCTL_SIMLAB_SLOTS", bad)
		if _, err := DefaultPool(); err == nil {
			t.Errorf("LABCTL_SIMLAB_SLOTS=%s accepted", bad)
		}
	}
}

func TestPoolFirst(t *testing.T) {
	p := &Pool{Dir: t.TempDir(), First: 40, Size: 2, Owner: "lab", PortsFree: func(Ports) error { return nil }}
	s, err := p.Acquire(context.Background(), 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseAll(s)
	if s[0].N != 40 || s[1].N != 41 || s[0].Ports.BMC != 16630 {
		t.Errorf("slots %d (bmc %d), %d", s[0].N, s[0].Ports.BMC, s[1].N)
	}
}
