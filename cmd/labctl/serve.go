//go:build !labctl_run

package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/api"
	"github.com/labctl/labctl/daemon"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/internal/statedir"
	"github.com/labctl/labctl/lab"
	"github.com/labctl/labctl/store"
	"github.com/labctl/labctl/web"
)

type serveOptions struct {
	lab    string
	listen string // overrides [server] listen
	host   string // overrides [host] name
	pprof  string // Go's profiling endpoints listen here ("": none)
}

func newServeCommand(env *appEnv) *cli.Command {
	return &cli.Command{
		Name:      "serve",
		Usage:     "run the lab daemon: job queue, device workers, boot server and HTTP API",
		ArgsUsage: " ",
		Description: `Runs the lab in one process: the boot server (TFTP + HTTP) of
[boot_server], the HTTP JSON API on [server] listen (bearer tokens from
[[server.tokens]]), and the daemon: a queue of jobs (high, normal, low
priority, then first come first served), one worker per device, device
states (idle, running, checking, offline, maintenance) and health checks
(at start-up, after every incomplete job, on demand).

State lives in the lab's state_dir: labctl.db (SQLite: jobs, device
states; or a PostgreSQL database: [store] url, below), jobs/ID/
(job.log, results.json, junit.xml, artifacts), devices/NAME/health.log,
cache/. One daemon per state_dir (a lock file says so). It is for the daemon's user and group only (directories 0750,
files 0640; looser modes are tightened at start, and logged). The daemon
does not start unless it can write to the database and to state_dir.
If the store stops taking writes (a full disk), jobs that end keep their
outcome in memory (the API shows them finished) and are recorded once
the store writes again; meanwhile submits get 503 with the reason.

Retention: finished jobs (database rows and job directories) are kept
for ever unless the lab file says otherwise; the daemon removes them,
oldest first, at start and hourly; never a queued or running job:
  [retention]
  max_age = "720h"     # finished longer ago than this
  max_jobs = 10000     # beyond the newest 10000 finished jobs

If the daemon dies mid-job, the next start ends that job incomplete
("daemon restarted"), powers its node off, sets its PXE entry to local
and health-checks the device; queued jobs survive.
SIGINT/SIGTERM stop it: running jobs are stopped and their nodes
finalized (they end incomplete), queued jobs stay queued.

A lab that heals itself (lab file settings):
  [health] interval = "6h"   check idle and offline devices again after
                             they were so for 6h (absent or "0s": never);
                             an offline device that passes takes jobs
  [health] failures = 1      checks in a row a device in service may fail
                             before it goes offline (default 1: at once)
  [jobs] retries = 1         a job that ends incomplete (the lab went
                             wrong: not a failed test, not a cancel or a
                             timeout; also a stop or crash of the daemon)
                             runs again as a new job linked to it, on
                             another device when one fits (default 1;
                             a job file's retries = N overrides it)
  [jobs] queue_timeout = "12h"  a job nobody took by then ends canceled
                             (default: it waits; a job file's
                             queue_timeout overrides it)
Reservations (labctl reserve NODE --for 2h) hold a device for a person:
no one else's jobs run on it until it expires or is released; they
survive restarts.

A PostgreSQL store instead of labctl.db (labctl store copy moves one):
  [store]
  url = "postgres://labctl@db:5432/labctl?sslmode=verify-full"
  password_file = "pg.password"   # or password_env; never in the URL
The daemon does not start if it cannot reach it, or if a newer labctl
has migrated it. Several hosts, one per rack, may share that database:
each owns the devices of its own lab file, the queue is the lab's, and
any host answers for the whole lab (see the README; [host] name or
--host names this one, [host] token_file the lab-internal credential
the hosts forward to each other with, [host] ca_file the CA of the
hosts' https:// API certificates (default: the system's roots), [host]
lease how long a silent host stays up: after it, its running jobs end
incomplete).

Tokens and roles: each [[server.tokens]] has a name (the submitter of its
jobs, the viewer on a console), a token_file or token_env, and a role:
  viewer     reads jobs, logs and devices; watches consoles read-only
  submitter  also submits jobs and cancels its own
  operator   also powers nodes, sets boot devices, maintenance, health
             checks, types on consoles, cancels any job
  admin      everything
A request beyond the token's role gets 403 naming the role it needs.

Web UI: the same listener serves a browser UI at / (lab, jobs, job logs
live, consoles, devices): log in with a token once; the browser keeps a
session cookie, and each role sees and may do what it may over the API.

Metrics: GET /metrics on the API listener serves Prometheus metrics to
any token (viewer is enough; examples/monitoring has a scrape config,
alert rules and a Grafana dashboard). Webhooks: [[webhooks]] url,
secret_file or secret_env, events = ["job.end", "device.state"] get
signed JSON events; jobs' notify URLs get their end, signed with the
[notify] secret (see the README).

TLS: [server] tls_cert and tls_key (PEM) serve the API over HTTPS; or
tls = "self-signed" makes a certificate in STATE/tls on first start and
prints its fingerprint, which clients pin (--pin, LABCTL_PIN). Listening
beyond loopback without TLS starts with a warning: tokens would cross
the network in clear text.

EXAMPLES:
   labctl serve --lab /etc/labctl/lab.toml
   labctl serve --lab build/simlab/lab/lab.toml --listen 127.0.0.1:0

EXIT STATUS:
   0 stopped by a signal, 1 could not start or a part failed,
   64 the command line is wrong.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "lab", Usage: "the lab `FILE`", EnvVars: []string{"LABCTL_LAB"}, TakesFile: true, Required: true},
			&cli.StringFlag{Name: "listen", Usage: "API listen `ADDRESS` host:port (default: the lab's [server] listen)"},
			&cli.StringFlag{Name: "host", Usage: "this host's `NAME` in a lab of several hosts (default: [host] name, else the machine's name)"},
			&cli.StringFlag{Name: "pprof", Usage: "serve Go's profiling endpoints (/debug/pprof/) on this loopback `ADDRESS` host:port, without a token, for profiling the daemon"},
		},
		Action: func(c *cli.Context) error {
			args, err := commandArgs(c)
			if err != nil {
				return err
			}
			if len(args) > 0 {
				return usageErrorf("serve: unexpected argument %q (see labctl serve --help)", args[0])
			}
			return runServe(c.Context, serveOptions{lab: c.String("lab"), listen: c.String("listen"), host: c.String("host"), pprof: c.String("pprof")}, env)
		},
	}
}

func runServe(ctx context.Context, opts serveOptions, env *appEnv) error {
	if errServeUnsupported != nil {
		return errServeUnsupported
	}
	cfg, err := devices.Load(opts.lab)
	if err != nil {
		return err
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(env.stderr, "labctl: %s\n", w)
	}
	log := newLogger(env, slog.LevelInfo) // the daemon's log
	tokens, err := apiTokens(cfg)
	if err != nil {
		return err
	}
	host, hostToken, err := hostConfig(cfg, opts)
	if err != nil {
		return err
	}
	if hostToken != "" {
		tokens = append(tokens, api.Token{Name: devices.HostTokenName, Secret: hostToken, Role: labctl.RoleAdmin, Host: true})
	}
	// A shared database is opened first, so that a wrong URL or an
	// unreachable server stops the daemon before it writes anything; the
	// SQLite file is opened under the state directory's lock.
	var st store.Store
	if cfg.Store.URL != "" {
		if st, err = openStore(ctx, cfg); err != nil {
			return err
		}
		defer st.Close()
	}
	unlock, err := lockStateDir(cfg.StateDir)
	if err != nil {
		return err
	}
	defer unlock()
	if st == nil {
		if st, err = openStore(ctx, cfg); err != nil {
			return err
		}
		defer st.Close()
	}

	boot, err := newBootServer(cfg, log)
	if err != nil {
		return err
	}
	l := lab.New(cfg, boot, log)
	defer l.Close()
	obs, err := newObservers(cfg, boot, l, log)
	if err != nil {
		boot.Close()
		return err
	}
	defer obs.webhooks.Close()
	if err := l.RegisterAll(); err != nil {
		boot.Close()
		return err
	}
	listen := cmp.Or(opts.listen, cfg.Server.Listen)
	tlsConfig, fingerprint, err := serverTLS(cfg, listen)
	if err != nil {
		boot.Close()
		return err
	}
	ui := web.New(web.Config{Tokens: tokens, TLS: tlsConfig != nil, Log: log})
	d, err := daemon.New(ctx, daemon.Config{Lab: cfg, Nodes: l, Store: st, Log: log, Observers: append(obs.list(), ui.Hub()), Host: host})
	if err != nil {
		boot.Close()
		return err
	}
	obs.daemon = d
	ui.Hub().SetLab(d)
	srv, err := api.NewServer(d, api.Config{Addr: listen, Tokens: tokens, Log: log, TLS: tlsConfig, Metrics: obs.metrics.Handler(),
		Browser: ui, Routes: ui.Routes()})
	if err != nil {
		boot.Close()
		return err
	}
	addr, scheme := srv.Addr().String(), "http"
	if tlsConfig != nil {
		scheme = "https"
	}
	if host != nil && cfg.Host.APIURL == "" {
		d.SetHostAPI(scheme + "://" + reachableAddr(srv.Addr()))
	}
	fmt.Fprintf(env.stderr, "labctl serve: lab %s, %d devices, API %s://%s, boot server tftp %s http %s, state %s\n",
		cfg.Name, len(cfg.Devices), scheme, addr, boot.TFTPAddr(), boot.HTTPAddr(), cfg.StateDir)
	if host != nil {
		fmt.Fprintf(env.stderr, "labctl serve: host %s of lab %s (store %s, lease %s)\n", host.Name, cfg.Name, redactedURL(cfg.Store.URL), cfg.Host.Lease)
	}
	fmt.Fprintf(env.stderr, "labctl serve: web UI %s://%s/ (log in with an API token)\n", scheme, addr)
	switch {
	case tlsConfig != nil:
		fmt.Fprintf(env.stderr, "labctl serve: TLS certificate %s (clients: --pin %s, or --ca-file with the certificate)\n", fingerprint, fingerprint)
	case !loopback(srv.Addr()):
		fmt.Fprintf(env.stderr, "labctl serve: WARNING: the API listens on %s without TLS: tokens and consoles cross the network in clear text. "+
			"Set [server] tls = %q, or tls_cert and tls_key, in %s\n", addr, devices.SelfSignedTLS, cfg.File)
		log.Warn("the API listens beyond loopback without TLS", "addr", addr)
	}

	g, gctx := errgroup.WithContext(ctx)
	if opts.pprof != "" {
		pl, err := listenPprof(opts.pprof)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.stderr, "labctl serve: profiling endpoints http://%s/debug/pprof/\n", pl.Addr())
		g.Go(func() error { return servePprof(gctx, pl) })
	}
	g.Go(func() error { return boot.Serve(gctx) })
	g.Go(func() error { return srv.Serve(gctx) })
	g.Go(func() error { return d.Serve(gctx) })
	err = g.Wait()
	if err == nil || errors.Is(err, context.Canceled) {
		fmt.Fprintln(env.stderr, "labctl serve: stopped")
		return nil
	}
	return err
}

// serverTLS is the API's TLS config as the lab's [server] table says, and
// its certificate's fingerprint; nil without TLS.
func serverTLS(cfg *devices.Lab, listen string) (*tls.Config, string, error) {
	switch {
	case cfg.Server.TLSCert != "":
		return api.LoadServerTLS(cfg.Server.TLSCert, cfg.Server.TLSKey)
	case cfg.Server.TLS == devices.SelfSignedTLS:
		hosts := []string{"localhost", "127.0.0.1", "::1"}
		if h, _, err := net.SplitHostPort(listen); err == nil && h != "" {
			hosts = append(hosts, h)
		}
		if name, err := os.Hostname(); err == nil {
			hosts = append(hosts, name)
		}
		return api.SelfSignedTLS(filepath.Join(cfg.StateDir, "tls"), hosts)
	}
	return nil, "", nil
}

// loopback reports whether addr is a loopback address (only this host can
// reach it).
func loopback(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

// apiTokens reads the lab's API tokens.
func apiTokens(cfg *devices.Lab) ([]api.Token, error) {
	if len(cfg.Server.Tokens) == 0 {
		return nil, fmt.Errorf("lab %s: no [[server.tokens]]: the API needs at least one token", cfg.File)
	}
	var out []api.Token
	for _, t := range cfg.Server.Tokens {
		s, err := t.Secret()
		if err != nil {
			return nil, err
		}
		out = append(out, api.Token{Name: t.Name, Secret: s.Reveal(), Role: t.Role})
	}
	return out, nil
}

// lockStateDir makes sure one daemon uses the state directory: a second
// one would end the first one's running jobs as crashed. The lock goes
// with the process, also on kill -9.
func lockStateDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, statedir.DirMode); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	path := filepath.Join(dir, "labctl.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, statedir.FileMode)
	if err != nil {
		return nil, fmt.Errorf("state directory lock: %w", err)
	}
	if err := tryLock(f, true); err != nil {
		b, _ := io.ReadAll(f)
		f.Close()
		holder := strings.TrimSpace(string(b))
		if holder == "" {
			holder = "another process"
		} else {
			holder = "pid " + holder
		}
		return nil, fmt.Errorf("state directory %s is in use by %s (another labctl serve?)", dir, holder)
	}
	f.Truncate(0)
	f.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	return func() {
		f.Truncate(0)
		f.Close()
	}, nil
}
