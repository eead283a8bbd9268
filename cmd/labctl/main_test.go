package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// run runs labctl with args as main does and returns its exit status and
// what it wrote.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	env, stdout, stderr := testEnv()
	err := newApp(env).RunContext(context.Background(), append([]string{"labctl"}, args...))
	return exitCode(env, err), stdout.String(), stderr.String()
}

func TestExitStatus(t *testing.T) {
	valid, _ := filepath.Abs("../../examples/jobs/smoke.toml")
	invalid := filepath.Join(writeFiles(t, map[string]string{"jobs/bad.toml": "device = 1\n"}), "jobs", "bad.toml")
	tests := []struct {
		name       string
		args       []string
		want       int
		wantStderr string
	}{
		{"valid file", []string{"validate", valid}, 0, ""},
		{"invalid file", []string{"validate", valid, invalid}, 1, "labctl: validate: 1 of 2 files have problems\n"},
		{"no file", []string{"validate"}, 64, "labctl: validate: no FILE given (see labctl validate --help)\n"},
		{"unknown flag", []string{"validate", "--nope", valid}, 64, "labctl: flag provided but not defined: -nope (see labctl validate --help)\n"},
		{"bad kind", []string{"validate", "--kind", "node", valid}, 64, `labctl: validate: --kind "node": use lab, device-type, device or job` + "\n"},
		{"unknown command", []string{"frobnicate"}, 64, `labctl: unknown command "frobnicate" (see labctl --help)` + "\n"},
		{"help", []string{"validate", "--help"}, 0, ""},
		{"no command", nil, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := run(t, tt.args...)
			if code != tt.want || stderr != tt.wantStderr {
				t.Errorf("labctl %q: exit %d, stderr %q; want %d, %q", tt.args, code, stderr, tt.want, tt.wantStderr)
			}
		})
	}
}

func TestValidateHelpHasExamples(t *testing.T) {
	_, stdout, _ := run(t, "validate", "--help")
	for _, want := range []string{"EXAMPLES:", "labctl validate examples/jobs/smoke.toml", "EXIT STATUS:", "--lab FILE"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("validate --help lacks %q:\n%s", want, stdout)
		}
	}
}

type outcomeError struct{ code int }

func (e outcomeError) Error() string { return fmt.Sprintf("job ended with %d", e.code) }
func (e outcomeError) ExitCode() int { return e.code }

func TestExitCode(t *testing.T) {
	tests := []struct {
		err        error
		want       int
		wantStderr string
	}{
		{nil, 0, ""},
		{errors.New("boom"), 1, "labctl: boom\n"},
		{usageErrorf("bad flag"), 64, "labctl: bad flag\n"},
		{fmt.Errorf("run: %w", outcomeError{3}), 3, "labctl: run: job ended with 3\n"},
		{fmt.Errorf("run: %w", context.Canceled), 130, "labctl: interrupted\n"},
	}
	for _, tt := range tests {
		env, _, stderr := testEnv()
		if got := exitCode(env, tt.err); got != tt.want || stderr.String() != tt.wantStderr {
			t.Errorf("exitCode(%v) = %d, printed %q; want %d, %q", tt.err, got, stderr, tt.want, tt.wantStderr)
		}
	}
}
