package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/urfave/cli/v2"
)

// tokenRecorder is a daemon that answers every request with an empty list
// and remembers the token it got.
type tokenRecorder struct {
	mu     sync.Mutex
	tokens []string
}

func (r *tokenRecorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.tokens = append(r.tokens, strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer "))
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte("[]"))
}

func (r *tokenRecorder) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tokens[len(r.tokens)-1]
}

// The server and token come from the flags, else the environment, else
// the client config file (token_file relative to it, ~ for home).
func TestClientConfig(t *testing.T) {
	t.Parallel()
	fromConfig, fromEnv := &tokenRecorder{}, &tokenRecorder{}
	cfgServer := httptest.NewServer(fromConfig)
	defer cfgServer.Close()
	envServer := httptest.NewServer(fromEnv)
	defer envServer.Close()

	home := t.TempDir()
	cfgDir := filepath.Join(home, ".config", "labctl")
	os.MkdirAll(cfgDir, 0o755)
	os.WriteFile(filepath.Join(cfgDir, "config.toml"), []byte("server = \""+cfgServer.URL+"\"\ntoken_file = \"ci.token\"\n"), 0o644)
	os.WriteFile(filepath.Join(cfgDir, "ci.token"), []byte("token-from-config\n"), 0o600)
	os.WriteFile(filepath.Join(home, "flag.token"), []byte("token-from-flag\n"), 0o600)

	tests := []struct {
		name       string
		vars       map[string]string
		args       []string
		server     *tokenRecorder
		wantToken  string
		wantStderr string
	}{
		{"config file", map[string]string{"HOME": home}, nil, fromConfig, "token-from-config", ""},
		{"environment", map[string]string{"HOME": home, "LABCTL_SERVER": envServer.URL, "LABCTL_TOKEN": "token-from-env"}, nil, fromEnv, "token-from-env", ""},
		{"flags", map[string]string{"HOME": home, "LABCTL_TOKEN": "token-from-env"}, []string{"--server", envServer.URL, "--token-file", filepath.Join(home, "flag.token")}, fromEnv, "token-from-flag", ""},
		{"no token", map[string]string{"HOME": t.TempDir()}, nil, nil, "", "no API token"},
		{"missing token file", map[string]string{"HOME": home}, []string{"--token-file", "/nonexistent"}, nil, "", "--token-file"},
	}
	for _, tt := range tests {
		code, _, stderr := runLabctl(t, tt.vars, append([]string{"jobs"}, tt.args...)...)
		if tt.server == nil {
			if code != 1 || !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("%s: exit %d %q, want 1 with %q", tt.name, code, stderr, tt.wantStderr)
			}
			continue
		}
		if code != 0 || tt.server.last() != tt.wantToken {
			t.Errorf("%s: exit %d %q, token %q; want %q", tt.name, code, stderr, tt.server.last(), tt.wantToken)
		}
	}

	bad := filepath.Join(t.TempDir(), "config.toml")
	os.WriteFile(bad, []byte("server = \"x\"\ntoken = \"inline\"\n"), 0o644)
	if code, _, stderr := runLabctl(t, map[string]string{"LABCTL_CONFIG": bad}, "jobs"); code != 1 || !strings.Contains(stderr, "config.toml:2: token") {
		t.Errorf("a config with an unknown key: exit %d %q", code, stderr)
	}
}

// Flags after the arguments count as flags.
func TestCommandArgs(t *testing.T) {
	var got []string
	var force bool
	var out string
	env, _, _ := envWith(nil)
	app := newApp(env)
	cmd := newPowerCommand(env)
	cmd.Action = func(c *cli.Context) error {
		args, err := commandArgs(c)
		got, force, out = args, c.Bool("force"), c.String("server")
		return err
	}
	app.Commands = append(app.Commands[:0:0], cmd)
	appMu.Lock()
	defer appMu.Unlock()
	if err := app.RunContext(context.Background(), []string{"labctl", "power", "node1", "--force", "cycle", "--server=http://x", "--", "--literal"}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, " ") != "node1 cycle --literal" || !force || out != "http://x" {
		t.Errorf("args %q force %v server %q", got, force, out)
	}
}

// Every command's help has examples and the exit statuses.
func TestHelpHasExamples(t *testing.T) {
	env, _, _ := envWith(nil)
	for _, cmd := range commands(env) {
		if cmd.Subcommands != nil {
			continue
		}
		if !strings.Contains(cmd.Description, "EXAMPLES:\n   labctl "+cmd.Name) || !strings.Contains(cmd.Description, "EXIT STATUS:") {
			t.Errorf("labctl %s --help lacks EXAMPLES (starting with labctl %s) or EXIT STATUS", cmd.Name, cmd.Name)
		}
	}
}

// Completion: the scripts, and node names and actions for power.
func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		if code, out, _ := runLabctl(t, nil, "completion", shell); code != 0 || !strings.Contains(out, "labctl") {
			t.Errorf("completion %s: exit %d\n%s", shell, code, out)
		}
	}
	if code, _, _ := runLabctl(t, nil, "completion", "tcsh"); code != 64 {
		t.Errorf("completion tcsh: exit %d, want 64", code)
	}
	lab, _ := commandLab(t)
	if _, out, _ := runLabctl(t, nil, "power", "--lab", lab, "--generate-bash-completion"); out != "n1\n" {
		t.Errorf("power NODE completion: %q, want n1", out)
	}
	if _, out, _ := runLabctl(t, nil, "power", "--lab", lab, "n1", "--generate-bash-completion"); !strings.Contains(out, "cycle\n") {
		t.Errorf("power n1 OP completion: %q", out)
	}
}
