package nfs

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
	"time"
)

// Server is an nfs-ganesha that labctl's tools start themselves (the
// simulated lab, the bench, tests): its configuration, pid file, log and
// recovery data in one directory, NFSv4 on a free loopback port. A real lab
// runs ganesha as a service instead (docs/diskless.md). Linux only, like
// nfs-ganesha itself.
type Server struct {
	// Config is what labctl needs to manage its exports on it (Host is
	// 127.0.0.1: set the address nodes use).
	Config GaneshaConfig
	// MainConfig is the server's own configuration file, which includes
	// Config.ExportsDir/exports.conf.
	MainConfig string
	cmd        *exec.Cmd
	done       chan error
	stop       sync.Once
}

// ErrNotInstalled is StartServer's error on a machine without ganesha.nfsd.
var ErrNotInstalled = errors.New("nfs-ganesha is not installed (Debian packages nfs-ganesha nfs-ganesha-vfs)")

// ServerPIDFile is the pid file of the server StartServer starts in dir.
func ServerPIDFile(dir string) string { return filepath.Join(dir, "ganesha.pid") }

// StartServer starts ganesha.nfsd (Debian packages nfs-ganesha and
// nfs-ganesha-vfs) with everything under dir, logging at INFO so that the
// export list after each reload is in its log, and returns once it
// listens. With keep it outlives this process (stop it by its pid file);
// otherwise it dies with it.
func StartServer(ctx context.Context, dir string, keep bool) (*Server, error) {
	bin, err := exec.LookPath("ganesha.nfsd")
	if err != nil {
		return nil, ErrNotInstalled
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &Server{
		Config: GaneshaConfig{
			ExportsDir: filepath.Join(dir, "exports"),
			PIDFile:    ServerPIDFile(dir),
			LogFile:    filepath.Join(dir, "ganesha.log"),
			Host:       "127.0.0.1",
			Port:       port,
		},
		MainConfig: filepath.Join(dir, "ganesha.conf"),
		done:       make(chan error, 1),
	}
	if err := os.MkdirAll(s.Config.ExportsDir, 0o700); err != nil {
		return nil, err
	}
	index := filepath.Join(s.Config.ExportsDir, "exports.conf")
	if err := os.WriteFile(index, nil, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(s.MainConfig, []byte(MainConfig("127.0.0.1", port, filepath.Join(dir, "recovery"), index)), 0o600); err != nil {
		return nil, err
	}
	s.cmd = exec.Command(bin, "-F", "-f", s.MainConfig, "-L", s.Config.LogFile, "-p", s.Config.PIDFile, "-N", "NIV_INFO")
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if !keep {
		s.cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start ganesha.nfsd: %w", err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	// Ready: the NFS port accepts and the pid file is written.
	deadline := time.After(time.Minute)
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
		if err == nil {
			c.Close()
			if _, err := os.Stat(s.Config.PIDFile); err == nil {
				return s, nil
			}
		}
		select {
		case err := <-s.done:
			s.done <- err
			return nil, fmt.Errorf("ganesha.nfsd exited: %v%s", err, s.logTail())
		case <-deadline:
			s.Stop()
			return nil, fmt.Errorf("ganesha.nfsd did not listen on port %d within a minute%s", port, s.logTail())
		case <-ctx.Done():
			s.Stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop kills the server (for a test, the fault "NFS server not running")
// and waits for it; later calls do nothing.
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

func (s *Server) logTail() string {
	lines := strings.Split(strings.TrimSpace(s.Log()), "\n")
	return fmt.Sprintf(" (log %s):\n%s", s.Config.LogFile, strings.Join(lines[max(0, len(lines)-20):], "\n"))
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
