//go:build !labctl_run

package main

// How labctl's client commands (submit, jobs, job, logs, cancel, devices,
// device, power, bootdev) find the daemon: the server URL and the API
// token come from flags, then the environment (LABCTL_SERVER,
// LABCTL_TOKEN), then the client config file:
//
//	# ~/.config/labctl/config.toml ($XDG_CONFIG_HOME/labctl, or $LABCTL_CONFIG)
//	server = "https://lab1.example.com:8470"
//	token_file = "ci.token"          # relative to this file; ~ is the home directory
//	ca_file = "lab-ca.pem"           # an https daemon's CA (or its certificate), or:
//	pin = "sha256:..."               # the certificate labctl serve printed
//
// The token is never a command-line argument (it would show in ps): use
// --token-file, LABCTL_TOKEN or the config file.

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/labctl/labctl/api"
	"github.com/labctl/labctl/internal/tomlfile"
)

// defaultServer is where the daemon listens unless the lab says otherwise.
const defaultServer = "http://127.0.0.1:8470"

// clientOptions are the flags of every command that talks to the daemon.
type clientOptions struct {
	server    string
	tokenFile string
	caFile    string
	pin       string
}

func clientFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "server", Usage: "the daemon's `URL` (default: $LABCTL_SERVER, the client config, else " + defaultServer + ")"},
		&cli.StringFlag{Name: "token-file", Usage: "read the API token from `FILE` (default: $LABCTL_TOKEN, the client config)", TakesFile: true},
		&cli.StringFlag{Name: "ca-file", Usage: "trust an https daemon whose certificate this PEM `FILE` (a CA or the certificate) vouches for (default: $LABCTL_CA, the client config)", TakesFile: true},
		&cli.StringFlag{Name: "pin", Usage: "trust only the https daemon whose certificate has this `FINGERPRINT` (sha256:..., as labctl serve prints it; default: $LABCTL_PIN, the client config)"},
	}
}

func clientOptionsFrom(c *cli.Context) clientOptions {
	return clientOptions{server: c.String("server"), tokenFile: c.String("token-file"), caFile: c.String("ca-file"), pin: c.String("pin")}
}

// clientConfig is the client config file.
type clientConfig struct {
	Server    string `toml:"server"`
	TokenFile string `toml:"token_file"`
	CAFile    string `toml:"ca_file"`
	Pin       string `toml:"pin"`
}

// clientConfigPath is where the client config file is: $LABCTL_CONFIG,
// else $XDG_CONFIG_HOME/labctl/config.toml, else
// ~/.config/labctl/config.toml.
func clientConfigPath(env *appEnv) string {
	if p := env.getenv("LABCTL_CONFIG"); p != "" {
		return p
	}
	if dir := env.getenv("XDG_CONFIG_HOME"); dir != "" {
		return filepath.Join(dir, "labctl", "config.toml")
	}
	if home := env.getenv("HOME"); home != "" {
		return filepath.Join(home, ".config", "labctl", "config.toml")
	}
	return ""
}

// loadClientConfig reads the client config file; a missing file is an
// empty config.
func loadClientConfig(env *appEnv) (clientConfig, error) {
	var cfg clientConfig
	path := clientConfigPath(env)
	if path == "" {
		return cfg, nil
	}
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return cfg, nil
	}
	if err != nil {
		return cfg, fmt.Errorf("client config: %w", err)
	}
	doc, err := tomlfile.Decode(path, data, &cfg)
	if err != nil {
		return cfg, err
	}
	if err := doc.Err(); err != nil {
		return cfg, err
	}
	for _, p := range []*string{&cfg.TokenFile, &cfg.CAFile} {
		if *p != "" {
			*p = expandHome(env, *p)
			if !filepath.IsAbs(*p) {
				*p = filepath.Join(filepath.Dir(path), *p)
			}
		}
	}
	return cfg, nil
}

func expandHome(env *appEnv, p string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		return filepath.Join(env.getenv("HOME"), rest)
	}
	return p
}

// connect makes the API client from the flags, the environment and the
// client config, in that order.
func connect(opts clientOptions, env *appEnv) (*api.Client, error) {
	cfg, err := loadClientConfig(env)
	if err != nil {
		return nil, err
	}
	server := cmp.Or(opts.server, env.getenv("LABCTL_SERVER"), cfg.Server, defaultServer)
	var token string
	switch {
	case opts.tokenFile != "":
		token, err = readToken(opts.tokenFile, "--token-file")
	case env.getenv("LABCTL_TOKEN") != "":
		token = strings.TrimSpace(env.getenv("LABCTL_TOKEN"))
	case cfg.TokenFile != "":
		token, err = readToken(cfg.TokenFile, "token_file in "+clientConfigPath(env))
	default:
		err = fmt.Errorf("no API token: set LABCTL_TOKEN, --token-file, or token_file in %s (a token of the lab's [[server.tokens]])", clientConfigPath(env))
	}
	if err != nil {
		return nil, err
	}
	caFile, pin := cmp.Or(opts.caFile, env.getenv("LABCTL_CA"), cfg.CAFile), cmp.Or(opts.pin, env.getenv("LABCTL_PIN"), cfg.Pin)
	tlsConfig, err := api.ClientTLS(caFile, pin)
	if err != nil {
		return nil, err
	}
	c, err := api.NewClient(server, token, tlsConfig)
	if err != nil {
		return nil, err
	}
	switch {
	case caFile != "" && pin == "":
		c.Trust = "the CA file " + caFile
	case pin == "":
		c.Trust = "the system's roots: give the daemon's CA with --ca-file, or its fingerprint with --pin"
	}
	return c, nil
}

func readToken(path, what string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	if line = strings.TrimSpace(line); line == "" {
		return "", fmt.Errorf("%s: %s is empty", what, path)
	}
	return line, nil
}

// Output formats of listings.
const (
	outputText = "text"
	outputJSON = "json"
)

func outputFlag() cli.Flag {
	return &cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: outputText, Usage: "output `FORMAT`: text or json"}
}

// listArgs checks the command line of a command that lists (no
// arguments: hint says what to use instead) and returns its -o format.
func listArgs(c *cli.Context, hint string) (string, error) {
	args, err := commandArgs(c)
	if err != nil {
		return "", err
	}
	if len(args) > 0 {
		return "", usageErrorf("%s: unexpected argument %q (%s)", c.Command.Name, args[0], hint)
	}
	return outputFormat(c)
}

// outputFormat checks the -o flag of a command.
func outputFormat(c *cli.Context) (string, error) {
	switch f := c.String("output"); f {
	case outputText, outputJSON:
		return f, nil
	default:
		return "", usageErrorf("%s: -o %q: use text or json", c.Command.Name, f)
	}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns; Flush when done.
func table(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

// when formats a time for a table: the time of day if it is today, else
// the date and time; "-" if zero.
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	t = t.Local()
	if y, m, d := t.Date(); y == time.Now().Year() && m == time.Now().Month() && d == time.Now().Day() {
		return t.Format("15:04:05")
	}
	return t.Format("2006-01-02 15:04")
}

// since formats the time from t to end (or now) for a table.
func since(t time.Time, end *time.Time) string {
	if t.IsZero() {
		return "-"
	}
	e := time.Now()
	if end != nil {
		e = *end
	}
	d := e.Sub(t)
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// shorten cuts s to n characters for a table cell.
func shorten(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// commandArgs returns a command's arguments, taking the flags written
// after them ("labctl power node1 cycle --force") as flags: urfave/cli v2
// stops at the first argument. Read the flags after calling it. "--" ends
// the flags.
func commandArgs(c *cli.Context) ([]string, error) {
	var args []string
	in := c.Args().Slice()
	for i := 0; i < len(in); i++ {
		a := in[i]
		if a == "--" {
			return append(args, in[i+1:]...), nil
		}
		if len(a) < 2 || a[0] != '-' {
			args = append(args, a)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f := lookupFlag(c.Command.Flags, name)
		if f == nil {
			return nil, usageErrorf("%s: flag provided but not defined: %s (see labctl %s --help)", c.Command.Name, a, c.Command.Name)
		}
		if _, isBool := f.(*cli.BoolFlag); isBool && !hasValue {
			value, hasValue = "true", true
		}
		if !hasValue {
			if i+1 >= len(in) {
				return nil, usageErrorf("%s: flag needs an argument: %s", c.Command.Name, a)
			}
			i++
			value = in[i]
		}
		for _, n := range f.Names() { // each alias has its own value
			if err := c.Set(n, value); err != nil {
				return nil, usageErrorf("%s: %s: %v", c.Command.Name, a, err)
			}
		}
	}
	return args, nil
}

func lookupFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}
