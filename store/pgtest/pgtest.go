// Package pgtest runs a PostgreSQL server for a package's tests: started
// on first use (initdb and postgres from Debian's postgresql package, in a
// temporary directory, on a free loopback port), one per test binary, and
// stopped when the tests end; each test gets a fresh database on it.
//
// The server refuses to run as root, so when the tests run as root it
// runs as the postgres user (which the package creates); otherwise as the
// tests' own user. The server is the postgres program run as the test
// binary's child (rather than daemonised by pg_ctl) so that it dies with
// the binary (a parent-death signal), also when a test panics; Main stops
// it otherwise.
//
// A package using it calls Main from its TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// and each test asks for a database with URL. Without the PostgreSQL
// binaries, URL skips the test loudly, or fails it when
// LABCTL_REQUIRE_SIMLAB=1 (make test, which installs them).
package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/labctl/labctl/internal/testutil"
)

// Server is a running PostgreSQL server.
type Server struct {
	Host string // 127.0.0.1
	Port int
	User string // the superuser, without password (trust on loopback)
	dir  string
	data string
	cred *syscall.Credential
	bin  string
	cmd  *exec.Cmd
	exit chan struct{} // closed when the server process ended
	log  string        // the server's log file
	dbs  atomic.Int64
}

var (
	mainUsed bool
	once     sync.Once
	server   *Server
	startErr error
)

// Main runs the package's tests and then stops the server, if one was
// started; it exits with the tests' status.
func Main(m *testing.M) {
	mainUsed = true
	code := m.Run()
	if server != nil {
		server.Stop()
	}
	os.Exit(code)
}

// URL returns the URL of a new, empty database on the package's server
// (started on first use). It skips the test when PostgreSQL is not
// installed, or fails it with LABCTL_REQUIRE_SIMLAB=1.
func URL(t testing.TB) string {
	t.Helper()
	s := Shared(t)
	u, err := s.NewDatabase()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return u
}

// Shared returns the package's server, started on first use; it skips or
// fails the test as URL does when there is none.
func Shared(t testing.TB) *Server {
	t.Helper()
	if !mainUsed {
		t.Fatal("pgtest: call pgtest.Main(m) from the package's TestMain, which stops the server")
	}
	once.Do(func() { server, startErr = Start() })
	if startErr != nil {
		unavailable(t, startErr)
	}
	return server
}

// Own starts a server of the test's own (for a test that pauses or stops
// it), stopped when the test ends; it skips or fails the test as URL does
// when there is none.
func Own(t testing.TB) *Server {
	t.Helper()
	s, err := Start()
	if err != nil {
		unavailable(t, err)
	}
	t.Cleanup(s.Stop)
	return s
}

// unavailable ends a test whose server did not start: a skip (a failure
// with LABCTL_REQUIRE_SIMLAB=1) when PostgreSQL is not installed, a
// failure for any other reason.
func unavailable(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, errNotInstalled) {
		testutil.SkipOrFail(t, fmt.Errorf("PostgreSQL unavailable: %w (install Debian's postgresql package: make deps)", err))
	}
	t.Fatalf("pgtest: PostgreSQL required but unavailable: %v", err)
}

var errNotInstalled = errors.New("no PostgreSQL server binaries (initdb, postgres)")

// binDir finds the directory of initdb and postgres: the newest
// /usr/lib/postgresql/*/bin, or PATH.
func binDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil && isExec(filepath.Join(filepath.Dir(p), "postgres")) {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("%w under /usr/lib/postgresql/*/bin or in PATH", errNotInstalled)
}

func isExec(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// Start initialises a cluster in a new temporary directory and starts a
// server on it, listening on a free loopback port only.
func Start() (*Server, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	parent := os.TempDir()
	if os.Geteuid() == 0 && !othersCanEnter(parent) {
		parent = "/tmp" // the postgres user must reach its directory
	}
	removeStale(parent)
	dir, err := os.MkdirTemp(parent, "labctl-pgtest-")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "owner"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s := &Server{Host: "127.0.0.1", User: "postgres", dir: dir, bin: bin, log: filepath.Join(dir, "server.log")}
	cred, err := s.credential()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	initdb := s.command(cred, "initdb", "--pgdata", data, "--username", s.User, "--auth", "trust",
		"--no-locale", "--encoding", "UTF8", "--no-sync")
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	s.data, s.cred = data, cred
	for try := 0; ; try++ {
		err = s.start(cred, data, 0)
		if err == nil {
			return s, nil
		}
		if try == 2 {
			os.RemoveAll(dir)
			return nil, err
		}
	}
}

// othersCanEnter reports whether every user may pass through dir and
// each directory above it.
func othersCanEnter(dir string) bool {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		if d == filepath.Dir(d) {
			return true
		}
	}
}

// removeStale removes the directories of servers whose test binary died
// without stopping them (a panic: the server died with it): those whose
// owner file names a test binary that is gone; without an owner file,
// those whose server's pid file names no process, and those without one
// (initdb never finished) once they are an hour old. A directory whose
// test binary lives is never touched (initdb's own processes come and go
// while it runs).
func removeStale(parent string) {
	dirs, _ := filepath.Glob(filepath.Join(parent, "labctl-pgtest-*"))
	for _, dir := range dirs {
		if b, err := os.ReadFile(filepath.Join(dir, "owner")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && syscall.Kill(pid, 0) == syscall.ESRCH {
				os.RemoveAll(dir)
			}
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid"))
		if err != nil {
			if fi, err := os.Stat(dir); err == nil && time.Since(fi.ModTime()) > time.Hour {
				os.RemoveAll(dir)
			}
			continue
		}
		line, _, _ := strings.Cut(string(b), "\n")
		if pid, err := strconv.Atoi(strings.TrimSpace(line)); err == nil && syscall.Kill(pid, 0) == syscall.ESRCH {
			os.RemoveAll(dir)
		}
	}
}

// credential is the user the server runs as: postgres when the tests run
// as root, nil (the tests' own) otherwise.
func (s *Server) credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("the tests run as root, which PostgreSQL refuses, and there is no postgres user to run it as: %v", err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func (s *Server) command(cred *syscall.Credential, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "HOME=" + s.dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// start runs the server on port (0: a free one) and waits until it
// takes connections.
func (s *Server) start(cred *syscall.Credential, data string, port int) error {
	if port == 0 {
		p, err := freePort()
		if err != nil {
			return err
		}
		port = p
	}
	logf, err := os.OpenFile(s.log, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	// Durability settings off: a test database need not survive a crash.
	cmd := s.command(cred, "postgres", "-D", data, "-p", strconv.Itoa(port), "-h", s.Host,
		"-c", "unix_socket_directories=", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=200", "-c", "shared_buffers=32MB")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	s.cmd, s.Port, s.exit = cmd, port, make(chan struct{})
	go func() { cmd.Wait(); close(s.exit) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := s.ping()
		if err == nil {
			return nil
		}
		select {
		case <-s.exit:
			return fmt.Errorf("postgres exited at start:\n%s", s.logTail())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("postgres did not take connections in 30s: %v\n%s", err, s.logTail())
		}
	}
}

func (s *Server) ping() error {
	db, err := sql.Open("pgx", s.url("postgres"))
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return db.PingContext(ctx)
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(s.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) url(db string) string {
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", s.User, s.Host, s.Port, db)
}

// NewDatabase creates an empty database and returns its URL.
func (s *Server) NewDatabase() (string, error) {
	name := fmt.Sprintf("test_%d", s.dbs.Add(1))
	if err := s.Exec("CREATE DATABASE " + name + " STRATEGY FILE_COPY"); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return s.url(name), nil
}

// Exec runs SQL statements on the server's postgres database, as the
// superuser.
func (s *Server) Exec(query string, args ...any) error {
	db, err := sql.Open("pgx", s.url("postgres"))
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.Exec(query, args...)
	return err
}

// Pause stops the server (fast shutdown: connections are ended) and
// keeps its data: Resume starts it again on the same port. For tests of
// a database that goes away.
func (s *Server) Pause() {
	s.kill()
}

// Resume starts a paused server again, on its port, with its data.
func (s *Server) Resume() error {
	return s.start(s.cred, s.data, s.Port)
}

// URLOf returns the URL of database db on the server.
func (s *Server) URLOf(db string) string { return s.url(db) }

// Pid is the server's main process (the postmaster), whose children are
// its backends and background workers; 0 while it is paused.
func (s *Server) Pid() int {
	select {
	case <-s.exit:
		return 0
	default:
	}
	return s.cmd.Process.Pid
}

// Stop stops the server (fast shutdown: connections are ended) and
// removes its directory.
func (s *Server) Stop() {
	s.kill()
	os.RemoveAll(s.dir)
}

// kill stops the server process.
func (s *Server) kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-s.exit:
		case <-time.After(10 * time.Second):
			s.cmd.Process.Kill()
			<-s.exit
		}
	}
}
