package store

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// Postgres is the store in a PostgreSQL database, which several daemon
// hosts may share.
//
// It goes through database/sql with pgx's driver (stdlib), as SQLite
// does with its own, so that both run the very same queries and scanning
// code (sqlDB); pgx's own API would have meant a second copy of each.
// Only claims reach pgx itself, to pipeline a burst of them (claimLoop).
//
// Writes run in transactions of their own (PostgreSQL takes concurrent
// writers); a write of one statement runs without BEGIN and COMMIT, in
// one round trip. The jobs submitted at once, and their audit entries,
// are inserted together, one statement per table (insertLoop), as
// SQLite's writer commits them in one transaction: a burst of submits
// costs two round trips, not four per job. The claims that arrive at
// once are sent together and committed together (claimLoop): a burst of
// job starts costs a few round trips, not one per job. A move of a job is still one guarded
// UPDATE ("... WHERE id = $1 AND state = 'queued'"): at READ COMMITTED,
// a second process claiming the same job waits for the first one's row
// lock, then finds the job no longer queued and changes nothing, so a
// job is claimed once however many processes race for it.
//
// Changes of the queue are announced on queueChannel by a NOTIFY of its
// own, sent after the change committed (notifyLoop), not inside the
// change's transaction: PostgreSQL serialises the commits of every
// transaction that notifies (one lock for the whole cluster), so a burst
// of submits would commit one at a time. A burst of changes sends one
// NOTIFY; one lost with a crash between commit and NOTIFY is made up by
// the hosts' poll. A NOTIFY that announces new submits only names their
// jobs (its payload: their IDs), so that a host hearing it reads those
// rows and not the whole queue; any other change has an empty payload.
//
// The schema version is a one-row table, schema_version; migrations run
// under an advisory lock, so that hosts starting together migrate once.
type Postgres struct {
	sqlDB
	where string // the URL without password, for messages
	cfg   *pgx.ConnConfig

	notify    chan struct{} // a change of the queue waits to be announced
	newsMu    sync.Mutex
	news      QueueNews     // what the next announcement says
	inserts   chan *insert  // rows waiting for insertLoop
	inserted  chan struct{} // closed when insertLoop has returned
	claims    chan *pgClaim // claims waiting for claimLoop
	claimed   chan struct{} // closed when claimLoop has returned
	stop      chan struct{} // closed by Close
	stopped   chan struct{} // closed when notifyLoop has returned
	closeOnce sync.Once
}

// queueChannel is the NOTIFY channel of changes of the queue.
const queueChannel = "labctl_queue"

// writeTimeout bounds one write transaction, which runs to its end even
// when the caller stops waiting (as with SQLite's writer).
const writeTimeout = time.Minute

// migrationLock is the advisory lock key migrations hold ("labctl").
const migrationLock = 0x6c6162637463

// OpenPostgres connects to the database at rawURL
// (postgres://user@host:port/db?sslmode=...), with password unless it
// is empty (then pgx's own: PGPASSWORD, ~/.pgpass), and brings the
// schema to SchemaVersion. The URL must not hold a password: it shows in
// messages and process listings.
func OpenPostgres(ctx context.Context, rawURL, password string) (*Postgres, error) {
	where, err := checkPostgresURL(rawURL)
	if err != nil {
		return nil, err
	}
	cfg, err := pgx.ParseConfig(rawURL)
	if err != nil {
		return nil, fmt.Errorf("store %s: %v", where, redact(err, password))
	}
	if password != "" {
		cfg.Password = password
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	db := stdlib.OpenDB(*cfg)
	// The pool keeps the connections it opened, up to poolIdle: a burst
	// of submits or claims after a quiet hour does not wait for
	// PostgreSQL to start a backend for each (tens of milliseconds each
	// on a busy server).
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(poolIdle)
	p := &Postgres{sqlDB: sqlDB{db: db, lockRow: " FOR UPDATE SKIP LOCKED"}, where: where, cfg: cfg,
		notify: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{}),
		inserts: make(chan *insert), inserted: make(chan struct{}),
		claims: make(chan *pgClaim), claimed: make(chan struct{})}
	p.sqlDB.write = p.write
	p.sqlDB.statement = p.statement
	p.sqlDB.insert = p.insertBatched
	p.sqlDB.claimer = p.claimBatched
	p.sqlDB.queueChanged = p.queueChanged
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store %s: cannot connect to PostgreSQL at %s: %v", where, hostPort(cfg), redact(err, password))
	}
	if err := p.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store %s: %w", where, err)
	}
	go p.notifyLoop()
	go p.insertLoop()
	go p.claimLoop()
	go p.warm(poolIdle)
	return p, nil
}

// poolIdle is how many connections the pool keeps open when idle.
const poolIdle = 8

// warm opens n connections of the pool and leaves them idle, so that the
// first burst of work finds them open; it gives up at the first error
// (the pool connects again when it needs to).
func (p *Postgres) warm(n int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		select {
		case <-p.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	var conns []*sql.Conn
	for range n {
		c, err := p.db.Conn(ctx)
		if err != nil {
			break
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.Close()
	}
}

// insert is a row waiting for insertLoop: its INSERT, its values, and
// where what it gives back or its error goes.
type insert struct {
	into rowInsert
	vals []any
	done chan insertResult
}

type insertResult struct {
	inserted
	err error
}

// insertBatched inserts a row through insertLoop and returns its id and
// back once it is committed. The insert happens even if ctx ends first.
func (p *Postgres) insertBatched(ctx context.Context, into rowInsert, vals []any) (inserted, error) {
	in := &insert{into: into, vals: vals, done: make(chan insertResult, 1)}
	r, err := handOver(ctx, p.inserts, p.stop, in, in.done)
	if err != nil {
		return inserted{}, err
	}
	return r.inserted, r.err
}

// insertLoop inserts the rows waiting at each moment, one statement per
// table, until Close: while one batch is on its way, the next gathers.
func (p *Postgres) insertLoop() {
	defer close(p.inserted)
	for {
		batch, ok := gather(p.inserts, p.stop)
		if !ok {
			return
		}
		for len(batch) > 0 {
			// The rows of the first one's INSERT, in their order.
			var rows, rest []*insert
			for _, in := range batch {
				if in.into == batch[0].into {
					rows = append(rows, in)
				} else {
					rest = append(rest, in)
				}
			}
			p.insertBatch(rows)
			batch = rest
		}
	}
}

// insertBatch inserts rows of one table and tells each its ID or error.
func (p *Postgres) insertBatch(rows []*insert) {
	got, err := p.insertRows(rows)
	if err != nil && len(rows) > 1 {
		// One row the database refuses must not fail the others: each
		// alone.
		for _, in := range rows {
			got, err := p.insertRows([]*insert{in})
			r := insertResult{err: err}
			if err == nil {
				r.inserted = got[0]
			}
			in.done <- r
		}
		return
	}
	for i, in := range rows {
		r := insertResult{err: err}
		if err == nil {
			r.inserted = got[i]
		}
		in.done <- r
	}
}

// pgClaim is a claim waiting for claimLoop, and where the job it took
// (0: none) or its error goes.
type pgClaim struct {
	claim
	done chan claimResult
}

type claimResult struct {
	id  int64
	err error
}

// claimBatched runs a claim through claimLoop. The claim happens even if
// ctx ends first, once claimLoop has taken it.
func (p *Postgres) claimBatched(ctx context.Context, c claim) (int64, error) {
	pc := &pgClaim{claim: c, done: make(chan claimResult, 1)}
	r, err := handOver(ctx, p.claims, p.stop, pc, pc.done)
	if err != nil {
		return 0, err
	}
	return r.id, r.err
}

// claimLoop runs the claims waiting at each moment, until Close: while
// one batch is on its way, the next gathers.
func (p *Postgres) claimLoop() {
	defer close(p.claimed)
	for {
		batch, ok := gather(p.claims, p.stop)
		if !ok {
			return
		}
		p.claimBatch(batch)
	}
}

// claimBatch sends the claims' statements (claimSQL) in one round trip,
// one transaction (pipelined: PostgreSQL runs them in order, each seeing
// what the earlier took), and tells each claim the job it took or the
// batch's error. A burst of job starts on a host costs a few commits,
// not one per job.
func (p *Postgres) claimBatch(batch []*pgClaim) {
	got := make([]int64, len(batch))
	err := detached(context.Background(), func(ctx context.Context) error {
		conn, err := p.db.Conn(ctx)
		if err != nil {
			return err
		}
		defer conn.Close()
		return conn.Raw(func(dc any) error {
			var b pgx.Batch
			for _, pc := range batch {
				q, args := p.claimSQL(pc.claim)
				b.Queue(q, args...)
			}
			br := dc.(*stdlib.Conn).Conn().SendBatch(ctx, &b)
			for i := range batch {
				got[i] = 0
				if err := br.QueryRow().Scan(&got[i]); err != nil && !errors.Is(err, pgx.ErrNoRows) {
					br.Close()
					return err
				}
			}
			return br.Close()
		})
	})
	for i, pc := range batch {
		r := claimResult{err: err}
		if err == nil {
			r.id = got[i]
		}
		pc.done <- r
	}
}

// insertRows inserts batch (rows of one rowInsert) in one INSERT, a
// transaction of its own, and returns what each row gives back, in the
// batch's order. The rows of one INSERT take their IDs from the sequence
// in the order of its VALUES, so the IDs, sorted, are the rows' in order.
func (p *Postgres) insertRows(batch []*insert) ([]inserted, error) {
	args := make([]any, 0, len(batch[0].vals)*len(batch))
	for _, in := range batch {
		args = append(args, in.vals...)
	}
	q := batch[0].into.sql(len(batch))
	var got []inserted
	err := detached(context.Background(), func(ctx context.Context) error {
		var err error
		got, err = queryAll(ctx, p.db, func(row scanner) (inserted, error) {
			var r inserted
			err := row.Scan(&r.id, &r.back)
			return r, err
		}, q, args...)
		return err
	})
	if err == nil && len(got) != len(batch) {
		err = fmt.Errorf("inserted %d rows, the database returned %d IDs", len(batch), len(got))
	}
	if err != nil {
		return nil, err
	}
	slices.SortFunc(got, func(a, b inserted) int { return cmp.Compare(a.id, b.id) })
	return got, nil
}

// QueueNews is a change of the lab's queue as the hosts announce it to
// one another (WatchQueue): the jobs submitted (queued as first
// attempts), or Whole: any other change, or more submits than are kept by
// ID; the queue is then read whole.
type QueueNews struct {
	Submitted []int64
	Whole     bool
}

// Add records more news in n, naming at most max jobs (more: Whole).
func (n *QueueNews) Add(more QueueNews, max int) {
	switch {
	case n.Whole:
	case more.Whole || len(n.Submitted)+len(more.Submitted) > max:
		n.Submitted, n.Whole = nil, true
	default:
		n.Submitted = append(n.Submitted, more.Submitted...)
	}
}

// Empty reports whether n says nothing changed.
func (n QueueNews) Empty() bool { return !n.Whole && len(n.Submitted) == 0 }

// maxAnnounced is how many jobs one announcement names at most: their
// IDs, each at most 19 digits and a comma, fit in PostgreSQL's 8000-byte
// payload.
const maxAnnounced = 256

// payload is the NOTIFY payload of n: the IDs, comma-separated; empty
// when the queue is to be read whole.
func (n QueueNews) payload() string {
	if n.Whole {
		return ""
	}
	b := make([]byte, 0, 8*len(n.Submitted))
	for i, id := range n.Submitted {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, id, 10)
	}
	return string(b)
}

// parseNews reads a NOTIFY payload: the jobs it names, or Whole for an
// empty payload or one that is not a list of job IDs (a host of another
// version; whoever else may NOTIFY).
func parseNews(payload string) QueueNews {
	whole := QueueNews{Whole: true}
	if payload == "" || len(payload) > 8000 {
		return whole
	}
	var ids []int64
	for f := range strings.SplitSeq(payload, ",") {
		id, err := strconv.ParseInt(f, 10, 64)
		if err != nil || id <= 0 {
			return whole
		}
		ids = append(ids, id)
	}
	return QueueNews{Submitted: ids}
}

// queueChanged has notifyLoop announce a committed change of the queue.
// It never waits.
func (p *Postgres) queueChanged(news QueueNews) {
	p.newsMu.Lock()
	p.news.Add(news, maxAnnounced)
	p.newsMu.Unlock()
	select {
	case p.notify <- struct{}{}:
	default: // an announcement is pending already: it covers this change
	}
}

// notifyTimeout bounds one NOTIFY.
const notifyTimeout = 10 * time.Second

// notifyLoop sends a NOTIFY on queueChannel for each change of the queue
// (queueChanged), one at a time: the changes that commit while one is
// sent share the next. It has a connection of its own, so that it never
// waits behind the burst of writes it announces for one of the pool's.
// It returns when Close is called. A NOTIFY that fails is not sent
// again (the hosts' poll finds the change); the next connects again.
func (p *Postgres) notifyLoop() {
	defer close(p.stopped)
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			ctx, cancel := context.WithTimeout(context.Background(), notifyTimeout)
			conn.Close(ctx)
			cancel()
		}
	}()
	// Connect before the first change: the first submit's NOTIFY does
	// not wait for a connection.
	first := true
	for {
		if !first {
			select {
			case <-p.stop:
				return
			case <-p.notify:
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), notifyTimeout)
		go func() {
			select {
			case <-p.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		var err error
		if conn == nil {
			conn, err = pgx.ConnectConfig(ctx, p.cfg)
		}
		if err == nil && !first {
			p.newsMu.Lock()
			news := p.news
			p.news = QueueNews{}
			p.newsMu.Unlock()
			// Nothing new: the last announcement took this wake-up's
			// change already.
			if !news.Empty() {
				if _, err = conn.Exec(ctx, `SELECT pg_notify('`+queueChannel+`', $1)`, news.payload()); err != nil {
					conn.Close(ctx)
				}
			}
		}
		if err != nil {
			conn = nil
		}
		first = false
		cancel()
	}
}

// checkPostgresURL checks that s is a postgres:// URL without a password
// and returns it as it may be shown.
func checkPostgresURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // without the URL, which may hold a password
		}
		return "", fmt.Errorf("store URL: does not parse: %v", err)
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return "", fmt.Errorf("store URL %s: the scheme is %q, not postgres", u.Redacted(), u.Scheme)
	}
	if _, ok := u.User.Password(); ok || u.Query().Has("password") {
		u.RawQuery = ""
		return "", fmt.Errorf("store URL %s holds a password: give it in a file or an environment variable instead", u.Redacted())
	}
	return u.String(), nil
}

// hostPort names the server(s) of cfg.
func hostPort(cfg *pgx.ConnConfig) string {
	s := fmt.Sprintf("%s:%d", cfg.Host, cfg.Port)
	for _, fb := range cfg.Fallbacks {
		if fb.Host != cfg.Host || fb.Port != cfg.Port {
			s += fmt.Sprintf(", %s:%d", fb.Host, fb.Port)
		}
	}
	return s
}

// redactedError is an error whose text had a password removed.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redact removes password from err's text (the driver does not put it
// there; this makes sure).
func redact(err error, password string) error {
	if password == "" || err == nil {
		return err
	}
	msg := err.Error()
	if !strings.Contains(msg, password) {
		return err
	}
	return &redactedError{msg: strings.ReplaceAll(msg, password, "[redacted]"), err: err}
}

// migrate brings the schema to SchemaVersion, in one transaction under
// the migration lock.
func (p *Postgres) migrate(ctx context.Context) error {
	tx, err := p.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLock)); err != nil {
		return fmt.Errorf("take the migration lock: %w", err)
	}
	var hasVersion, hasJobs bool
	if err := tx.QueryRowContext(ctx, `SELECT to_regclass('schema_version') IS NOT NULL, to_regclass('jobs') IS NOT NULL`).
		Scan(&hasVersion, &hasJobs); err != nil {
		return err
	}
	if !hasVersion {
		if hasJobs {
			return errors.New("the database has a jobs table but no schema_version table: it is not a labctl database (give labctl a database of its own)")
		}
		if _, err := tx.ExecContext(ctx, `CREATE TABLE schema_version (
			id      INTEGER PRIMARY KEY CHECK (id = 1),
			version INTEGER NOT NULL
		); INSERT INTO schema_version (id, version) VALUES (1, 0)`); err != nil {
			return fmt.Errorf("create schema_version: %w", err)
		}
	}
	var version int
	if err := tx.QueryRowContext(ctx, `SELECT version FROM schema_version WHERE id = 1`).Scan(&version); err != nil {
		return fmt.Errorf("read the schema version: %w", err)
	}
	err = migrate(ctx, tx, version, func(m migration) string { return m.postgres }, func(v int) error {
		_, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = $1 WHERE id = 1`, v)
		return err
	})
	if err != nil {
		return err
	}
	return tx.Commit()
}

// SchemaVersion returns the database's schema version.
func (p *Postgres) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := p.db.QueryRowContext(ctx, `SELECT version FROM schema_version WHERE id = 1`).Scan(&v)
	return v, err
}

// write runs fn in a transaction of its own and returns once it is
// committed (see detached).
func (p *Postgres) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return detached(ctx, func(ctx context.Context) error { return p.inTx(ctx, fn) })
}

// statement runs fn, one statement that writes, on a connection of the
// pool without BEGIN and COMMIT: PostgreSQL runs it as a transaction of
// its own, in one round trip (see detached).
func (p *Postgres) statement(ctx context.Context, fn func(ctx context.Context, db querier) error) error {
	return detached(ctx, func(ctx context.Context) error { return fn(ctx, p.db) })
}

// detached runs a write, tx, and returns its result once it has
// committed. It runs to its end even if ctx ends first (it may be
// committed already), bounded by writeTimeout; one that PostgreSQL
// aborted for a deadlock or a serialization failure runs again.
func detached(ctx context.Context, tx func(ctx context.Context) error) error {
	done := make(chan error, 1)
	go func() {
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
		defer cancel()
		var err error
		for try := 0; try < 5; try++ {
			if err = tx(tctx); !retryable(err) {
				break
			}
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *Postgres) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := p.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil && !errors.Is(err, ErrConflict) && !errors.Is(err, ErrNotFound) {
		tx.Rollback()
		return err
	} else if err != nil {
		if cerr := tx.Commit(); cerr != nil {
			return cerr
		}
		return err
	}
	return tx.Commit()
}

// retryable reports whether err is PostgreSQL aborting a transaction that
// may succeed when run again.
func retryable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40001" || pgErr.Code == "40P01")
}

// CheckWrite commits an update of the schema version to the value it
// has: it fails as any write would (a read-only server, a full disk, no
// connection).
func (p *Postgres) CheckWrite(ctx context.Context) error {
	err := p.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`UPDATE schema_version SET version = version WHERE id = 1`)
		return err
	})
	if err != nil {
		return fmt.Errorf("store %s cannot write: %w", p.where, err)
	}
	return nil
}

// Clock reads the database server's clock. The hosts of a lab compare
// each other's leases by their own clocks: each checks its own against
// this one.
func (p *Postgres) Clock(ctx context.Context) (time.Time, error) {
	var ns int64
	if err := p.db.QueryRowContext(ctx, `SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000`).Scan(&ns); err != nil {
		return time.Time{}, fmt.Errorf("store %s: read the clock: %w", p.where, err)
	}
	return time.Unix(0, ns), nil
}

// Close closes the database's connections.
func (p *Postgres) Close() error {
	p.closeOnce.Do(func() { close(p.stop) })
	<-p.stopped
	<-p.inserted
	<-p.claimed
	return p.db.Close()
}

// WatchQueue calls changed whenever a job is queued, or canceled while
// queued, by any host (not when one is claimed: see ClaimFirst), until
// ctx ends: it LISTENs on a connection of its own. changed is given one
// host's announcement: the jobs submitted when that is all that changed
// (fewer than were made when a host's announcement failed: the poll
// finds them), else Whole. After the connection was lost it connects
// again (backing off up to 5 s) and says Whole once, for what it may have
// missed meanwhile.
func (p *Postgres) WatchQueue(ctx context.Context, changed func(QueueNews)) {
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		conn, err := pgx.ConnectConfig(ctx, p.cfg)
		if err == nil {
			if _, err = conn.Exec(ctx, "LISTEN "+queueChannel); err == nil {
				wait = 100 * time.Millisecond
				changed(QueueNews{Whole: true})
				for err == nil {
					var n *pgconn.Notification
					if n, err = conn.WaitForNotification(ctx); err == nil {
						changed(parseNews(n.Payload))
					}
				}
			}
			conn.Close(context.WithoutCancel(ctx))
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}
