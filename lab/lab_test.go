package lab

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/sol"
)

func loadTestLab(t *testing.T) *Lab {
	t.Helper()
	cfg, err := devices.Load("testdata/lab/lab.toml")
	if err != nil {
		t.Fatal(err)
	}
	l := New(cfg, nil, nil)
	t.Cleanup(func() { l.Close() })
	return l
}

func TestCommandPower(t *testing.T) {
	state := t.TempDir()
	t.Setenv("FAKEPOWER_DIR", state)
	t.Setenv("LAB_TEST_PASSWORD", "s3cret-pw")
	l := loadTestLab(t)
	n, err := l.Node("n1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, step := range []struct {
		op   labctl.PowerOp
		want bool
	}{{labctl.PowerOn, true}, {labctl.PowerOff, false}, {labctl.PowerCycle, true}} {
		if err := n.Power.Power(ctx, step.op); err != nil {
			t.Fatalf("power %s: %v", step.op, err)
		}
		on, err := n.Power.PowerState(ctx)
		if err != nil || on != step.want {
			t.Fatalf("after power %s: on=%v err=%v, want on=%v", step.op, on, err, step.want)
		}
	}
	if err := n.Power.SetBootDevice(ctx, labctl.BootPXE); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(state, "bootdev")); strings.TrimSpace(string(b)) != "pxe" {
		t.Errorf("bootdev = %q, want pxe", b)
	}
	// The password travels in the environment, never in argv.
	if b, _ := os.ReadFile(filepath.Join(state, "password-seen")); strings.TrimSpace(string(b)) != "s3cret-pw" {
		t.Errorf("the command saw IPMI_PASSWORD=%q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(state, "argv-seen")); strings.Contains(string(b), "s3cret") {
		t.Errorf("password in argv: %s", b)
	}
}

func TestCommandPowerFailureNamesDevice(t *testing.T) {
	t.Setenv("FAKEPOWER_DIR", filepath.Join(t.TempDir(), "missing", "dir"))
	l := loadTestLab(t)
	n, err := l.Node("n1")
	if err != nil {
		t.Fatal(err)
	}
	err = n.Power.Power(context.Background(), labctl.PowerOn)
	if err == nil || !strings.Contains(err.Error(), "n1") || !strings.Contains(err.Error(), "fakepower.sh") {
		t.Fatalf("err = %v, want one naming the device and the command", err)
	}
}

func TestCommandConsole(t *testing.T) {
	l := loadTestLab(t)
	n, err := l.Node("n1")
	if err != nil {
		t.Fatal(err)
	}
	s := sol.NewSession(n.Console, sol.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Expect(ctx, regexpFor(t, "console of n1")); err != nil {
		t.Fatal(err)
	}
}

func regexpFor(t *testing.T, s string) *regexp.Regexp {
	t.Helper()
	return regexp.MustCompile(regexp.QuoteMeta(s))
}
