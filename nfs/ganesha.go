// Package nfs exports diskless roots to lab nodes through an NFS server
// the lab runs: nfs-ganesha (userspace), managed through its own
// configuration include and reload mechanism.
//
// labctl owns one directory (ExportsDir): one file per export it made,
// and exports.conf, the list of %include lines for exactly those files,
// which the server's main configuration includes once:
//
//	%include "/var/lib/labctl/nfs/exports.conf"
//
// An export or a withdrawal rewrites that list (a new file renamed into
// place) and asks the server to reload its exports (SIGHUP to the pid in
// its pid file); the change counts as made when the server's log says
// the reread is complete and names no error in labctl's files. labctl
// never edits the server's other configuration or exports.
package nfs

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// GaneshaConfig says where the lab's nfs-ganesha is and how nodes reach it.
type GaneshaConfig struct {
	// ExportsDir is labctl's directory of export files (created 0700).
	ExportsDir string
	// PIDFile is the server's pid file (ganesha.nfsd -p); a reload is a
	// SIGHUP to that process.
	PIDFile string
	// LogFile is the server's log (ganesha.nfsd -L), where reloads are
	// confirmed.
	LogFile string
	// Host is the server's address as nodes reach it (on a kernel command
	// line: an IP address).
	Host string
	// Port is the server's NFS port (NFS_CORE_PARAM NFS_Port); 2049 if 0.
	Port int
	// FirstExportID is the first Export_Id labctl uses; it takes IDs from
	// there up, one per export alive at a time. 40000 if 0. Keep the
	// lab's own exports below it.
	FirstExportID int
	// ReloadTimeout bounds the wait for a reload's confirmation; 30s if 0.
	ReloadTimeout time.Duration
}

// indexName is the file of %include lines the server's configuration
// includes.
const indexName = "exports.conf"

// Ganesha manages labctl's exports on one nfs-ganesha server.
type Ganesha struct {
	cfg GaneshaConfig
	log *slog.Logger

	lock  *os.File         // held: this process owns ExportsDir
	mu    sync.Mutex       // one change to the export files at a time
	roots map[string]*root // exported directory -> its export
}

// root is one directory's export on the server: a single EXPORT block
// for every Export of that directory, to the union of their clients
// (nfs-ganesha wants each Path exported once).
type root struct {
	dir     string
	file    string // export file name in ExportsDir
	id      int    // Export_Id
	pseudo  string
	clients map[netip.Addr]int // client -> Exports that hold it
}

// Close lets another process take the exports directory. Exports still
// held stay until that process starts (it removes them).
func (g *Ganesha) Close() error { return g.lock.Close() }

// NewGanesha takes over cfg.ExportsDir (one process at a time: a lock
// file in it; Close releases it): export files left there by a
// labctl that stopped without withdrawing them are removed, the include
// list is written empty and, if there were any and the server runs, it
// reloads without them. It does not need the server to be running.
func NewGanesha(cfg GaneshaConfig, log *slog.Logger) (*Ganesha, error) {
	if cfg.Port == 0 {
		cfg.Port = 2049
	}
	if cfg.FirstExportID == 0 {
		cfg.FirstExportID = 40000
	}
	if cfg.ReloadTimeout == 0 {
		cfg.ReloadTimeout = 30 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.ExportsDir == "" || cfg.PIDFile == "" || cfg.LogFile == "" {
		return nil, errors.New("nfs: ganesha needs exports_dir, pid_file and log_file")
	}
	if _, err := netip.ParseAddr(cfg.Host); err != nil {
		return nil, fmt.Errorf("nfs: host %q: want the IP address nodes reach the server at", cfg.Host)
	}
	if cfg.FirstExportID < 1 || cfg.FirstExportID > 60000 {
		return nil, fmt.Errorf("nfs: first export id %d: want 1 to 60000", cfg.FirstExportID)
	}
	if err := os.MkdirAll(cfg.ExportsDir, 0o700); err != nil {
		return nil, fmt.Errorf("nfs: %w", err)
	}
	lock, err := lockDir(cfg.ExportsDir)
	if err != nil {
		return nil, fmt.Errorf("nfs: %w", err)
	}
	g := &Ganesha{cfg: cfg, log: log, lock: lock, roots: map[string]*root{}}
	old, _ := filepath.Glob(filepath.Join(cfg.ExportsDir, "labctl-*.conf"))
	for _, f := range old {
		log.Warn("nfs: removing an export left by an earlier run", "file", f)
		os.Remove(f)
	}
	if err := g.writeIndex(); err != nil {
		lock.Close()
		return nil, err
	}
	if len(old) > 0 {
		if _, err := g.running(); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), cfg.ReloadTimeout)
			defer cancel()
			if err := g.reload(ctx, ""); err != nil {
				log.Warn("nfs: reload after removing old exports", "err", err)
			}
		}
	}
	return g, nil
}

// Export is one holder of a directory's export: what a job withdraws
// when it ends. Jobs that export the same directory share its pseudo
// path; the server lets each client in while one of its Exports holds it.
type Export struct {
	g      *Ganesha
	r      *root
	client netip.Addr
	once   sync.Once
	err    error
}

// Source is what the node mounts: HOST:/labctl/TOKEN.
func (e *Export) Source() string { return e.g.cfg.Host + ":" + e.r.pseudo }

// Options are the mount options the server needs: NFS 4.1 on its port.
func (e *Export) Options() string { return "vers=4.1,port=" + strconv.Itoa(e.g.cfg.Port) }

// ID is the export's Export_Id.
func (e *Export) ID() int { return e.r.id }

// Pseudo is the export's path in the server's NFSv4 name space.
func (e *Export) Pseudo() string { return e.r.pseudo }

// Export exports dir read-only to the NFS client at client (the address
// the server sees the node connect from), under a pseudo path with a
// random component (/labctl/TOKEN), and returns once the server has
// reloaded its exports. A directory already exported is not exported
// again: its export lets the new client in too (no reload when it was
// in already) and keeps its pseudo path. Root is not squashed (a root
// file system's files belong to root), writes are refused.
func (g *Ganesha) Export(ctx context.Context, dir string, client netip.Addr) (*Export, error) {
	if !filepath.IsAbs(dir) || strings.ContainsAny(dir, "\"\n\r\\") {
		return nil, fmt.Errorf("nfs: export %q: want an absolute path without quotes or backslashes", dir)
	}
	if !client.IsValid() {
		return nil, errors.New("nfs: export: no client address")
	}
	if _, err := g.running(); err != nil {
		return nil, err
	}

	g.mu.Lock()
	defer g.mu.Unlock()
	r := g.roots[dir]
	if r != nil && r.clients[client] > 0 {
		r.clients[client]++
		g.log.Info("nfs: export shared", "dir", dir, "pseudo", r.pseudo, "client", client.String(), "id", r.id)
		return &Export{g: g, r: r, client: client}, nil
	}
	fresh := r == nil
	if fresh {
		tok := make([]byte, 16)
		rand.Read(tok)
		r = &root{dir: dir, file: "labctl-" + hex.EncodeToString(tok) + ".conf", id: g.freeID(),
			pseudo: "/labctl/" + hex.EncodeToString(tok), clients: map[netip.Addr]int{}}
		g.roots[dir] = r
	}
	r.clients[client] = 1
	undo := func() {
		delete(r.clients, client)
		if fresh {
			g.drop(r)
			g.writeIndex()
		} else {
			g.writeExport(r)
		}
		g.reload(context.WithoutCancel(ctx), "")
	}
	if err := g.writeExport(r); err != nil {
		undo()
		return nil, err
	}
	// The include list changes only with a new export file.
	if fresh {
		if err := g.writeIndex(); err != nil {
			undo()
			return nil, err
		}
	}
	if err := g.reload(ctx, r.file); err != nil {
		undo()
		return nil, err
	}
	g.log.Info("nfs: exported", "dir", dir, "pseudo", r.pseudo, "client", client.String(), "id", r.id)
	return &Export{g: g, r: r, client: client}, nil
}

// writeExport writes r's export file: its directory to its clients.
func (g *Ganesha) writeExport(r *root) error {
	clients := make([]string, 0, len(r.clients))
	for c := range r.clients {
		clients = append(clients, c.String())
	}
	slices.Sort(clients)
	list := strings.Join(clients, ", ")
	block := fmt.Sprintf(`# labctl: %s to %s
EXPORT {
	Export_Id = %d;
	Path = "%s";
	Pseudo = "%s";
	Access_Type = None;
	Squash = No_Root_Squash;
	SecType = sys;
	Protocols = 4;
	Transports = TCP;
	PrivilegedPort = false;
	FSAL { Name = VFS; }
	CLIENT {
		Clients = %s;
		Access_Type = RO;
	}
}
`, r.dir, list, r.id, r.dir, r.pseudo, list)
	if err := writeAtomic(filepath.Join(g.cfg.ExportsDir, r.file), []byte(block)); err != nil {
		return fmt.Errorf("nfs: %w", err)
	}
	return nil
}

// Withdraw lets go of the export: its client is no longer let in once no
// other Export holds it, and the directory is no longer exported once no
// Export holds it; it returns when the server has reloaded its exports
// (at once when nothing changed). Later calls return the first one's
// result.
func (e *Export) Withdraw() error {
	e.once.Do(func() {
		g, r := e.g, e.r
		g.mu.Lock()
		defer g.mu.Unlock()
		if r.clients[e.client]--; r.clients[e.client] > 0 {
			return
		}
		delete(r.clients, e.client)
		if len(r.clients) == 0 {
			g.drop(r)
			if e.err = g.writeIndex(); e.err != nil {
				return
			}
		} else if e.err = g.writeExport(r); e.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), g.cfg.ReloadTimeout)
		defer cancel()
		e.err = g.reload(ctx, "")
		if e.err == nil {
			g.log.Info("nfs: withdrawn", "pseudo", r.pseudo, "client", e.client.String(), "id", r.id, "clients left", len(r.clients))
		}
	})
	return e.err
}

// Exports returns the pseudo paths of the exports labctl holds now.
func (g *Ganesha) Exports() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for _, r := range g.roots {
		out = append(out, r.pseudo)
	}
	slices.Sort(out)
	return out
}

// drop forgets r and removes its export file.
func (g *Ganesha) drop(r *root) {
	delete(g.roots, r.dir)
	os.Remove(filepath.Join(g.cfg.ExportsDir, r.file))
}

// freeID is the lowest Export_Id from FirstExportID that no export of
// labctl's holds.
func (g *Ganesha) freeID() int {
	used := map[int]bool{}
	for _, r := range g.roots {
		used[r.id] = true
	}
	id := g.cfg.FirstExportID
	for used[id] {
		id++
	}
	return id
}

// writeIndex writes the include list of labctl's export files.
func (g *Ganesha) writeIndex() error {
	names := make([]string, 0, len(g.roots))
	for _, r := range g.roots {
		names = append(names, r.file)
	}
	slices.Sort(names)
	var b bytes.Buffer
	b.WriteString("# labctl's exports (written by labctl: do not edit)\n")
	for _, n := range names {
		fmt.Fprintf(&b, "%%include \"%s\"\n", filepath.Join(g.cfg.ExportsDir, n))
	}
	if err := writeAtomic(filepath.Join(g.cfg.ExportsDir, indexName), b.Bytes()); err != nil {
		return fmt.Errorf("nfs: %w", err)
	}
	return nil
}

// running returns the server's pid, or an error that says why it is not
// running.
func (g *Ganesha) running() (int, error) {
	b, err := os.ReadFile(g.cfg.PIDFile)
	if err != nil {
		return 0, fmt.Errorf("nfs: nfs-ganesha is not running: pid file %s: %w", g.cfg.PIDFile, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("nfs: nfs-ganesha is not running: pid file %s holds %q", g.cfg.PIDFile, strings.TrimSpace(string(b)))
	}
	if err := alive(pid); err != nil {
		return 0, fmt.Errorf("nfs: nfs-ganesha is not running: no process %d (pid file %s)", pid, g.cfg.PIDFile)
	}
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if c := strings.TrimSpace(string(comm)); c != "" && !strings.HasPrefix(c, "ganesha") {
		return 0, fmt.Errorf("nfs: nfs-ganesha is not running: process %d (pid file %s) is %q", pid, g.cfg.PIDFile, c)
	}
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(g.cfg.Port)), 5*time.Second)
	if err != nil {
		return 0, fmt.Errorf("nfs: nfs-ganesha (pid %d) does not answer on port %d: %w", pid, g.cfg.Port, err)
	}
	conn.Close()
	return pid, nil
}

// Log lines of ganesha's export reload.
const (
	reloadDone   = "Reread exports complete"
	reloadFailed = "Error while parsing new configuration file"
)

// reload asks the server to reread its exports and waits until its log
// says it did. A configuration error the server reports about labctl's
// file named (or its index) is an error.
func (g *Ganesha) reload(ctx context.Context, name string) error {
	pid, err := g.running()
	if err != nil {
		return err
	}
	off := fileSize(g.cfg.LogFile)
	if err := hangUp(pid); err != nil {
		return fmt.Errorf("nfs: reload nfs-ganesha (pid %d): %w", pid, err)
	}
	ctx, cancel := context.WithTimeout(ctx, g.cfg.ReloadTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		text := readFrom(g.cfg.LogFile, off)
		var problems []string
		for _, l := range strings.Split(text, "\n") {
			if strings.Contains(l, ":CONFIG :") && (strings.Contains(l, "CRIT") || strings.Contains(l, "MAJ") || (strings.Contains(l, "WARN") && strings.Contains(l, "Config File"))) &&
				(strings.Contains(l, g.cfg.ExportsDir) || (name != "" && strings.Contains(l, name))) {
				problems = append(problems, strings.TrimSpace(l[strings.LastIndex(l, ":CONFIG :")+len(":CONFIG :"):]))
			}
			if strings.Contains(l, reloadFailed) {
				problems = append(problems, strings.TrimSpace(l[strings.Index(l, reloadFailed):]))
			}
		}
		if strings.Contains(text, reloadDone) || strings.Contains(text, reloadFailed) {
			if len(problems) > 0 {
				return fmt.Errorf("nfs: nfs-ganesha refused labctl's exports (%s): %s", g.cfg.LogFile, strings.Join(problems, "; "))
			}
			return nil
		}
		select {
		case <-ctx.Done():
			if _, err := g.running(); err != nil {
				return err
			}
			return fmt.Errorf("nfs: nfs-ganesha (pid %d) did not confirm the reload of its exports in its log %s within %s", pid, g.cfg.LogFile, g.cfg.ReloadTimeout)
		case <-tick.C:
		}
	}
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// readFrom reads a log file from offset (at most 1 MiB of it).
func readFrom(path string, off int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(io.NewSectionReader(f, off, 1<<20))
	return string(b)
}

// writeAtomic writes a file (0600) through a temporary file renamed over it.
func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// MainConfig is a ganesha.conf for a lab's (or a test's) server: NFSv4 only over TCP
// on bind:port, no grace period (a restarted server serves read-only roots at
// once), its recovery data under recovery, labctl's exports included from
// index.
func MainConfig(bind string, port int, recovery, index string) string {
	return fmt.Sprintf(`NFS_CORE_PARAM {
	Bind_addr = %s;
	NFS_Port = %d;
	Protocols = 4;
	Enable_NLM = false;
	Enable_RQUOTA = false;
}
NFSV4 {
	Graceless = true;
	RecoveryBackend = fs;
	RecoveryRoot = "%s";
}
NFS_KRB5 { Active_krb5 = false; }
%%include "%s"
`, bind, port, recovery, index)
}
