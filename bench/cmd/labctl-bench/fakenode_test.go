package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestFakePower: on counts a boot only when the node was off; status
// prints what ipmitool prints, which the device type's default
// status_on_regexp reads.
func TestFakePower(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	steps := []struct {
		op, status, boots string
	}{
		{"status", "off", ""},
		{"on", "on", "1"},
		{"on", "on", "1"}, // already on: no new boot
		{"off", "off", "1"},
		{"on", "on", "2"},
	}
	for i, s := range steps {
		if s.op != "status" {
			if err := fakePower(s.op, dir, &out); err != nil {
				t.Fatalf("step %d %s: %v", i, s.op, err)
			}
		}
		out.Reset()
		if err := fakePower("status", dir, &out); err != nil {
			t.Fatal(err)
		}
		if want := "Chassis Power is " + s.status; strings.TrimSpace(out.String()) != want {
			t.Fatalf("step %d: %q, want %q", i, out.String(), want)
		}
		if got := readState(dir, "boots"); got != s.boots {
			t.Fatalf("step %d: boots %q, want %q", i, got, s.boots)
		}
	}
	if err := fakePower("reboot", dir, &out); err == nil {
		t.Fatal("unknown operation accepted")
	}
}
