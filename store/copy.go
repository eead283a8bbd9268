package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// copyTables are the tables Copy moves, with their columns, in an order
// that keeps references valid (jobs before their attempts).
var copyTables = []struct {
	name    string
	columns []string
	key     string
	serial  bool // its key comes from a sequence, set past the copied rows
}{
	{"jobs", []string{"id", "name", "file", "dir", "spec", "device", "device_type", "tags", "priority", "submitter",
		"state", "run_device", "outcome", "reason", "submitted", "started", "finished", "result", "claim_host", "cleanup"}, "id", true},
	{"job_attempts", []string{"job", "first", "retry_of"}, "job", false},
	{"devices", []string{"name", "state", "reason", "since", "maintenance", "maintenance_reason"}, "name", false},
	{"reservations", []string{"device", "owner", "reason", "since", "until"}, "device", false},
	{"audit", []string{"id", "at", "who", "role", "remote", "action", "device", "job", "detail", "result", "error"}, "id", true},
}

// CopyCount is how many rows of a table Copy moved.
type CopyCount struct {
	Table string
	Rows  int
}

// ErrNotEmpty: the target of Copy already holds a lab's data.
var ErrNotEmpty = errors.New("the target store is not empty")

// Copy moves everything from (a lab's SQLite database) holds into to (a
// new PostgreSQL database): jobs with their results and IDs, attempts,
// device states, reservations and the audit trail, as one transaction on
// to, from one consistent read of from. It refuses (ErrNotEmpty) a target
// that holds any row: IDs are kept (job directories and people refer to
// them), so they cannot mix with another lab's. New jobs and audit
// entries in to get IDs after the copied ones.
func Copy(ctx context.Context, from *SQLite, to *Postgres) ([]CopyCount, error) {
	src, err := from.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", from.path, err)
	}
	defer src.Rollback()
	dst, err := to.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", to.where, err)
	}
	defer dst.Rollback()
	for _, t := range copyTables {
		var found bool
		if err := dst.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM `+t.name+`)`).Scan(&found); err != nil {
			return nil, fmt.Errorf("write %s: %w", to.where, err)
		}
		if found {
			return nil, fmt.Errorf("%w: %s has rows in table %s (copy into a new database)", ErrNotEmpty, to.where, t.name)
		}
	}
	var counts []CopyCount
	for _, t := range copyTables {
		n, err := copyTable(ctx, src, dst, t.name, t.columns, t.key)
		if err != nil {
			return nil, fmt.Errorf("copy table %s from %s to %s: %w", t.name, from.path, to.where, err)
		}
		if t.serial {
			_, err := dst.ExecContext(ctx, `SELECT setval(pg_get_serial_sequence('`+t.name+`', '`+t.key+`'),
				COALESCE(MAX(`+t.key+`), 0) + 1, false) FROM `+t.name)
			if err != nil {
				return nil, fmt.Errorf("copy table %s: set its sequence: %w", t.name, err)
			}
		}
		counts = append(counts, CopyCount{Table: t.name, Rows: n})
	}
	if err := dst.Commit(); err != nil {
		return nil, fmt.Errorf("write %s: %w", to.where, err)
	}
	return counts, nil
}

func copyTable(ctx context.Context, src, dst *sql.Tx, table string, columns []string, key string) (int, error) {
	cols := strings.Join(columns, ", ")
	rows, err := src.QueryContext(ctx, `SELECT `+cols+` FROM `+table+` ORDER BY `+key)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	ph := make([]string, len(columns))
	for i := range ph {
		ph[i] = "$" + strconv.Itoa(i+1)
	}
	insert, err := dst.PrepareContext(ctx, `INSERT INTO `+table+` (`+cols+`) VALUES (`+strings.Join(ph, ", ")+`)`)
	if err != nil {
		return 0, err
	}
	defer insert.Close()
	values := make([]any, len(columns))
	ptrs := make([]any, len(columns))
	for i := range values {
		ptrs[i] = &values[i]
	}
	n := 0
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return n, err
		}
		if _, err := insert.ExecContext(ctx, values...); err != nil {
			return n, err
		}
		n++
	}
	return n, rows.Err()
}
