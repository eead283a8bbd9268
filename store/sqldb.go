package store

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// sqlDB is the Store on a database/sql database, shared by SQLite and
// PostgreSQL: the same queries run on both. Reads go to db; every write
// goes through write, which runs its function in a transaction and returns
// once that is committed (SQLite batches them through one writer;
// PostgreSQL runs each in a transaction of its own).
type sqlDB struct {
	db    *sql.DB
	write func(ctx context.Context, fn func(tx *sql.Tx) error) error
	// statement runs fn, which runs one statement that writes, as a
	// transaction of its own and returns once that is committed: on
	// SQLite through write, on PostgreSQL without BEGIN and COMMIT
	// (one round trip).
	statement func(ctx context.Context, fn func(ctx context.Context, db querier) error) error
	// insert, if set, inserts a row and returns its id and back:
	// PostgreSQL's, which inserts the rows of a table that arrive at once
	// (the jobs of a burst of submits, their audit entries) in one
	// statement. Unset, each is a statement of its own.
	insert func(ctx context.Context, r rowInsert, vals []any) (inserted, error)
	// claimer, if set, runs a claim with the others that arrive at once
	// (PostgreSQL's claimLoop: a burst of claims is one round trip and
	// one commit). Unset, each is a statement of its own.
	claimer func(ctx context.Context, c claim) (int64, error)
	// lockRow ends the subquery that picks the job a claim takes: FOR
	// UPDATE SKIP LOCKED on PostgreSQL, nothing on SQLite (one writer).
	lockRow string
	// host is the host whose claims this store makes ("" for a lab of
	// one host); see SetHost.
	host string
	// started is when the daemon that registered host (RegisterHost)
	// started, in Unix nanoseconds: the instance whose lease it renews.
	started atomic.Int64
	// queueChanged, if set, is called once a change of the queue has
	// committed (a job queued, or canceled while queued), with the news
	// of it: PostgreSQL's NOTIFY, which other hosts hear (WatchQueue).
	queueChanged func(QueueNews)
}

// querier runs statements: a transaction, or (PostgreSQL) the pool.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// notifyQueue tells other hosts that the queue changed; call it after
// the change committed.
func (s *sqlDB) notifyQueue(news QueueNews) {
	if s.queueChanged != nil {
		s.queueChanged(news)
	}
}

const jobColumns = `id, name, file, dir, spec, device, device_type, tags, priority, submitter,
	state, run_device, outcome, reason, submitted, started, finished, result, claim_host`

// CreateJob adds j and returns it with its ID and j.Submitted (now if
// zero): queued, or, if j.RunDevice names a device, running on it under
// this store's host's claim since j.Started (now if zero), as ClaimFirst
// leaves a job, when that claim holds (the host's lease at j.Started,
// checked by the INSERT itself as ClaimFirst's UPDATE checks it); queued
// when it does not.
func (s *sqlDB) CreateJob(ctx context.Context, j Job) (Job, error) {
	j, vals, err := s.newJob(j)
	if err != nil {
		return Job{}, err
	}
	got, err := s.insertRow(ctx, jobsInsert, vals)
	if err != nil {
		return Job{}, fmt.Errorf("store job %s: %w", j.Name, err)
	}
	j.ID = got.id
	if got.back == Running {
		j.State, j.Host = Running, s.host
		return j, nil
	}
	j.State, j.RunDevice, j.Started = Queued, "", time.Time{}
	s.notifyQueue(QueueNews{Submitted: []int64{j.ID}})
	return j, nil
}

// rowInsert is an INSERT of rows into one table whose id comes from a
// sequence: into is the statement up to VALUES, row one row's VALUES
// with its placeholders numbered from $1 within the row, back a text
// expression RETURNING gives back with the id. Rows of one rowInsert
// inserted at once go in one statement (PostgreSQL's insertLoop).
type rowInsert struct {
	into, row, back string
}

// inserted is what the insert of a row gives back: its id and its back.
type inserted struct {
	id   int64
	back string
}

// sql is the statement that inserts rows rows.
func (r rowInsert) sql(rows int) string {
	cols := 0
	for _, m := range placeholder.FindAllStringSubmatch(r.row, -1) {
		n, _ := strconv.Atoi(m[1])
		cols = max(cols, n)
	}
	var b strings.Builder
	b.WriteString(r.into)
	for i := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(placeholder.ReplaceAllStringFunc(r.row, func(p string) string {
			n, _ := strconv.Atoi(p[1:])
			return "$" + strconv.Itoa(i*cols+n)
		}))
	}
	b.WriteString(" RETURNING id, " + r.back)
	return b.String()
}

var placeholder = regexp.MustCompile(`\$([0-9]+)`)

// plainRow is the VALUES of a row of cols values: ($1, $2, ...).
func plainRow(cols int) string {
	ph := make([]string, cols)
	for i := range ph {
		ph[i] = "$" + strconv.Itoa(i+1)
	}
	return "(" + strings.Join(ph, ", ") + ")"
}

// insertRow inserts a row and returns its id and back once committed:
// through insert if the store batches inserts, else as one statement.
func (s *sqlDB) insertRow(ctx context.Context, r rowInsert, vals []any) (inserted, error) {
	if s.insert != nil {
		return s.insert(ctx, r, vals)
	}
	var got inserted
	err := s.statement(ctx, func(ctx context.Context, db querier) error {
		return db.QueryRowContext(ctx, r.sql(1), vals...).Scan(&got.id, &got.back)
	})
	return got, err
}

// jobClaimed is true in a row of jobsInsert whose claim holds: it names
// a device ($11), and the store's host ($13), if any, holds its lease at
// the claim's time ($12), as ClaimFirst checks it.
const jobClaimed = `($11 <> '' AND ($13 = '' OR EXISTS (SELECT 1 FROM hosts WHERE name = $13 AND lease_until >= $12)))`

// jobsInsert inserts jobs, each with the values newJob gives: queued, or
// running under the claim the row names if it holds. It gives back the
// job's state.
var jobsInsert = rowInsert{
	into: `INSERT INTO jobs (name, file, dir, spec, device, device_type, tags, priority, submitter, submitted,
		state, run_device, started, claim_host) VALUES `,
	row: `($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
		CASE WHEN ` + jobClaimed + ` THEN '` + Running + `' ELSE '` + Queued + `' END,
		CASE WHEN ` + jobClaimed + ` THEN $11 ELSE '' END,
		CASE WHEN ` + jobClaimed + ` THEN $12 ELSE 0 END,
		CASE WHEN ` + jobClaimed + ` THEN $13 ELSE '' END)`,
	back: "state",
}

// newJob returns j as it is inserted (Submitted now if zero; Started now
// if zero and it names a device to claim) and the values jobsInsert takes
// for it.
func (s *sqlDB) newJob(j Job) (Job, []any, error) {
	now := time.Now()
	if j.Submitted.IsZero() {
		j.Submitted = now
	}
	if j.RunDevice == "" {
		j.Started = time.Time{}
	} else if j.Started.IsZero() {
		j.Started = now
	}
	tags, err := json.Marshal(nonNil(j.Tags))
	if err != nil {
		return Job{}, nil, err
	}
	j.State, j.Host, j.Outcome, j.Reason = Queued, "", "", ""
	j.Finished, j.Result = time.Time{}, nil
	return j, []any{j.Name, j.File, j.Dir, j.Spec, j.Device, j.DeviceType, string(tags), j.Priority, j.Submitter,
		nanos(j.Submitted), j.RunDevice, nanos(j.Started), s.host}, nil
}

// Job returns the job with this ID, or ErrNotFound.
func (s *sqlDB) Job(ctx context.Context, id int64) (Job, error) {
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
func (s *sqlDB) Jobs(ctx context.Context, f JobFilter) ([]Job, error) {
	return listJobs(ctx, s.db, jobColumns, scanJob, f)
}

// JobIDs lists the IDs of the jobs f selects, oldest first.
func (s *sqlDB) JobIDs(ctx context.Context, f JobFilter) ([]int64, error) {
	return listJobs(ctx, s.db, "id", scanID, f)
}

// scanID scans a row of one ID.
func scanID(row scanner) (id int64, err error) {
	err = row.Scan(&id)
	return id, err
}

// listJobs reads the columns cols of the jobs f selects with scan,
// oldest first: Jobs and JobIDs. IDs go to the database a chunk at a
// time (idsChunk), in ascending order, so that the chunks'
// answers follow one another; Limit keeps the newest of them all.
func listJobs[T any](ctx context.Context, db *sql.DB, cols string, scan func(scanner) (T, error), f JobFilter) ([]T, error) {
	chunks := [][]int64{nil}
	if len(f.IDs) > 0 {
		chunks = slices.Collect(slices.Chunk(slices.Sorted(slices.Values(f.IDs)), idsChunk))
	}
	var out []T
	for _, ids := range chunks {
		cf := f
		cf.IDs = ids
		q, args := jobsQuery(cols, cf)
		got, err := queryAll(ctx, db, scan, q, args...)
		if err != nil {
			return nil, fmt.Errorf("list jobs: %w", err)
		}
		slices.Reverse(got)
		out = append(out, got...)
	}
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[len(out)-f.Limit:]
	}
	return out, nil
}

// jobsQuery is the query of the columns cols of the jobs f selects,
// newest first (Limit keeps the newest), and its arguments.
func jobsQuery(cols string, f JobFilter) (string, []any) {
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
	if f.Host != "" {
		args = append(args, f.Host)
		where = append(where, "claim_host = $"+strconv.Itoa(len(args)))
	}
	if f.Before > 0 {
		args = append(args, f.Before)
		where = append(where, "id < $"+strconv.Itoa(len(args)))
	}
	if len(f.IDs) > 0 {
		var in []string
		args, in = withIDs(args, f.IDs)
		where = append(where, "id IN ("+strings.Join(in, ", ")+")")
	}
	q := `SELECT ` + cols + ` FROM jobs`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY id DESC"
	if f.Limit > 0 {
		args = append(args, f.Limit)
		q += " LIMIT $" + strconv.Itoa(len(args))
	}
	return q, args
}

// ClaimJob takes a queued job off the queue for device: it is then
// running, under the claim of this store's host (SetHost). It returns
// ErrConflict if the job is not queued (any more) or another host is
// taking it at this moment, ErrNotFound if there is no such job, and
// ErrLeaseExpired if this store's host's lease has run out (it takes no
// work until it has renewed it). It is ClaimFirst of one job.
func (s *sqlDB) ClaimJob(ctx context.Context, id int64, device string, at time.Time) error {
	_, err := s.ClaimFirst(ctx, []int64{id}, device, at)
	return err
}

// maxCandidates bounds the jobs one claim names.
const maxCandidates = 64

// ClaimFirst takes off the queue for device the first of the jobs ids
// that is queued and that no other host is taking at this moment, and
// returns its ID. One statement does it, which is what keeps a job from
// running twice: its subquery takes the row lock of the first candidate
// still queued, skipping (PostgreSQL: SKIP LOCKED) the rows other hosts
// hold, and the UPDATE changes it only while queued and while this
// store's host's lease holds. So a host that loses the oldest job to
// another host takes the next in the same round trip. On PostgreSQL the
// claims that arrive together are sent in one round trip and committed
// together (claimLoop); on SQLite a claim goes through the writer.
func (s *sqlDB) ClaimFirst(ctx context.Context, ids []int64, device string, at time.Time) (int64, error) {
	if len(ids) == 0 {
		return 0, errors.New("claim a job: no job named")
	}
	ids = ids[:min(len(ids), maxCandidates)]
	c := claim{ids: ids, device: device, at: at}
	var got int64 // 0: none taken (IDs start at 1)
	var err error
	if s.claimer != nil {
		got, err = s.claimer(ctx, c)
	} else {
		q, args := s.claimSQL(c)
		err = s.statement(ctx, func(ctx context.Context, db querier) error {
			got = 0
			err := db.QueryRowContext(ctx, q, args...).Scan(&got)
			if errors.Is(err, sql.ErrNoRows) {
				return nil
			}
			return err
		})
	}
	if err != nil {
		return 0, fmt.Errorf("claim %s: %w", jobsNamed(ids), err)
	}
	if got == 0 {
		return 0, s.claimRefused(ctx, ids, at)
	}
	// No NOTIFY: the other hosts that hold the job queued drop it at
	// their next read of the queue, and a claim of it meanwhile takes the
	// next job it names; a read of the whole queue by every host for
	// each claim cost more than it saved.
	return got, nil
}

// claim is one ClaimFirst: the first free job of ids, for device, at.
type claim struct {
	ids    []int64
	device string
	at     time.Time
}

// claimSQL is c's statement and its arguments. It returns the ID of the
// job it took, or no row.
func (s *sqlDB) claimSQL(c claim) (string, []any) {
	args, in := withIDs([]any{Running, c.device, nanos(c.at), s.host, Queued}, c.ids)
	var order strings.Builder
	for i := range c.ids {
		fmt.Fprintf(&order, " WHEN %s THEN %d", in[i], i)
	}
	q := `UPDATE jobs SET state = $1, run_device = $2, started = $3, claim_host = $4, cleanup = 0
		WHERE id = (SELECT id FROM jobs WHERE id IN (` + strings.Join(in, ", ") + `) AND state = $5
			ORDER BY CASE id` + order.String() + ` END LIMIT 1` + s.lockRow + `) AND state = $5`
	if s.host != "" {
		q += ` AND EXISTS (SELECT 1 FROM hosts WHERE name = $4 AND lease_until >= $3)`
	}
	return q + ` RETURNING id`, args
}

// claimRefused says why a claim of ids changed nothing: the host's lease
// (ErrLeaseExpired), no such job (ErrNotFound, one job), or the jobs'
// states (ErrConflict), as read after the claim, in one read.
func (s *sqlDB) claimRefused(ctx context.Context, ids []int64, at time.Time) error {
	what := "claim " + jobsNamed(ids)
	// The lease: -1 if the host is not registered (0 in a lab of one host,
	// which holds none).
	var state, host string
	var gone []int64
	lease := int64(0)
	found := true
	leaseQ := `COALESCE((SELECT lease_until FROM hosts WHERE name = $1), -1)`
	var err error
	if len(ids) == 1 {
		err = s.db.QueryRowContext(ctx, `SELECT state, claim_host, `+leaseQ+` FROM jobs WHERE id = $2`, s.host, ids[0]).
			Scan(&state, &host, &lease)
		if errors.Is(err, sql.ErrNoRows) {
			found = false
			err = s.db.QueryRowContext(ctx, `SELECT `+leaseQ, s.host).Scan(&lease)
		}
	} else {
		gone, lease, err = s.goneOf(ctx, ids, leaseQ)
	}
	switch {
	case err != nil:
		return fmt.Errorf("%s: %w", what, err)
	case s.host != "" && lease < 0:
		return fmt.Errorf("%s: host %s is not registered: %w", what, s.host, ErrLeaseExpired)
	case s.host != "" && lease < nanos(at):
		return fmt.Errorf("%s: host %s's lease ran out at %s: %w", what, s.host, fromNanos(lease).UTC().Format(time.RFC3339Nano), ErrLeaseExpired)
	case len(ids) > 1:
		return &ClaimRefusedError{IDs: ids, Gone: gone}
	case !found:
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	case state == Queued:
		return fmt.Errorf("%s: another host is taking it: %w", what, ErrConflict)
	case state == Running && host != "":
		return fmt.Errorf("%s: it runs under host %s's claim: %w", what, host, ErrConflict)
	}
	return fmt.Errorf("%s: it is %s: %w", what, state, ErrConflict)
}

// withIDs appends ids to a statement's args and returns them with the
// ids' placeholders, in order ("$6", "$7", ...).
func withIDs(args []any, ids []int64) ([]any, []string) {
	in := make([]string, len(ids))
	for i, id := range ids {
		args = append(args, id)
		in[i] = "$" + strconv.Itoa(len(args))
	}
	return args, in
}

// goneOf reads, in one query, which of ids are no longer queued and the
// host's lease (leaseQ, with the host as $1).
func (s *sqlDB) goneOf(ctx context.Context, ids []int64, leaseQ string) (gone []int64, lease int64, err error) {
	args, in := withIDs([]any{s.host, Queued}, ids)
	rows, err := s.db.QueryContext(ctx, `SELECT 0, `+leaseQ+`
		UNION ALL SELECT id, 0 FROM jobs WHERE id IN (`+strings.Join(in, ", ")+`) AND state <> $2`, args...)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	for rows.Next() {
		var id, l int64
		if err := rows.Scan(&id, &l); err != nil {
			return nil, 0, err
		}
		if id == 0 {
			lease = l
		} else {
			gone = append(gone, id)
		}
	}
	return gone, lease, rows.Err()
}

// jobsNamed names jobs in a message: "job 4", "jobs 4, 5, 9".
func jobsNamed(ids []int64) string {
	if len(ids) == 1 {
		return "job " + strconv.FormatInt(ids[0], 10)
	}
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.FormatInt(id, 10)
	}
	return "jobs " + strings.Join(s, ", ")
}

// FinishJob ends a job that is in state from (Queued: canceled before it
// ran; Running: it ran, and then under this store's host's claim).
// ErrConflict if it is in another state, or runs under another host's
// claim (this host lost it: its lease ran out and another host ended the
// job).
func (s *sqlDB) FinishJob(ctx context.Context, id int64, from string, f Finish) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		q := `UPDATE jobs SET state = $1, outcome = $2, reason = $3, finished = $4, result = $5
			WHERE id = $6 AND state = $7`
		args := []any{Finished, f.Outcome, f.Reason, nanos(f.At), f.Result, id, from}
		if from == Running {
			// A job claimed before the lab had hosts has no claim host.
			q += ` AND claim_host IN ($8, '')`
			args = append(args, s.host)
		}
		res, err := tx.Exec(q, args...)
		return changed(tx, res, err, id, "finish")
	})
	if err == nil && from == Queued {
		s.notifyQueue(QueueNews{Whole: true})
	}
	return err
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
	var state, host string
	err = tx.QueryRow(`SELECT state, claim_host FROM jobs WHERE id = $1`, id).Scan(&state, &host)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s job %d: %w", what, id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("%s job %d: %w", what, id, err)
	}
	switch {
	case state == Running && host != "":
		return fmt.Errorf("%s job %d: it runs under host %s's claim: %w", what, id, host, ErrConflict)
	}
	return fmt.Errorf("%s job %d: it is %s: %w", what, id, state, ErrConflict)
}

// SetDevices records the states of devices, in one transaction.
func (s *sqlDB) SetDevices(ctx context.Context, devs []Device) error {
	if len(devs) == 0 {
		return nil
	}
	// By name: two hosts writing the same devices take their row locks
	// in one order, so neither waits for the other (PostgreSQL).
	devs = slices.SortedFunc(slices.Values(devs), func(a, b Device) int { return cmp.Compare(a.Name, b.Name) })
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
func (s *sqlDB) Devices(ctx context.Context) ([]Device, error) {
	out, err := queryAll(ctx, s.db, func(row scanner) (Device, error) {
		var d Device
		var since, maint int64
		err := row.Scan(&d.Name, &d.State, &d.Reason, &since, &maint, &d.MaintenanceReason)
		d.Since, d.Maintenance = fromNanos(since), maint != 0
		return d, err
	}, `SELECT name, state, reason, since, maintenance, maintenance_reason FROM devices ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	return out, nil
}

type scanner interface{ Scan(dest ...any) error }

// queryAll runs the query q and reads every row it returns with scan.
func queryAll[T any](ctx context.Context, db *sql.DB, scan func(scanner) (T, error), q string, args ...any) ([]T, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return scanAll(rows, scan)
}

// scanAll reads every row of rows with scan, and closes them.
func scanAll[T any](rows *sql.Rows, scan func(scanner) (T, error)) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

func scanJob(row scanner) (Job, error) {
	var j Job
	var tags string
	var submitted, started, finished int64
	if err := row.Scan(&j.ID, &j.Name, &j.File, &j.Dir, &j.Spec, &j.Device, &j.DeviceType, &tags, &j.Priority,
		&j.Submitter, &j.State, &j.RunDevice, &j.Outcome, &j.Reason, &submitted, &started, &finished, &j.Result, &j.Host); err != nil {
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

// RetryJob adds j, queued, as the attempt after job of.
func (s *sqlDB) RetryJob(ctx context.Context, of int64, j Job) (Job, error) {
	j.RunDevice = ""
	j, vals, err := s.newJob(j)
	if err != nil {
		return Job{}, err
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		// Lock job of first (a write that changes nothing): of two
		// processes retrying it at once, the second waits here and then
		// sees the first one's retry.
		res, err := tx.Exec(`UPDATE jobs SET state = state WHERE id = $1`, of)
		if err != nil {
			return fmt.Errorf("retry job %d: %w", of, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("retry job %d: %w", of, err)
		} else if n == 0 {
			return fmt.Errorf("retry job %d: %w", of, ErrNotFound)
		}
		var first int64
		err = tx.QueryRow(`SELECT COALESCE((SELECT first FROM job_attempts WHERE job = $1), $1)
			FROM jobs WHERE id = $1`, of).Scan(&first)
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
		var state string
		if err := tx.QueryRow(jobsInsert.sql(1), vals...).Scan(&j.ID, &state); err != nil {
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
	s.notifyQueue(QueueNews{Whole: true}) // a retry: its hosts read its earlier attempts
	return j, nil
}

// Attempts returns the attempts of the job id belongs to, first first.
func (s *sqlDB) Attempts(ctx context.Context, id int64) ([]Job, error) {
	var first int64
	err := s.db.QueryRowContext(ctx, `SELECT first FROM job_attempts WHERE job = $1`, id).Scan(&first)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		first = id
	case err != nil:
		return nil, fmt.Errorf("attempts of job %d: %w", id, err)
	}
	out, err := queryAll(ctx, s.db, scanJob, `SELECT `+jobColumns+` FROM jobs
		WHERE id = $1 OR id IN (SELECT job FROM job_attempts WHERE first = $1) ORDER BY id`, first)
	if err != nil {
		return nil, fmt.Errorf("attempts of job %d: %w", id, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("job %d: %w", id, ErrNotFound)
	}
	return out, nil
}

// idsChunk is how many IDs one query names (Retries, a JobFilter's IDs),
// well below either database's bound on a statement's parameters.
const idsChunk = 500

// Retries returns those of ids that are later attempts of a job.
func (s *sqlDB) Retries(ctx context.Context, ids []int64) (map[int64]bool, error) {
	out := map[int64]bool{}
	for chunk := range slices.Chunk(ids, idsChunk) {
		args, in := withIDs(nil, chunk)
		got, err := queryAll(ctx, s.db, scanID, `SELECT job FROM job_attempts WHERE job IN (`+strings.Join(in, ", ")+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("retries among %d jobs: %w", len(ids), err)
		}
		for _, id := range got {
			out[id] = true
		}
	}
	return out, nil
}

// SetReservation records a device's reservation.
func (s *sqlDB) SetReservation(ctx context.Context, r Reservation) error {
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
func (s *sqlDB) DeleteReservation(ctx context.Context, device string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.Exec(`DELETE FROM reservations WHERE device = $1`, device); err != nil {
			return fmt.Errorf("delete reservation of %s: %w", device, err)
		}
		return nil
	})
}

// Reservations returns every reservation, by device.
func (s *sqlDB) Reservations(ctx context.Context) ([]Reservation, error) {
	out, err := queryAll(ctx, s.db, func(row scanner) (Reservation, error) {
		var r Reservation
		var since, until int64
		err := row.Scan(&r.Device, &r.Owner, &r.Reason, &since, &until)
		r.Since, r.Until = fromNanos(since), fromNanos(until)
		return r, err
	}, `SELECT device, owner, reason, since, until FROM reservations ORDER BY device`)
	if err != nil {
		return nil, fmt.Errorf("list reservations: %w", err)
	}
	return out, nil
}

// DeleteFinishedJobs removes finished jobs that finished before before or
// lie beyond the newest keep finished jobs, oldest first, at most limit,
// in one transaction.
func (s *sqlDB) DeleteFinishedJobs(ctx context.Context, before time.Time, keep, limit int) ([]int64, error) {
	if before.IsZero() && keep <= 0 {
		return nil, nil
	}
	args := []any{Finished}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	var which []string
	if !before.IsZero() {
		which = append(which, "finished < "+arg(nanos(before)))
	}
	if keep > 0 {
		which = append(which, "id NOT IN (SELECT id FROM jobs WHERE state = $1 ORDER BY id DESC LIMIT "+arg(keep)+")")
	}
	mine := ""
	if s.host != "" {
		// Several hosts: each removes the jobs it ran (their directories
		// are in its state directory), and those that never ran.
		mine = " AND claim_host IN (" + arg(s.host) + ", '')"
	}
	q := `DELETE FROM jobs WHERE id IN (
		SELECT id FROM jobs WHERE state = $1` + mine + ` AND (` + strings.Join(which, " OR ") + `) ORDER BY id`
	if limit > 0 {
		q += " LIMIT " + arg(limit)
	}
	q += ") RETURNING id"
	var ids []int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		ids = ids[:0]
		rows, err := tx.Query(q, args...)
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
