package store

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// AuditEntry is one record of the audit trail: an action a person took
// (or tried to) through the daemon. The store only appends them; nothing
// in the Store changes or removes one.
type AuditEntry struct {
	ID     int64
	At     time.Time
	Who    string // the API token's name
	Role   string
	Remote string // the client's address
	Action string
	Device string
	Job    int64
	Detail string
	Result string // ok, refused, failed (the daemon's words)
	Error  string
}

// AuditFilter selects audit entries.
type AuditFilter struct {
	Device string    // if set, entries about this device
	Who    string    // if set, entries by this token
	Since  time.Time // if set, entries at or after it
	Limit  int       // if positive, the newest Limit entries
}

// auditInsert inserts audit entries.
var auditInsert = rowInsert{
	into: `INSERT INTO audit (at, who, role, remote, action, device, job, detail, result, error) VALUES `,
	row:  plainRow(10), back: "''",
}

// AddAudit appends e to the audit trail (e.At: now if zero) and returns
// its ID.
func (s *sqlDB) AddAudit(ctx context.Context, e AuditEntry) (int64, error) {
	if e.At.IsZero() {
		e.At = time.Now()
	}
	vals := []any{e.At.UnixNano(), e.Who, e.Role, e.Remote, e.Action, e.Device, e.Job, e.Detail, e.Result, e.Error}
	// Every submit is audited: a burst of them, one statement
	// (PostgreSQL).
	got, err := s.insertRow(ctx, auditInsert, vals)
	if err != nil {
		return 0, fmt.Errorf("store audit entry %s by %s: %w", e.Action, e.Who, err)
	}
	return got.id, nil
}

// Audit returns the entries f selects, oldest first.
func (s *sqlDB) Audit(ctx context.Context, f AuditFilter) ([]AuditEntry, error) {
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.Device != "" {
		where = append(where, "device = "+arg(f.Device))
	}
	if f.Who != "" {
		where = append(where, "who = "+arg(f.Who))
	}
	if !f.Since.IsZero() {
		// Times are nanoseconds, which end in 2262.
		if f.Since.After(time.Unix(0, math.MaxInt64)) {
			return nil, nil
		}
		where = append(where, "at >= "+arg(f.Since.UnixNano()))
	}
	q := `SELECT id, at, who, role, remote, action, device, job, detail, result, error FROM audit`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY id DESC"
	if f.Limit > 0 {
		q += " LIMIT " + arg(f.Limit)
	}
	out, err := queryAll(ctx, s.db, func(row scanner) (AuditEntry, error) {
		var e AuditEntry
		var at int64
		err := row.Scan(&e.ID, &at, &e.Who, &e.Role, &e.Remote, &e.Action, &e.Device, &e.Job, &e.Detail, &e.Result, &e.Error)
		e.At = time.Unix(0, at)
		return e, err
	}, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit entries: %w", err)
	}
	for i, k := 0, len(out)-1; i < k; i, k = i+1, k-1 {
		out[i], out[k] = out[k], out[i]
	}
	return out, nil
}
