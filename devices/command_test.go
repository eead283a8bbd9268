package devices

import (
	"slices"
	"strings"
	"testing"
)

func TestCommandArgv(t *testing.T) {
	d := &Device{Name: "n1", BMC: BMC{Host: "bmc 1", Port: 623, User: "ad'min", PasswordFile: "/run/pw file"}}
	tests := []struct {
		text string
		want []string
	}{
		{"ipmitool -H {{.Host}} -U {{.User}} -E power on", []string{"ipmitool", "-H", "bmc 1", "-U", "ad'min", "-E", "power", "on"}},
		{"ipmitool -f {{.PasswordFile}} sol activate", []string{"ipmitool", "-f", "/run/pw file", "sol", "activate"}},
		{`relay-ctl 'port  {{.Name}}' "a \"b\" \$c" x\ y '' {{ printf "%s-%d" .Name .Port }}`, []string{"relay-ctl", "port  n1", `a "b" $c`, "x y", "", "n1-623"}},
		{`sh -c 'pdu --outlet {{.Name}} off && sleep 5'`, []string{"sh", "-c", "pdu --outlet n1 off && sleep 5"}},
		{"  spaced\tout  ", []string{"spaced", "out"}},
	}
	for _, tt := range tests {
		var c Command
		if err := c.UnmarshalText([]byte(tt.text)); err != nil {
			t.Errorf("UnmarshalText(%q) = %v", tt.text, err)
			continue
		}
		got, err := d.Argv(c)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("Argv(%q) = %q, %v; want %q", tt.text, got, err, tt.want)
		}
		if c.String() != tt.text {
			t.Errorf("String() = %q, want the text", c.String())
		}
	}
}

func TestCommandRefused(t *testing.T) {
	tests := []struct{ text, want string }{
		{"ipmitool -P {{.Password}} power on", "commands never get the password"},
		{"ipmitool -U x -P secret power on", "ipmitool -P puts the password on the command line"},
		{"/usr/bin/ipmitool -Psecret power on", "ipmitool -P puts the password on the command line"},
		{"ipmitool power status | grep on", "shell syntax (|) is not supported"},
		{"pdu off > /dev/null", "shell syntax (>) is not supported"},
		{"echo $HOME", "shell syntax ($) is not supported"},
		{"echo 'unclosed", "unclosed ' quote"},
		{"echo {{.Name", "unclosed {{"},
		{"echo {{.Name | nosuchfunc}}", `function "nosuchfunc" not defined`},
		{"echo {{.Nmae}}", "unknown field {{.Nmae}}"},
		{"echo trailing\\", "ends with a backslash"},
	}
	for _, tt := range tests {
		var c Command
		err := c.UnmarshalText([]byte(tt.text))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("UnmarshalText(%q) = %v, want an error containing %q", tt.text, err, tt.want)
		}
	}
	var noProgram Command
	if err := noProgram.UnmarshalText([]byte("{{.IP}} x")); err != nil {
		t.Fatal(err)
	}
	if _, err := (&Device{Name: "n1"}).Argv(noProgram); err == nil || !strings.Contains(err.Error(), "the program name is empty") {
		t.Errorf("Argv() of a command that fills in to no program = %v", err)
	}
	var empty Command
	if err := empty.UnmarshalText([]byte("  ")); err != nil || !empty.IsZero() {
		t.Errorf("UnmarshalText(blank) = %v, zero %v: want no command", err, empty.IsZero())
	}
}

func TestPattern(t *testing.T) {
	p := DefaultSettings().Power.StatusOnRegexp
	for out, want := range map[string]bool{"Chassis Power is on\n": true, "Chassis Power is off\n": false, "ON": true, "": false} {
		if got := p.MatchString(out); got != want {
			t.Errorf("default status_on_regexp on %q = %v, want %v", out, got, want)
		}
	}
	var bad Pattern
	if err := bad.UnmarshalText([]byte("(on")); err == nil || !strings.HasPrefix(err.Error(), "invalid regexp: ") {
		t.Errorf("UnmarshalText((on) = %v", err)
	}
	if (Pattern{}).MatchString("on") {
		t.Error("an empty pattern matched")
	}
}
