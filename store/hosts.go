package store

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// A lab may have several hosts (one `labctl serve` per rack) on one
// PostgreSQL database. Each host registers itself and the devices of its
// own lab file, and holds a lease that it renews; the queue is the jobs
// table, shared. A host claims a job only for one of its own devices and
// only while its lease holds; the job then runs under that host's claim
// (jobs.claim_host), which every later write of the job checks. A host
// whose lease ran out is lost: one surviving host ends its running jobs
// (EndLostJobs, one guarded UPDATE, so exactly once) and marks them for
// cleanup, which the lost host does when it comes back (TakeCleanups)
// before it claims anything. A host that only lost touch with the
// database (a network split) finds, when it renews, that its claims are
// gone, and stops those jobs: a write under a lost claim is refused.

// Host is one host of a lab, as registered.
type Host struct {
	Name string
	// API is the address of the host's API (scheme://host:port), where
	// the other hosts reach it.
	API        string
	Started    time.Time
	LeaseUntil time.Time
}

// LabDevice is a device of the lab and the host that owns it.
type LabDevice struct {
	Name       string
	Host       string
	DeviceType string
	Tags       []string
}

// Errors of the hosts' methods.
var (
	// ErrDeviceTaken: a device another host has registered.
	ErrDeviceTaken = errors.New("device registered by another host")
	// ErrLeaseExpired: the host's lease has run out (or it never
	// registered): it may claim nothing until it renews.
	ErrLeaseExpired = errors.New("the host's lease has expired")
	// ErrHostNameTaken: another daemon (another labctl serve, started at
	// another time) holds the host's name.
	ErrHostNameTaken = errors.New("another labctl serve holds this host name")
)

// HostNameTakenError is the refusal (ErrHostNameTaken) of a host name
// whose lease another daemon holds: Host, as that daemon registered it.
type HostNameTakenError struct {
	Host Host
}

func (e *HostNameTakenError) Error() string {
	return fmt.Sprintf("%v: host %s is served by a labctl serve started at %s (API %s), lease until %s; two daemons with one host name would run the same devices: give one another [host] name, or stop the other",
		ErrHostNameTaken, e.Host.Name, e.Host.Started.UTC().Format(time.RFC3339Nano), e.Host.API, e.Host.LeaseUntil.UTC().Format(time.RFC3339Nano))
}

func (e *HostNameTakenError) Unwrap() error { return ErrHostNameTaken }

// Hosts is what the daemons of a lab with several hosts keep in their
// shared database. SQLite and PostgreSQL both implement it (a lab of one
// host on SQLite uses none of it).
type Hosts interface {
	// SetHost makes name the host whose claims this store makes.
	// Called before any use.
	SetHost(name string)
	// RegisterHost records host h (lease until h.LeaseUntil) and that
	// it owns devs, in one transaction: devices it registered before and
	// owns no more are dropped. h.Started says which daemon registers: a
	// daemon registers again with the same Started. A device another host
	// registered is refused (ErrDeviceTaken, naming both hosts), and so is
	// the name while a daemon started at another time holds its lease at
	// now (a *HostNameTakenError); nothing is written then.
	RegisterHost(ctx context.Context, now time.Time, h Host, devs []LabDevice) error
	// RenewLease moves this store's host's lease to until; it returns
	// ErrLeaseExpired, and leaves the lease, if it had run out before
	// now and another host has ended jobs under its claims since (they
	// were lost: the host must stop them and register again),
	// ErrHostNameTaken if another daemon has registered the name since
	// this one's lease ran out, and ErrNotFound if the host is not
	// registered.
	RenewLease(ctx context.Context, now, until time.Time) error
	// Hosts lists the lab's hosts, by name.
	Hosts(ctx context.Context) ([]Host, error)
	// LabDevices lists every host's devices, by name.
	LabDevices(ctx context.Context) ([]LabDevice, error)
	// EndLostJobs ends incomplete the running jobs of every other host
	// whose lease ran out before now, with the reason "host NAME lost:
	// ...", and marks them for their host's cleanup. It returns the jobs
	// it ended: of several hosts that call it at once, each job is ended
	// by one.
	EndLostJobs(ctx context.Context, now time.Time) ([]Job, error)
	// TakeCleanups returns the jobs other hosts ended under this store's
	// host's claims (see EndLostJobs) and clears their marks: their
	// nodes are to be powered off and given their local boot entries.
	TakeCleanups(ctx context.Context) ([]Job, error)
}

var _ Hosts = (*sqlDB)(nil)

// SetHost makes name the host of the store's claims.
func (s *sqlDB) SetHost(name string) { s.host = name }

// RegisterHost records the host and its devices.
func (s *sqlDB) RegisterHost(ctx context.Context, now time.Time, h Host, devs []LabDevice) error {
	if h.Name == "" {
		return errors.New("register host: no host name")
	}
	devs = slices.SortedFunc(slices.Values(devs), func(a, b LabDevice) int { return strings.Compare(a.Name, b.Name) })
	err := s.write(ctx, func(tx *sql.Tx) error {
		var had Host
		var started, lease int64
		err := tx.QueryRow(`SELECT api, started, lease_until FROM hosts WHERE name = $1`, h.Name).Scan(&had.API, &started, &lease)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("register host %s: %w", h.Name, err)
		}
		if err == nil && started != nanos(h.Started) && lease >= nanos(now) {
			had.Name, had.Started, had.LeaseUntil = h.Name, fromNanos(started), fromNanos(lease)
			return &HostNameTakenError{Host: had}
		}
		// Lock the hosts' rows in name order (PostgreSQL): two hosts
		// registering the same device at once see each other's rows.
		if _, err := tx.Exec(`INSERT INTO hosts (name, api, started, lease_until) VALUES ($1, $2, $3, $4)
			ON CONFLICT (name) DO UPDATE SET api = excluded.api, started = excluded.started, lease_until = excluded.lease_until`,
			h.Name, h.API, nanos(h.Started), nanos(h.LeaseUntil)); err != nil {
			return fmt.Errorf("register host %s: %w", h.Name, err)
		}
		var taken []LabDevice
		for _, d := range devs {
			tags, err := json.Marshal(nonNil(d.Tags))
			if err != nil {
				return err
			}
			var owner string
			err = tx.QueryRow(`INSERT INTO lab_devices (name, host, device_type, tags) VALUES ($1, $2, $3, $4)
				ON CONFLICT (name) DO UPDATE SET device_type = excluded.device_type, tags = excluded.tags
					WHERE lab_devices.host = excluded.host
				RETURNING host`, d.Name, h.Name, d.DeviceType, string(tags)).Scan(&owner)
			if errors.Is(err, sql.ErrNoRows) {
				if err := tx.QueryRow(`SELECT host FROM lab_devices WHERE name = $1`, d.Name).Scan(&owner); err != nil {
					return fmt.Errorf("register host %s: device %s: %w", h.Name, d.Name, err)
				}
				taken = append(taken, LabDevice{Name: d.Name, Host: owner})
				continue
			}
			if err != nil {
				return fmt.Errorf("register host %s: device %s: %w", h.Name, d.Name, err)
			}
		}
		if len(taken) > 0 {
			return DevicesTaken(h.Name, taken)
		}
		names := make([]any, 0, len(devs)+1)
		names = append(names, h.Name)
		var ph []string
		for i, d := range devs {
			names = append(names, d.Name)
			ph = append(ph, fmt.Sprintf("$%d", i+2))
		}
		q := `DELETE FROM lab_devices WHERE host = $1`
		if len(ph) > 0 {
			q += ` AND name NOT IN (` + strings.Join(ph, ", ") + `)`
		}
		if _, err := tx.Exec(q, names...); err != nil {
			return fmt.Errorf("register host %s: %w", h.Name, err)
		}
		return nil
	})
	if err == nil {
		s.started.Store(nanos(h.Started))
	}
	return err
}

// DevicesTaken is the refusal (ErrDeviceTaken) of host's devices that
// other hosts have registered: taken, each with the host that has it.
func DevicesTaken(host string, taken []LabDevice) error {
	say := make([]string, 0, len(taken))
	for _, d := range taken {
		say = append(say, fmt.Sprintf("device %s is host %s's, and host %s claims it too", d.Name, d.Host, host))
	}
	return fmt.Errorf("%w: %s (a device belongs to one host: take it out of one lab file, and restart that host first if it is the one giving it up)",
		ErrDeviceTaken, strings.Join(say, "; "))
}

// RenewLease moves the host's lease.
func (s *sqlDB) RenewLease(ctx context.Context, now, until time.Time) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		var had Host
		var started, lease int64
		err := tx.QueryRow(`SELECT api, started, lease_until FROM hosts WHERE name = $1`, s.host).Scan(&had.API, &started, &lease)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("renew the lease of host %s: %w", s.host, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("renew the lease of host %s: %w", s.host, err)
		}
		if mine := s.started.Load(); mine != 0 && started != mine {
			had.Name, had.Started, had.LeaseUntil = s.host, fromNanos(started), fromNanos(lease)
			return fmt.Errorf("renew the lease of host %s: registered again since its lease ran out: %w", s.host, &HostNameTakenError{Host: had})
		}
		if lease < nanos(now) {
			var lost int
			if err := tx.QueryRow(`SELECT COUNT(*) FROM jobs WHERE claim_host = $1 AND cleanup = 1`, s.host).Scan(&lost); err != nil {
				return fmt.Errorf("renew the lease of host %s: %w", s.host, err)
			}
			if lost > 0 {
				return fmt.Errorf("renew the lease of host %s: it ran out at %s and other hosts ended %d of its jobs: %w",
					s.host, fromNanos(lease).UTC().Format(time.RFC3339Nano), lost, ErrLeaseExpired)
			}
		}
		if _, err := tx.Exec(`UPDATE hosts SET lease_until = $1 WHERE name = $2 AND started = $3`, nanos(until), s.host, started); err != nil {
			return fmt.Errorf("renew the lease of host %s: %w", s.host, err)
		}
		return nil
	})
}

// Hosts lists the hosts.
func (s *sqlDB) Hosts(ctx context.Context) ([]Host, error) {
	out, err := queryAll(ctx, s.db, func(row scanner) (Host, error) {
		var h Host
		var started, lease int64
		err := row.Scan(&h.Name, &h.API, &started, &lease)
		h.Started, h.LeaseUntil = fromNanos(started), fromNanos(lease)
		return h, err
	}, `SELECT name, api, started, lease_until FROM hosts ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	return out, nil
}

// LabDevices lists every host's devices.
func (s *sqlDB) LabDevices(ctx context.Context) ([]LabDevice, error) {
	out, err := queryAll(ctx, s.db, func(row scanner) (LabDevice, error) {
		var d LabDevice
		var tags string
		if err := row.Scan(&d.Name, &d.Host, &d.DeviceType, &tags); err != nil {
			return d, err
		}
		if err := json.Unmarshal([]byte(tags), &d.Tags); err != nil {
			return d, fmt.Errorf("device %s: tags: %w", d.Name, err)
		}
		if len(d.Tags) == 0 {
			d.Tags = nil
		}
		return d, nil
	}, `SELECT name, host, device_type, tags FROM lab_devices ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list the lab's devices: %w", err)
	}
	return out, nil
}

// EndLostJobs ends the running jobs of lost hosts, each once.
func (s *sqlDB) EndLostJobs(ctx context.Context, now time.Time) ([]Job, error) {
	out, err := s.updateJobs(ctx, `UPDATE jobs SET state = $1, outcome = 'incomplete',
			reason = 'host ' || claim_host || ' lost: its lease ran out while the job ran', finished = $2, cleanup = 1
		WHERE state = $3 AND claim_host <> '' AND claim_host <> $4
			AND claim_host IN (SELECT name FROM hosts WHERE lease_until < $2)
		RETURNING `+jobColumns, Finished, nanos(now), Running, s.host)
	if err != nil {
		return nil, fmt.Errorf("end the jobs of lost hosts: %w", err)
	}
	return out, nil
}

// TakeCleanups returns and unmarks the jobs other hosts ended under this
// host's claims.
func (s *sqlDB) TakeCleanups(ctx context.Context) ([]Job, error) {
	out, err := s.updateJobs(ctx, `UPDATE jobs SET cleanup = 0 WHERE cleanup = 1 AND claim_host = $1 RETURNING `+jobColumns, s.host)
	if err != nil {
		return nil, fmt.Errorf("jobs to clean up after: %w", err)
	}
	return out, nil
}

// updateJobs runs q, an UPDATE of jobs RETURNING jobColumns, in one
// write, and returns the jobs it changed, by ID.
func (s *sqlDB) updateJobs(ctx context.Context, q string, args ...any) ([]Job, error) {
	var out []Job
	err := s.write(ctx, func(tx *sql.Tx) error {
		rows, err := tx.Query(q, args...)
		if err != nil {
			return err
		}
		out, err = scanAll(rows, scanJob)
		return err
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b Job) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}
