// Package nfstest runs a real nfs-ganesha server for tests: its own
// configuration, port, pid file, log and recovery directory in a
// temporary directory, stopped when the test ends.
package nfstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/labctl/labctl/internal/testutil"
	"github.com/labctl/labctl/nfs"
)

// Server is a running ganesha.nfsd.
type Server struct {
	// Config is what labctl needs to manage its exports on it (Host
	// 127.0.0.1: set the address nodes use).
	Config nfs.GaneshaConfig
	// MainConfig is the server's own configuration file, which includes
	// Config.ExportsDir/exports.conf.
	MainConfig string
	cmd        *exec.Cmd
	done       chan error
	stop       sync.Once
}

// Start starts ganesha.nfsd (Debian packages nfs-ganesha and
// nfs-ganesha-vfs) on a free loopback port, logging at INFO so that the
// export list after each reload is in its log. Without the program, or
// not as root, the test skips, or fails when LABCTL_REQUIRE_SIMLAB=1.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("ganesha.nfsd")
	if err != nil {
		testutil.SkipOrFail(t, fmt.Errorf("nfs-ganesha is not installed (Debian packages nfs-ganesha nfs-ganesha-vfs): %w", err))
	}
	if os.Geteuid() != 0 {
		testutil.SkipOrFail(t, errors.New("nfs-ganesha needs root"))
	}
	dir := t.TempDir()
	port := freePort(t)
	s := &Server{
		Config: nfs.GaneshaConfig{
			ExportsDir: filepath.Join(dir, "exports"),
			PIDFile:    filepath.Join(dir, "ganesha.pid"),
			LogFile:    filepath.Join(dir, "ganesha.log"),
			Host:       "127.0.0.1",
			Port:       port,
		},
		MainConfig: filepath.Join(dir, "ganesha.conf"),
		done:       make(chan error, 1),
	}
	if err := os.MkdirAll(s.Config.ExportsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	index := filepath.Join(s.Config.ExportsDir, "exports.conf")
	if err := os.WriteFile(index, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.MainConfig, []byte(nfs.MainConfig("127.0.0.1", port, filepath.Join(dir, "recovery"), index)), 0o600); err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(bin, "-F", "-f", s.MainConfig, "-L", s.Config.LogFile, "-p", s.Config.PIDFile, "-N", "NIV_INFO")
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start ganesha.nfsd: %v", err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			b, _ := os.ReadFile(s.Config.LogFile)
			lines := strings.Split(string(b), "\n")
			t.Logf("ganesha log (tail):\n%s", strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	// Ready: the NFS port accepts and the pid file is written.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
		if err == nil {
			c.Close()
			if _, err := os.Stat(s.Config.PIDFile); err == nil {
				return s
			}
		}
		select {
		case err := <-s.done:
			s.done <- err
			b, _ := os.ReadFile(s.Config.LogFile)
			t.Fatalf("ganesha.nfsd exited: %v\n%s", err, b)
		case <-ctx.Done():
			t.Fatalf("ganesha.nfsd did not listen on port %d within a minute", port)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop kills the server (the fault "NFS server not running") and waits
// for it; later calls do nothing.
func (s *Server) Stop() {
	s.stop.Do(func() {
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	})
}

// Log returns the server's log.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.Config.LogFile)
	return string(b)
}

// LiveExports returns the pseudo paths of the server's exports as its
// log lists them after its last reload (or start).
func (s *Server) LiveExports() []string {
	log := s.Log()
	if i := strings.LastIndex(log, "Exports after update"); i >= 0 {
		log = log[i:]
	}
	var out []string
	for _, l := range strings.Split(log, "\n") {
		_, rest, ok := strings.Cut(l, " pseudo (")
		if !ok || !strings.Contains(l, ":EXPORT :") {
			continue
		}
		p, _, _ := strings.Cut(rest, ")")
		out = append(out, p)
	}
	return out
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
