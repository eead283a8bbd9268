package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" database/sql driver

	"github.com/labctl/labctl/internal/statedir"
)

// SQLite is the store in one SQLite database file.
//
// The database runs in WAL mode with synchronous=NORMAL: a committed
// change survives the daemon being killed (kill -9) at any point; only an
// operating system crash or power loss may roll back the last few commits.
//
// SQLite takes one writer at a time, and a commit costs several times what
// a small statement does, so every write goes through one writer goroutine
// that commits the writes waiting at that moment together (group commit):
// a burst of 400 submissions costs a few transactions, not 400. Each write
// still returns only once it is committed. Reads use other connections
// and see what is committed.
type SQLite struct {
	db     *sql.DB
	path   string
	writes chan *write
	done   chan struct{}
	once   sync.Once
}

// write is one write waiting for the writer: fn runs in the batch's
// transaction and reports the write's own result.
type write struct {
	fn     func(tx *sql.Tx) error
	result chan error
}

// maxBatch bounds the writes committed together.
const maxBatch = 256

// schema is version 1 of the database. Times are Unix nanoseconds (0 =
// not yet), tags a JSON array: both map to PostgreSQL as they are.
const schema = `
CREATE TABLE jobs (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	name        TEXT    NOT NULL,
	file        TEXT    NOT NULL,
	dir         TEXT    NOT NULL,
	spec        TEXT    NOT NULL,
	device      TEXT    NOT NULL,
	device_type TEXT    NOT NULL,
	tags        TEXT    NOT NULL,
	priority    TEXT    NOT NULL,
	submitter   TEXT    NOT NULL,
	state       TEXT    NOT NULL,
	run_device  TEXT    NOT NULL DEFAULT '',
	outcome     TEXT    NOT NULL DEFAULT '',
	reason      TEXT    NOT NULL DEFAULT '',
	submitted   INTEGER NOT NULL,
	started     INTEGER NOT NULL DEFAULT 0,
	finished    INTEGER NOT NULL DEFAULT 0,
	result      BLOB
);
CREATE INDEX jobs_state ON jobs (state, id);
CREATE INDEX jobs_run_device ON jobs (run_device, id);
CREATE TABLE devices (
	name               TEXT PRIMARY KEY,
	state              TEXT    NOT NULL,
	reason             TEXT    NOT NULL,
	since              INTEGER NOT NULL,
	maintenance        INTEGER NOT NULL,
	maintenance_reason TEXT    NOT NULL
);
PRAGMA user_version = 1;
`

// OpenSQLite opens (creating if needed) the database at path, with its
// directory.
func OpenSQLite(path string) (*SQLite, error) {
	if err := os.MkdirAll(filepath.Dir(path), statedir.DirMode); err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	// A new database file gets the state directory's file mode; SQLite
	// gives its -wal and -shm files the mode of the database file.
	if f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, statedir.FileMode); err == nil {
		f.Close()
	}
	dsn := "file:" + path +
		"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	db.SetMaxOpenConns(4)
	s := &SQLite{db: db, path: path, writes: make(chan *write), done: make(chan struct{})}
	if err := s.migrate(); err != nil {
		db.Close()
		if werr := writable(path); werr != nil {
			return nil, fmt.Errorf("open store %s: %w: the database cannot be written: %v", path, err, werr)
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	go s.writer()
	return s, nil
}

// writable says why the database file, or its directory (where SQLite
// keeps its -wal and -shm files), cannot be written; nil if both can.
func writable(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	f.Close()
	f, err = os.CreateTemp(filepath.Dir(path), ".write-probe-*")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}

// writer commits waiting writes in batches until Close.
func (s *SQLite) writer() {
	for {
		var batch []*write
		select {
		case w := <-s.writes:
			batch = append(batch, w)
		case <-s.done:
			return
		}
	more:
		for len(batch) < maxBatch {
			select {
			case w := <-s.writes:
				batch = append(batch, w)
			default:
				break more
			}
		}
		s.commit(batch)
	}
}

// commit runs a batch in one transaction. If the transaction itself fails
// (rather than a write finding a job in the wrong state, which changes
// nothing), each write is run again in a transaction of its own, so that
// one bad write cannot fail the others.
func (s *SQLite) commit(batch []*write) {
	results := make([]error, len(batch))
	err := s.inTx(func(tx *sql.Tx) error {
		for i, w := range batch {
			results[i] = w.fn(tx)
			if results[i] != nil && !errors.Is(results[i], ErrConflict) && !errors.Is(results[i], ErrNotFound) {
				return results[i]
			}
		}
		return nil
	})
	if err == nil {
		for i, w := range batch {
			w.result <- results[i]
		}
		return
	}
	if len(batch) == 1 {
		batch[0].result <- err
		return
	}
	for _, w := range batch {
		var res error
		err := s.inTx(func(tx *sql.Tx) error {
			res = w.fn(tx)
			return res
		})
		if res == nil {
			res = err
		}
		w.result <- res
	}
}

func (s *SQLite) inTx(fn func(tx *sql.Tx) error) error {
	tx, err := s.db.Begin()
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil && !errors.Is(err, ErrConflict) && !errors.Is(err, ErrNotFound) {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// write runs fn through the writer and returns its result once committed.
// The write happens even if ctx ends first (it may already be committed).
func (s *SQLite) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	w := &write{fn: fn, result: make(chan error, 1)}
	select {
	case s.writes <- w:
	case <-s.done:
		return errors.New("store closed")
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-w.result:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *SQLite) migrate() error {
	var version int
	if err := s.db.QueryRow("PRAGMA user_version").Scan(&version); err != nil {
		return err
	}
	switch version {
	case 0:
		if _, err := s.db.Exec(schema); err != nil {
			return fmt.Errorf("create schema: %w", err)
		}
	case 1:
	default:
		return fmt.Errorf("database schema version %d is newer than this labctl knows (1)", version)
	}
	if _, err := s.db.Exec(extraSchema); err != nil {
		return fmt.Errorf("create schema: %w", err)
	}
	if _, err := s.db.Exec(auditSchema); err != nil {
		return fmt.Errorf("create the audit table: %w", err)
	}
	return nil
}

// Close stops the writer and closes the database. Writes in flight finish
// first.
func (s *SQLite) Close() error {
	s.once.Do(func() { close(s.done) })
	return s.db.Close()
}

const jobColumns = `id, name, file, dir, spec, device, device_type, tags, priority, submitter,
	state, run_device, outcome, reason, submitted, started, finished, result`

// CreateJob adds j to the queue and returns it with its ID, state queued
// and j.Submitted (now if zero).
func (s *SQLite) CreateJob(ctx context.Context, j Job) (Job, error) {
	if j.Submitted.IsZero() {
		j.Submitted = time.Now()
	}
	tags, err := json.Marshal(nonNil(j.Tags))
	if err != nil {
		return Job{}, err
	}
	j.State, j.RunDevice, j.Outcome, j.Reason = Queued, "", "", ""
	j.Started, j.Finished, j.Result = time.Time{}, time.Time{}, nil
	err = s.write(ctx, func(tx *sql.Tx) error {
		return tx.QueryRow(`INSERT INTO jobs
			(name, file, dir, spec, device, device_type, tags, priority, submitter, state, submitted)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id`,
			j.Name, j.File, j.Dir, j.Spec, j.Device, j.DeviceType, string(tags), j.Priority, j.Submitter,
			Queued, nanos(j.Submitted)).Scan(&j.ID)
	})
	if err != nil {
		return Job{}, fmt.Errorf("store job %s: %w", j.Name, err)
	}
	return j, nil
}

// Job returns the job with this ID, or ErrNotFound.
func (s *SQLite) Job(ctx context.Context, id int64) (Job, error) {
	row := s.db.QueryRowContext(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = $1`, id)
	j, err := scanJob(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Job{}, fmt.Errorf("job %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return Job{}, fmt.Errorf("read job %d: %w", id, err)
	}
	return j, nil
}

// Jobs returns the jobs f selects, oldest first.
func (s *SQLite) Jobs(ctx context.Context, f JobFilter) ([]Job, error) {
	var where []string
	var args []any
	if len(f.States) > 0 {
		var ph []string
		for _, st := range f.States {
			args = append(args, st)
			ph = append(ph, "$"+strconv.Itoa(len(args)))
		}
		where = append(where, "state IN ("+strings.Join(ph, ", ")+")")
	}
	if f.Device != "" {
		args = append(args, f.Device)
		where = append(where, "run_device = $"+strconv.Itoa(len(args)))
	}
	q := `SELECT ` + jobColumns + ` FROM jobs`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY id DESC"
	if f.Limit > 0 {
		args = append(args, f.Limit)
		q += " LIMIT $" + strconv.Itoa(len(args))
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	defer rows.Close()
	var out []Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, fmt.Errorf("list jobs: %w", err)
		}
		out = append(out, j)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	for i, k := 0, len(out)-1; i < k; i, k = i+1, k-1 {
		out[i], out[k] = out[k], out[i]
	}
	return out, nil
}

// ClaimJob takes a queued job off the queue for device: it is then
// running. It returns ErrConflict if the job is not queued (any more), and
// ErrNotFound if there is no such job. This one statement is what keeps a
// job from running twice.
func (s *SQLite) ClaimJob(ctx context.Context, id int64, device string, at time.Time) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`UPDATE jobs SET state = $1, run_device = $2, started = $3
			WHERE id = $4 AND state = $5`, Running, device, nanos(at), id, Queued)
		return changed(tx, res, err, id, "claim")
	})
}

// FinishJob ends a job that is in state from (Queued: canceled before it
// ran; Running: it ran). ErrConflict if it is in another state.
func (s *SQLite) FinishJob(ctx context.Context, id int64, from string, f Finish) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`UPDATE jobs SET state = $1, outcome = $2, reason = $3, finished = $4, result = $5
			WHERE id = $6 AND state = $7`, Finished, f.Outcome, f.Reason, nanos(f.At), f.Result, id, from)
		return changed(tx, res, err, id, "finish")
	})
}

// changed turns an UPDATE of one job into nil, ErrConflict or ErrNotFound.
func changed(tx *sql.Tx, res sql.Result, err error, id int64, what string) error {
	if err != nil {
		return fmt.Errorf("%s job %d: %w", what, id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("%s job %d: %w", what, id, err)
	}
	if n == 1 {
		return nil
	}
	var state string
	err = tx.QueryRow(`SELECT state FROM jobs WHERE id = $1`, id).Scan(&state)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s job %d: %w", what, id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("%s job %d: %w", what, id, err)
	}
	return fmt.Errorf("%s job %d: it is %s: %w", what, id, state, ErrConflict)
}

// SetDevices records the states of devices, in one transaction.
func (s *SQLite) SetDevices(ctx context.Context, devs []Device) error {
	if len(devs) == 0 {
		return nil
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		for _, d := range devs {
			_, err := tx.Exec(`INSERT INTO devices (name, state, reason, since, maintenance, maintenance_reason)
				VALUES ($1, $2, $3, $4, $5, $6)
				ON CONFLICT (name) DO UPDATE SET state = excluded.state, reason = excluded.reason, since = excluded.since,
					maintenance = excluded.maintenance, maintenance_reason = excluded.maintenance_reason`,
				d.Name, d.State, d.Reason, nanos(d.Since), boolInt(d.Maintenance), d.MaintenanceReason)
			if err != nil {
				return fmt.Errorf("store device %s: %w", d.Name, err)
			}
		}
		return nil
	})
}

// Devices returns every recorded device, by name.
func (s *SQLite) Devices(ctx context.Context) ([]Device, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, state, reason, since, maintenance, maintenance_reason
		FROM devices ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	defer rows.Close()
	var out []Device
	for rows.Next() {
		var d Device
		var since, maint int64
		if err := rows.Scan(&d.Name, &d.State, &d.Reason, &since, &maint, &d.MaintenanceReason); err != nil {
			return nil, fmt.Errorf("list devices: %w", err)
		}
		d.Since, d.Maintenance = fromNanos(since), maint != 0
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	return out, nil
}

type scanner interface{ Scan(dest ...any) error }

func scanJob(row scanner) (Job, error) {
	var j Job
	var tags string
	var submitted, started, finished int64
	if err := row.Scan(&j.ID, &j.Name, &j.File, &j.Dir, &j.Spec, &j.Device, &j.DeviceType, &tags, &j.Priority,
		&j.Submitter, &j.State, &j.RunDevice, &j.Outcome, &j.Reason, &submitted, &started, &finished, &j.Result); err != nil {
		return Job{}, err
	}
	if err := json.Unmarshal([]byte(tags), &j.Tags); err != nil {
		return Job{}, fmt.Errorf("job %d: tags: %w", j.ID, err)
	}
	if len(j.Tags) == 0 {
		j.Tags = nil
	}
	if len(j.Result) == 0 {
		j.Result = nil
	}
	j.Submitted, j.Started, j.Finished = fromNanos(submitted), fromNanos(started), fromNanos(finished)
	return j, nil
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// extraSchema adds the tables of job attempts and device reservations to
// a database of any version: CREATE ... IF NOT EXISTS, so that it runs on
// every open and older databases gain them.
const extraSchema = `
CREATE TABLE IF NOT EXISTS job_attempts (
	job      INTEGER PRIMARY KEY,
	first    INTEGER NOT NULL,
	retry_of INTEGER NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS job_attempts_first ON job_attempts (first, job);
CREATE TABLE IF NOT EXISTS reservations (
	device TEXT PRIMARY KEY,
	owner  TEXT    NOT NULL,
	reason TEXT    NOT NULL,
	since  INTEGER NOT NULL,
	until  INTEGER NOT NULL
);
`

// RetryJob adds j, queued, as the attempt after job of.
func (s *SQLite) RetryJob(ctx context.Context, of int64, j Job) (Job, error) {
	if j.Submitted.IsZero() {
		j.Submitted = time.Now()
	}
	tags, err := json.Marshal(nonNil(j.Tags))
	if err != nil {
		return Job{}, err
	}
	j.State, j.RunDevice, j.Outcome, j.Reason = Queued, "", "", ""
	j.Started, j.Finished, j.Result = time.Time{}, time.Time{}, nil
	err = s.write(ctx, func(tx *sql.Tx) error {
		var first int64
		err := tx.QueryRow(`SELECT COALESCE((SELECT first FROM job_attempts WHERE job = $1), $1)
			FROM jobs WHERE id = $1`, of).Scan(&first)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("retry job %d: %w", of, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("retry job %d: %w", of, err)
		}
		var next int64
		err = tx.QueryRow(`SELECT job FROM job_attempts WHERE retry_of = $1`, of).Scan(&next)
		if err == nil {
			return fmt.Errorf("retry job %d: already retried as job %d: %w", of, next, ErrConflict)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("retry job %d: %w", of, err)
		}
		if err := tx.QueryRow(`INSERT INTO jobs
			(name, file, dir, spec, device, device_type, tags, priority, submitter, state, submitted)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id`,
			j.Name, j.File, j.Dir, j.Spec, j.Device, j.DeviceType, string(tags), j.Priority, j.Submitter,
			Queued, nanos(j.Submitted)).Scan(&j.ID); err != nil {
			return fmt.Errorf("retry job %d: %w", of, err)
		}
		if _, err := tx.Exec(`INSERT INTO job_attempts (job, first, retry_of) VALUES ($1, $2, $3)`, j.ID, first, of); err != nil {
			return fmt.Errorf("retry job %d: %w", of, err)
		}
		return nil
	})
	if err != nil {
		return Job{}, err
	}
	return j, nil
}

// Attempts returns the attempts of the job id belongs to, first first.
func (s *SQLite) Attempts(ctx context.Context, id int64) ([]Job, error) {
	var first int64
	err := s.db.QueryRowContext(ctx, `SELECT first FROM job_attempts WHERE job = $1`, id).Scan(&first)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		first = id
	case err != nil:
		return nil, fmt.Errorf("attempts of job %d: %w", id, err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+jobColumns+` FROM jobs
		WHERE id = $1 OR id IN (SELECT job FROM job_attempts WHERE first = $1) ORDER BY id`, first)
	if err != nil {
		return nil, fmt.Errorf("attempts of job %d: %w", id, err)
	}
	defer rows.Close()
	var out []Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, fmt.Errorf("attempts of job %d: %w", id, err)
		}
		out = append(out, j)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("attempts of job %d: %w", id, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("job %d: %w", id, ErrNotFound)
	}
	return out, nil
}

// SetReservation records a device's reservation.
func (s *SQLite) SetReservation(ctx context.Context, r Reservation) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO reservations (device, owner, reason, since, until)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (device) DO UPDATE SET owner = excluded.owner, reason = excluded.reason,
				since = excluded.since, until = excluded.until`,
			r.Device, r.Owner, r.Reason, nanos(r.Since), nanos(r.Until))
		if err != nil {
			return fmt.Errorf("store reservation of %s: %w", r.Device, err)
		}
		return nil
	})
}

// DeleteReservation removes a device's reservation.
func (s *SQLite) DeleteReservation(ctx context.Context, device string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.Exec(`DELETE FROM reservations WHERE device = $1`, device); err != nil {
			return fmt.Errorf("delete reservation of %s: %w", device, err)
		}
		return nil
	})
}

// Reservations returns every reservation, by device.
func (s *SQLite) Reservations(ctx context.Context) ([]Reservation, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT device, owner, reason, since, until FROM reservations ORDER BY device`)
	if err != nil {
		return nil, fmt.Errorf("list reservations: %w", err)
	}
	defer rows.Close()
	var out []Reservation
	for rows.Next() {
		var r Reservation
		var since, until int64
		if err := rows.Scan(&r.Device, &r.Owner, &r.Reason, &since, &until); err != nil {
			return nil, fmt.Errorf("list reservations: %w", err)
		}
		r.Since, r.Until = fromNanos(since), fromNanos(until)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list reservations: %w", err)
	}
	return out, nil
}

// CheckWrite commits a write of the database header's user_version (to
// the value it has): it fails as any write would on a read-only database
// or a full disk.
func (s *SQLite) CheckWrite(ctx context.Context) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`PRAGMA user_version = 1`)
		return err
	})
	if err != nil {
		return fmt.Errorf("store %s cannot write: %w", s.path, err)
	}
	return nil
}

// DeleteFinishedJobs removes finished jobs that finished before before or
// lie beyond the newest keep finished jobs, oldest first, at most limit,
// in one transaction.
func (s *SQLite) DeleteFinishedJobs(ctx context.Context, before time.Time, keep, limit int) ([]int64, error) {
	if before.IsZero() && keep <= 0 {
		return nil, nil
	}
	if limit <= 0 {
		limit = -1 // no limit (in SQLite; PostgreSQL takes LIMIT ALL)
	}
	var ids []int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		ids = ids[:0]
		rows, err := tx.Query(`DELETE FROM jobs WHERE id IN (
				SELECT id FROM jobs WHERE state = $1 AND (
					finished < $2 OR
					($3 > 0 AND id NOT IN (SELECT id FROM jobs WHERE state = $1 ORDER BY id DESC LIMIT $3)))
				ORDER BY id LIMIT $4)
			RETURNING id`, Finished, nanos(before), keep, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("delete finished jobs: %w", err)
	}
	slices.Sort(ids)
	return ids, nil
}
