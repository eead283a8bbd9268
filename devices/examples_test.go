package devices

import (
	"path/filepath"
	"testing"
)

// The shipped example labs load (every shipped file is also checked by
// cmd/labctl's validate test), and their overrides do what their comments say.
func TestExampleLabs(t *testing.T) {
	lab, err := Load(filepath.Join("..", "examples", "lab.toml"))
	if err != nil {
		t.Fatalf("Load(examples/lab.toml) = %v", err)
	}
	node2, ok := lab.Device("node2")
	if !ok {
		t.Fatal("examples/lab.toml has no node2")
	}
	if c := node2.Settings.Console; c.Pacing != PacingFixed || c.TestShellSerialDelayMs != 20 || c.BootloaderSerialDelayMs != 5 {
		t.Errorf("node2 console = %+v, want the simlab-qemu console with fixed pacing at 20 ms in the test shell", c)
	}
	if got := lab.Match("simlab-qemu", []string{"simlab"}); len(got) != 2 {
		t.Errorf("Match(simlab-qemu, [simlab]) = %d devices, want 2", len(got))
	}

	rack, err := Load(filepath.Join("..", "examples", "rack", "lab.toml"))
	if err != nil {
		t.Fatalf("Load(examples/rack/lab.toml) = %v", err)
	}
	x86, _ := rack.Device("x86-02")
	if want := "COM32 chain.c32\nAPPEND hd0 0"; x86.Settings.LocalBoot.Entry != want {
		t.Errorf("x86-02 local boot entry = %q, want %q", x86.Settings.LocalBoot.Entry, want)
	}
	if x86.BMC.Port != 623 {
		t.Errorf("x86-02 BMC port = %d, want the default 623", x86.BMC.Port)
	}
}
