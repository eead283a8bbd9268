package bench

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Env is where the bench works: the boot root every server serves, a
// scratch directory for configs and logs, and the programs it runs.
type Env struct {
	Root   string // files served: pxelinux.0, initrd.img, disk.img
	Work   string // configs, logs
	Self   string // the labctl-bench binary (its bootserver subcommand is labctl's server)
	ATFTPD string // atftpd, unpacked beside (conflicts with tftpd-hpa as a package)
	// Peers, when not empty, names the only peers to run beside labctl
	// (a narrower A/B run); the others are reported as skipped.
	Peers []string
}

// Server is one server under test, started by the bench on loopback in its
// own control group.
type Server struct {
	Name    string
	Proto   string // "tftp" or "http"
	Addr    string // host:port it listens on
	Windows bool   // grants RFC 7440 windowsize
	URL     string // http: where the image is
	Note    string // settings worth printing

	// bootserver: the bench's own labctl boot server, which prints its
	// image URL and "ready" on stdout.
	bootserver bool
	argv       []string
	env        *Env
	cmd        *exec.Cmd
	group      *Group
	exit       chan struct{}
	// Restarts counts how often the server died and was started again.
	Restarts int
}

// Group is the server's control group (CPU and memory accounting).
func (s *Server) Group() *Group { return s.group }

// candidate is a server to compare and the program it needs.
type candidate struct {
	s        *Server
	bin, pkg string // the program, and the Debian package (or a hint) that has it
}

// available returns the candidates whose program is here, ready to start,
// and a line for each of the others.
func available(env *Env, all []candidate) (servers []*Server, skipped []string) {
	for _, a := range all {
		if a.s.Name != "labctl" && len(env.Peers) > 0 && !slices.Contains(env.Peers, a.s.Name) {
			skipped = append(skipped, a.s.Name+": not among -peers")
			continue
		}
		if why := missing(a.bin, a.pkg); why != "" {
			skipped = append(skipped, a.s.Name+": "+why)
			continue
		}
		a.s.env = env
		servers = append(servers, a.s)
	}
	return servers, skipped
}

// missing returns a reason the server cannot run here, or "".
func missing(bin, pkg string) string {
	if _, err := exec.LookPath(bin); err != nil {
		return fmt.Sprintf("%s not found (Debian package %s; `make deps` installs it)", bin, pkg)
	}
	return ""
}

// TFTPServers returns the TFTP servers to compare, and a line for each
// one that cannot run here. Caps are raised for a storm (atftpd's
// --maxthread defaults to 100 and dnsmasq's --tftp-max to 50: both refuse
// the rest); labctl runs with its defaults.
func TFTPServers(env *Env, n int) (servers []*Server, skipped []string) {
	limit := fmt.Sprint(max(2*n, 100))
	all := []candidate{
		{&Server{Name: "labctl", Proto: "tftp", Addr: "127.0.0.1:16910", Windows: true, Note: "defaults", bootserver: true,
			argv: []string{env.Self, "bootserver", "-root", env.Root, "-tftp", "127.0.0.1:16910"}}, env.Self, "(the bench itself)"},
		{&Server{Name: "tftpd-hpa", Proto: "tftp", Addr: "127.0.0.1:16903", Note: "fork per transfer",
			argv: []string{"in.tftpd", "-4", "-L", "-a", "127.0.0.1:16903", "-s", env.Root}}, "in.tftpd", "tftpd-hpa"},
		{&Server{Name: "atftpd", Proto: "tftp", Addr: "127.0.0.1:16904", Windows: true, Note: "--maxthread " + limit,
			argv: []string{env.ATFTPD, "--daemon", "--no-fork", "--port", "16904", "--bind-address", "127.0.0.1",
				"--maxthread", limit, "--logfile", "/dev/null", env.Root}}, env.ATFTPD, "atftpd (apt-get download, unpacked)"},
		{&Server{Name: "dnsmasq", Proto: "tftp", Addr: "127.0.0.1:69", Note: "--tftp-max " + limit,
			argv: []string{"dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--pid-file=", "--port=0",
				"--listen-address=127.0.0.1", "--bind-interfaces", "--enable-tftp", "--tftp-root=" + env.Root,
				"--tftp-max=" + limit, "--quiet-tftp", "--log-facility=/dev/null"}}, "dnsmasq", "dnsmasq-base"},
	}
	if old := os.Getenv("LABCTL_BENCH_OLD"); old != "" {
		// An A/B run: an older labctl-bench's boot server as one more server.
		all = slices.Insert(all, 1, candidate{&Server{Name: "labctl-old", Proto: "tftp", Addr: "127.0.0.1:16911", Windows: true,
			Note: "LABCTL_BENCH_OLD", bootserver: true,
			argv: []string{old, "bootserver", "-root", env.Root, "-tftp", "127.0.0.1:16911"}}, old, "LABCTL_BENCH_OLD"})
	}
	return available(env, all)
}

// HTTPServers returns the HTTP servers to compare. labctl serves the image
// as a published job image (a per-job URL whose byte counter moves as it
// is read: progress accounting on).
func HTTPServers(env *Env, image string) (servers []*Server, skipped []string) {
	conf := filepath.Join(env.Work, "nginx")
	all := []candidate{
		{&Server{Name: "labctl", Proto: "http", Addr: "127.0.0.1:18081", Note: "published job image, byte counter on", bootserver: true,
			argv: []string{env.Self, "bootserver", "-root", env.Root, "-http", "127.0.0.1:18081", "-publish", filepath.Join(env.Root, image)}}, env.Self, "(the bench itself)"},
		{&Server{Name: "nginx", Proto: "http", Addr: "127.0.0.1:18082", URL: "http://127.0.0.1:18082/" + image, Note: "sendfile on, workers = cores",
			argv: []string{"nginx", "-p", conf, "-c", filepath.Join(conf, "nginx.conf"), "-e", filepath.Join(conf, "error.log")}}, "nginx", "nginx-light"},
		{&Server{Name: "busybox", Proto: "http", Addr: "127.0.0.1:18083", URL: "http://127.0.0.1:18083/" + image, Note: "fork per connection",
			argv: []string{"busybox", "httpd", "-f", "-p", "127.0.0.1:18083", "-h", env.Root}}, "busybox", "busybox-static"},
	}
	if old := os.Getenv("LABCTL_BENCH_OLD"); old != "" {
		all = slices.Insert(all, 1, candidate{&Server{Name: "labctl-old", Proto: "http", Addr: "127.0.0.1:18084",
			Note: "LABCTL_BENCH_OLD", bootserver: true,
			argv: []string{old, "bootserver", "-root", env.Root, "-http", "127.0.0.1:18084", "-publish", filepath.Join(env.Root, image)}}, old, "LABCTL_BENCH_OLD"})
	}
	return available(env, all)
}

// nginxConf is a minimal foreground nginx as an admin would set it up for
// large static files.
const nginxConf = `daemon off;
master_process on;
worker_processes auto;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 65;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  default_type application/octet-stream;
  server {
    listen %[2]s;
    root %[3]s;
  }
}
`

// Start starts the server and waits until it answers.
func (s *Server) Start() error {
	if s.Name == "nginx" {
		dir := filepath.Join(s.env.Work, "nginx")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), fmt.Appendf(nil, nginxConf, dir, s.Addr, s.env.Root), 0o644); err != nil {
			return err
		}
	}
	if s.group == nil {
		s.group = NewGroup(s.Name + "-" + s.Proto)
	}
	cmd := s.group.Command(s.argv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	logf, err := os.OpenFile(filepath.Join(s.env.Work, s.Name+"-"+s.Proto+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stderr = logf
	var stdout *bufio.Scanner
	if s.bootserver {
		pipe, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		stdout = bufio.NewScanner(pipe)
	} else {
		cmd.Stdout = logf
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.Name, err)
	}
	s.cmd = cmd
	s.group.SetPid(cmd.Process.Pid)
	s.exit = make(chan struct{})
	if stdout != nil {
		// labctl's bootserver says "image URL" and "ready".
		for stdout.Scan() {
			line := stdout.Text()
			if u, ok := strings.CutPrefix(line, "image "); ok {
				s.URL = u
			}
			if line == "ready" {
				break
			}
		}
		go func() {
			for stdout.Scan() {
			}
		}()
	}
	go func() { cmd.Wait(); close(s.exit) }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if !s.Alive() {
			return fmt.Errorf("%s exited at start (log: %s)", s.Name, logf.Name())
		}
		if s.answers() {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.Stop()
	return fmt.Errorf("%s does not answer on %s after 10s (log: %s)", s.Name, s.Addr, logf.Name())
}

// answers probes the server once: a TFTP request for a file that is not
// there must get an ERROR; an HTTP port must accept a connection.
func (s *Server) answers() bool {
	if s.Proto == "http" {
		c, err := net.DialTimeout("tcp", s.Addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	}
	raddr, err := net.ResolveUDPAddr("udp4", s.Addr)
	if err != nil {
		return false
	}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return false
	}
	defer c.Close()
	c.WriteToUDP([]byte("\x00\x01labctl-bench-probe\x00octet\x00"), raddr)
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 600)
	n, _, err := c.ReadFromUDP(buf)
	return err == nil && n >= 4 && buf[1] == 5
}

// Alive reports whether the server process still runs.
func (s *Server) Alive() bool {
	if s.exit == nil {
		return false
	}
	select {
	case <-s.exit:
		return false
	default:
		return true
	}
}

// EnsureRunning restarts a server that died (atftpd aborts past 1023
// descriptors) and counts it.
func (s *Server) EnsureRunning() (restarted bool, err error) {
	if s.Alive() {
		return false, nil
	}
	s.Restarts++
	return true, s.Start()
}

// Stop ends the server and everything it forked (its process group),
// SIGTERM first, then SIGKILL after 3s.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	pgid := s.cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-s.exit:
	case <-time.After(3 * time.Second):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-s.exit
	}
	// Children that left the process group (tftpd-hpa's forks keep it)
	// are still in the control group: end them too.
	if s.group.dir != "" {
		for _, p := range s.group.Pids() {
			syscall.Kill(p, syscall.SIGKILL)
		}
	}
	time.Sleep(100 * time.Millisecond)
	s.group.Remove()
	s.group, s.cmd = nil, nil // a Start after this makes a new group
}

// ErrNoServers is returned when no server of a kind can run.
var ErrNoServers = errors.New("no server to measure")
