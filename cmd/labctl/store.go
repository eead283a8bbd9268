//go:build !labctl_run

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/store"
)

// openStore opens the lab's store: the PostgreSQL database of [store]
// url, or else the SQLite database in the state directory.
func openStore(ctx context.Context, cfg *devices.Lab) (store.Store, error) {
	if cfg.Store.URL == "" {
		return store.OpenSQLite(filepath.Join(cfg.StateDir, "labctl.db"))
	}
	return openPostgres(ctx, cfg.Store)
}

// openPostgres connects to the store's PostgreSQL database, with its
// password, and migrates it.
func openPostgres(ctx context.Context, cfg devices.Store) (*store.Postgres, error) {
	if err := devices.CheckStoreURL(cfg.URL); err != nil {
		return nil, fmt.Errorf("store URL: %w", err)
	}
	pw, err := cfg.Password()
	if err != nil {
		return nil, err
	}
	return store.OpenPostgres(ctx, cfg.URL, pw.Reveal())
}

type storeCopyOptions struct {
	from string
	to   devices.Store
}

func newStoreCommand(env *appEnv) *cli.Command {
	return &cli.Command{
		Name:  "store",
		Usage: "manage the daemon's database",
		Subcommands: []*cli.Command{{
			Name:      "copy",
			Usage:     "copy a single-host lab's SQLite database into a new PostgreSQL database",
			ArgsUsage: " ",
			Description: `Copies everything a lab's SQLite store (STATE/labctl.db) holds into a
PostgreSQL database, for a lab whose daemons on several hosts share one:
queued, running and finished jobs with their results and IDs, retries,
device states and maintenance, reservations and the audit trail. Then
set [store] url in the lab file and start labctl serve again; job
directories (logs, results, artifacts) stay in the state directory.

It refuses to run while a labctl serve uses the SQLite database (the
state directory's lock), and holds that lock while it copies, so that no
daemon starts meanwhile. It refuses a target database that holds any
labctl data: IDs are kept, so two labs' histories cannot mix; give it a
new database (createdb). The copy is one transaction: all or nothing.

The URL holds no password: give --password-file or --password-env (or
PostgreSQL's PGPASSWORD or ~/.pgpass).

EXAMPLES:
   labctl store copy --from /var/lib/labctl/labctl.db \
       --to 'postgres://labctl@db.example:5432/labctl?sslmode=verify-full' \
       --password-file /etc/labctl/pg.password`,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "from", Usage: "the SQLite database `FILE` (STATE/labctl.db)", TakesFile: true, Required: true},
				&cli.StringFlag{Name: "to", Usage: "the PostgreSQL database `URL`, postgres://user@host:port/database?sslmode=...", Required: true},
				&cli.StringFlag{Name: "password-file", Usage: "read the database password from the first line of `FILE`", TakesFile: true},
				&cli.StringFlag{Name: "password-env", Usage: "read the database password from the environment variable `NAME`"},
			},
			Action: func(c *cli.Context) error {
				args, err := commandArgs(c)
				if err != nil {
					return err
				}
				if len(args) > 0 {
					return usageErrorf("store copy: unexpected argument %q (see labctl store copy --help)", args[0])
				}
				if c.IsSet("password-file") && c.IsSet("password-env") {
					return usageErrorf("store copy: give --password-file or --password-env, not both")
				}
				if err := devices.CheckStoreURL(c.String("to")); err != nil {
					return usageErrorf("store copy: --to: %v", err)
				}
				return runStoreCopy(c.Context, storeCopyOptions{from: c.String("from"), to: devices.Store{
					URL: c.String("to"), PasswordFile: c.String("password-file"), PasswordEnv: c.String("password-env"),
				}}, env)
			},
		}},
	}
}

func runStoreCopy(ctx context.Context, opts storeCopyOptions, env *appEnv) error {
	if errServeUnsupported != nil {
		return errors.New("store copy: it locks the state directory as labctl serve does, which is not supported here")
	}
	fi, err := os.Stat(opts.from)
	if err != nil {
		return fmt.Errorf("store copy: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("store copy: %s is not a database file", opts.from)
	}
	unlock, err := lockStateDir(filepath.Dir(opts.from))
	if err != nil {
		return fmt.Errorf("store copy: %w: stop the daemon first", err)
	}
	defer unlock()
	dst, err := openPostgres(ctx, opts.to)
	if err != nil {
		return fmt.Errorf("store copy: %w", err)
	}
	defer dst.Close()
	src, err := store.OpenSQLite(opts.from)
	if err != nil {
		return fmt.Errorf("store copy: %w", err)
	}
	defer src.Close()
	counts, err := store.Copy(ctx, src, dst)
	if err != nil {
		return fmt.Errorf("store copy: %w", err)
	}
	for _, c := range counts {
		fmt.Fprintf(env.stdout, "%-13s %d\n", c.Table, c.Rows)
	}
	fmt.Fprintf(env.stderr, "labctl store copy: copied %s to %s: set [store] url = %q in the lab file\n", opts.from, opts.to.URL, opts.to.URL)
	return nil
}
