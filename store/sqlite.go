package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

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
//
// The schema version is the database header's user_version, which
// labctl has always checked: a labctl older than the database refuses it.
type SQLite struct {
	sqlDB
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

// gather waits for the first item of a batch, then takes those already
// waiting behind it, maxBatch at most; false once stop is closed.
func gather[T any](items <-chan T, stop <-chan struct{}) ([]T, bool) {
	var batch []T
	select {
	case it := <-items:
		batch = append(batch, it)
	case <-stop:
		return nil, false
	}
	for len(batch) < maxBatch {
		select {
		case it := <-items:
			batch = append(batch, it)
		default:
			return batch, true
		}
	}
	return batch, true
}

// handOver gives it to the loop that reads items (gather) and waits for
// its answer on done. Once the loop has it, it is carried out even if
// ctx ends first.
func handOver[T, R any](ctx context.Context, items chan<- T, stop <-chan struct{}, it T, done <-chan R) (R, error) {
	var zero R
	select {
	case items <- it:
	case <-stop:
		return zero, errors.New("store closed")
	case <-ctx.Done():
		return zero, ctx.Err()
	}
	select {
	case r := <-done:
		return r, nil
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// OpenSQLite opens (creating if needed) the database at path, with its
// directory, and brings its schema to SchemaVersion.
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
		"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	db.SetMaxOpenConns(4)
	s := &SQLite{sqlDB: sqlDB{db: db}, path: path, writes: make(chan *write), done: make(chan struct{})}
	s.sqlDB.write = s.write
	s.sqlDB.statement = func(ctx context.Context, fn func(ctx context.Context, db querier) error) error {
		return s.write(ctx, func(tx *sql.Tx) error { return fn(context.WithoutCancel(ctx), tx) })
	}
	if err := s.migrate(); err != nil {
		db.Close()
		if errors.Is(err, ErrNewerSchema) {
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
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
		batch, ok := gather(s.writes, s.done)
		if !ok {
			return
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
	err, herr := handOver(ctx, s.writes, s.done, w, w.result)
	if herr != nil {
		return herr
	}
	return err
}

// migrate brings the schema to SchemaVersion in one transaction.
func (s *SQLite) migrate() error {
	ctx := context.Background()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var version int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return err
	}
	err = migrate(ctx, tx, version, func(m migration) string { return m.sqlite }, func(v int) error {
		_, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v))
		return err
	})
	if err != nil {
		return err
	}
	return tx.Commit()
}

// SchemaVersion returns the database's schema version.
func (s *SQLite) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v)
	return v, err
}

// Close stops the writer and closes the database. Writes in flight finish
// first.
func (s *SQLite) Close() error {
	s.once.Do(func() { close(s.done) })
	return s.db.Close()
}

// CheckWrite commits a write of the database header's user_version (to
// the value it has): it fails as any write would on a read-only database
// or a full disk.
func (s *SQLite) CheckWrite(ctx context.Context) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(fmt.Sprintf("PRAGMA user_version = %d", SchemaVersion))
		return err
	})
	if err != nil {
		return fmt.Errorf("store %s cannot write: %w", s.path, err)
	}
	return nil
}
