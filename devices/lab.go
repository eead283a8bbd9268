// Package devices loads a lab's configuration: the lab file (lab.toml),
// the device types it points to (how to power, boot, reach and log in to a
// kind of machine) and its devices (one machine each: BMC address and
// credentials, MAC, tags, and overrides of any device-type key).
//
// All files are TOML, decoded strictly (docs/architecture.md, "Files"):
// every problem is reported as "FILE:LINE: key.path: message", and [Load]
// reports all problems of all files at once. A device's [override] table is
// decoded into a copy of its device type's settings, so only the keys it
// gives change, and the result is checked as a whole.
//
// Passwords and tokens are never part of a loaded value: they are read from
// their file or environment variable when needed, as a [Secret], which
// prints as "[redacted]". Commands ([Command]) have no password field at
// all.
package devices

import (
	"cmp"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/internal/tomlfile"
)

// Config is the lab file.
type Config struct {
	Name string `toml:"name"`
	// DeviceTypes and Devices are directories of *.toml files, relative to
	// the lab file.
	DeviceTypes []string `toml:"device_types"`
	Devices     []string `toml:"devices"`
	// StateDir holds job directories and the store; relative to the lab
	// file, made absolute when loaded. Default "state".
	StateDir   string      `toml:"state_dir"`
	BootServer BootServer  `toml:"boot_server"`
	NFS        NFSServer   `toml:"nfs"`
	Server     Server      `toml:"server"`
	Images     Images      `toml:"images"`
	Health     LabHealth   `toml:"health"`
	Retention  Retention   `toml:"retention"`
	Jobs       JobDefaults `toml:"jobs"`
	Store      Store       `toml:"store"`
	// Host is this daemon's place in a lab of several hosts (with a
	// [store] url).
	Host LabHost `toml:"host"`
	// Webhooks get job ends and device state changes (see Webhook).
	Webhooks []Webhook `toml:"webhooks"`
	// Notify signs the events sent to jobs' notify URLs.
	Notify Notify `toml:"notify"`
}

// Store says where the daemon keeps its jobs and device states: without
// a URL, an SQLite database in the state directory; with one, a
// PostgreSQL database that several hosts' daemons may share.
type Store struct {
	// URL is postgres://user@host:port/database?sslmode=..., without a
	// password: that comes from PasswordFile (relative to the lab file;
	// made absolute when loaded) or PasswordEnv, or else from
	// PostgreSQL's own PGPASSWORD or ~/.pgpass.
	URL          string `toml:"url"`
	PasswordFile string `toml:"password_file"`
	PasswordEnv  string `toml:"password_env"`
}

// Password reads the store's password; an empty Secret when none is
// configured.
func (s Store) Password() (Secret, error) {
	return optionalSecret(s.PasswordFile, s.PasswordEnv, "store password")
}

// optionalSecret is readSecret for a secret the lab file may leave out:
// an empty Secret when neither file nor env is given. Errors start with
// what.
func optionalSecret(file, env, what string) (Secret, error) {
	if file == "" && env == "" {
		return Secret{}, nil
	}
	sec, err := readSecret(file, env)
	if err != nil {
		return Secret{}, fmt.Errorf("%s: %w", what, err)
	}
	return sec, nil
}

// CheckStoreURL says what is wrong with a store URL: one that does not
// parse, is not postgres:// or postgresql://, has no host, or holds a
// password (which would show in messages and process listings). Its
// messages never repeat a password.
func CheckStoreURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // without the URL, which may hold a password
		}
		return fmt.Errorf("does not parse as a URL (postgres://user@host:port/database?sslmode=...): %v", err)
	}
	_, hasPassword := u.User.Password()
	hasPassword = hasPassword || u.Query().Has("password")
	switch {
	case u.Scheme != "postgres" && u.Scheme != "postgresql":
		return fmt.Errorf("the scheme is %q: give a postgres:// URL (postgres://user@host:port/database?sslmode=...)", u.Scheme)
	case hasPassword:
		return fmt.Errorf("the URL holds a password: remove it and give password_file or password_env")
	case u.Hostname() == "":
		return fmt.Errorf("%s has no host: postgres://user@host:port/database?sslmode=...", u.Redacted())
	}
	return nil
}

// LabHost is one labctl serve of a lab whose hosts share a PostgreSQL
// store ([store] url): each host owns the devices of its own lab file.
type LabHost struct {
	// Name is the host's name in the lab; default: the machine's host
	// name (labctl serve --host overrides both).
	Name string `toml:"name"`
	// APIURL is how the other hosts reach this host's API,
	// http(s)://host:port; default: [server] listen as seen from here.
	APIURL string `toml:"api_url"`
	// TokenFile or TokenEnv hold the lab-internal credential, the same
	// on every host: the hosts forward to each other with it what only a
	// device's own host can do (power, consoles, logs). Without it a host
	// answers for its own devices only.
	TokenFile string `toml:"token_file"`
	TokenEnv  string `toml:"token_env"`
	// CAFile holds the PEM certificates (the lab's CA) this host checks
	// the other hosts' HTTPS APIs against when it forwards to them;
	// relative to the lab file; default: the system's roots.
	CAFile string `toml:"ca_file"`
	// Lease is how long a host counts as up after it last renewed
	// (default 15s); it renews every Poll (default 1s). A host whose
	// lease ran out is down, and its running jobs end incomplete.
	Lease time.Duration `toml:"lease"`
	Poll  time.Duration `toml:"poll"`
}

// Token reads the lab-internal credential; an empty Secret when none is
// configured.
func (h LabHost) Token() (Secret, error) {
	return optionalSecret(h.TokenFile, h.TokenEnv, "host token")
}

func (h *LabHost) check(doc *tomlfile.Document, dir string, shared bool) {
	if !shared && *h != (LabHost{}) {
		doc.Problemf("host", "needs a [store] url: hosts of one lab share a PostgreSQL database")
		return
	}
	if h.Name != "" && !tomlfile.ValidName(h.Name) {
		doc.Problemf("host.name", "%q: %s", h.Name, tomlfile.NameRule)
	}
	if h.APIURL != "" {
		if u, err := url.Parse(h.APIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
			doc.Problemf("host.api_url", "%q: want http(s)://host:port, as the other hosts reach this one", h.APIURL)
		}
	}
	checkSecretSource(doc, "host", "token", dir, &h.TokenFile, h.TokenEnv, "")
	if h.CAFile != "" {
		h.CAFile = resolve(dir, h.CAFile)
		if b, err := os.ReadFile(h.CAFile); err != nil {
			doc.Problemf("host.ca_file", "%v", err)
		} else if !x509.NewCertPool().AppendCertsFromPEM(b) {
			doc.Problemf("host.ca_file", "%s holds no PEM certificate: give the CA that signed the hosts' certificates", h.CAFile)
		}
	}
	if h.Lease < 0 || h.Poll < 0 {
		doc.Problemf("host.lease", "lease and poll must not be negative")
	}
	lease, poll := h.Lease, h.Poll
	if lease == 0 {
		lease = 15 * time.Second
	}
	if poll == 0 {
		poll = time.Second
	}
	if poll*2 > lease {
		doc.Problemf("host.poll", "%s: give at most half the lease (%s)", poll, lease)
	}
}

// LabHealth says when the daemon checks devices by itself.
type LabHealth struct {
	// Interval is how long a device may stay idle (or offline) before the
	// daemon checks its health again; zero: no periodic checks.
	Interval time.Duration `toml:"interval"`
	// Failures is how many checks in a row a device in service may fail
	// before it goes offline (default 1). One passing check brings an
	// offline device back.
	Failures int `toml:"failures"`
}

// JobDefaults are the lab's defaults for the job-file settings of the
// same names.
type JobDefaults struct {
	// Retries is how many times a job that ended incomplete (the lab went
	// wrong) is queued again (default DefaultRetries).
	Retries int `toml:"retries"`
	// QueueTimeout is how long a job may wait in the queue before it ends
	// canceled; zero: as long as it takes.
	QueueTimeout time.Duration `toml:"queue_timeout"`
}

// MaxRetries bounds the retries of a job (and the lab's default).
const MaxRetries = 10

// DefaultRetries is [jobs] retries when a lab file leaves it out.
const DefaultRetries = 1

// Images limits the images jobs deploy from URLs.
type Images struct {
	// AllowNetworks are networks (CIDR, e.g. "10.0.0.0/8", or one
	// address) that URL images may come from although they are
	// loopback, link-local, private or unspecified addresses, which are
	// refused otherwise: a lab's own image server is often on a private
	// network. Parsed into Networks when loaded.
	AllowNetworks []string       `toml:"allow_networks"`
	Networks      []netip.Prefix `toml:"-"`
	// MaxDownloadGiB caps the size of a downloaded image, in GiB; 0 means
	// the default (64).
	MaxDownloadGiB int64 `toml:"max_download_gib"`
	// SaveDir is where saved disk images go (labctl save, a job's
	// [save]): the only place a save writes on the lab's host; relative to
	// the lab file; default "images". Not inside state_dir: labctl keeps
	// that private, and deploy serves only files every user may read.
	SaveDir string `toml:"save_dir"`
}

// MaxDownload is the size limit of a downloaded image in bytes, 0 for
// the default.
func (im Images) MaxDownload() int64 { return im.MaxDownloadGiB << 30 }

// Retention says which finished jobs the daemon removes (their database
// rows and job directories), oldest first; queued and running jobs stay.
// Both bounds apply; a zero one does not. Without either, jobs are kept
// for ever.
type Retention struct {
	// MaxAge removes jobs that finished longer ago than this, e.g. "720h".
	MaxAge time.Duration `toml:"max_age"`
	// MaxJobs keeps this many finished jobs, the newest.
	MaxJobs int `toml:"max_jobs"`
}

// On reports whether any bound is set.
func (r Retention) On() bool { return r.MaxAge > 0 || r.MaxJobs > 0 }

// BootServer configures labctl's TFTP and HTTP boot server.
type BootServer struct {
	// Root holds pxelinux.0, ldlinux.c32 and the master kernels and
	// initrds; relative to the lab file, made absolute when loaded.
	Root       string `toml:"root"`
	TFTPListen string `toml:"tftp_listen"` // host:port, default ":69"
	HTTPListen string `toml:"http_listen"` // host:port
	// HTTPURL is how nodes reach the HTTP server, e.g. "http://10.0.2.2:16901".
	HTTPURL string `toml:"http_url"`
	// TFTPServer is the address nodes get as next-server in DHCP configs;
	// default: the host of HTTPURL. Each device type's [boot] names the
	// loader file DHCP gives its devices.
	TFTPServer string `toml:"tftp_server"`
}

// NFSServer is the lab's NFS server, which exports the roots of diskless
// jobs (boot.method = "nfs"). The lab runs it; labctl manages its own
// exports on it (package nfs). Without a server, nfs jobs end incomplete.
type NFSServer struct {
	// Server is the kind of server: "ganesha" (nfs-ganesha), or empty
	// for none.
	Server string `toml:"server"`
	// ExportsDir is labctl's directory of export files, which the
	// server's configuration includes (EXPORTS_DIR/exports.conf);
	// relative to the lab file; default STATE_DIR/nfs. One labctl process
	// uses it at a time.
	ExportsDir string `toml:"exports_dir"`
	// PIDFile and LogFile are the server's pid file and log (labctl
	// reloads the server with a signal and reads its confirmation).
	PIDFile string `toml:"pid_file"`
	LogFile string `toml:"log_file"`
	// Host is the server's IP address as nodes reach it; Port its NFS
	// port (default 2049).
	Host string `toml:"host"`
	Port int    `toml:"port"`
	// Client, if set, is the address the server sees every node connect
	// from, instead of each device's ip: one address for all nodes behind
	// a NAT, such as simlab's QEMU user-mode network ("127.0.0.1").
	Client string `toml:"client"`
	// FirstExportID is the first Export_Id labctl uses (default 40000).
	FirstExportID int `toml:"first_export_id"`
}

// Server configures the daemon (labctl serve).
type Server struct {
	Listen string  `toml:"listen"` // host:port, default "127.0.0.1:8470"
	Tokens []Token `toml:"tokens"`
	// TLS serves the API over HTTPS: tls_cert and tls_key are PEM files
	// (relative to the lab file), or tls = "self-signed" makes a
	// certificate in the state directory on first start, whose
	// fingerprint the daemon prints for clients to pin.
	TLS     string `toml:"tls"`
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
}

// SelfSignedTLS is the [server] tls setting that makes the daemon its own
// certificate.
const SelfSignedTLS = "self-signed"

// Token is an API bearer token the daemon accepts.
type Token struct {
	Name string `toml:"name"` // who uses it: logs, job submitters, console viewers
	// Role is what the token may do: viewer, submitter, operator or admin
	// (labctl.Role says what each may).
	Role labctl.Role `toml:"role"`
	// The token comes from a file (relative to the lab file; made absolute
	// when loaded) or an environment variable, read by [Token.Secret].
	TokenFile string `toml:"token_file"`
	TokenEnv  string `toml:"token_env"`
}

// Secret reads the token.
func (t Token) Secret() (Secret, error) {
	s, err := readSecret(t.TokenFile, t.TokenEnv)
	if err != nil {
		return Secret{}, fmt.Errorf("token %s: %w", t.Name, err)
	}
	return s, nil
}

// Lab is a loaded lab: its configuration, device types and devices, all
// checked.
type Lab struct {
	Config
	File        string                 // the lab file
	DeviceTypes map[string]*DeviceType // by name
	Devices     []*Device              // sorted by name
	// Warnings are problems that do not stop the lab from working, such as
	// a password file every user can read.
	Warnings []tomlfile.Problem
}

// Load reads the lab file at path, every device type and device it points
// to, and checks them together: device names, MACs and BMCs unique,
// device types known, overrides valid. It returns every problem found as a
// [*tomlfile.Error].
func Load(path string) (*Lab, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read lab config: %w", err)
	}
	lab := &Lab{
		Config: Config{
			StateDir:   "state",
			BootServer: BootServer{TFTPListen: ":69"},
			Server:     Server{Listen: "127.0.0.1:8470"},
			Health:     LabHealth{Failures: 1},
			Jobs:       JobDefaults{Retries: DefaultRetries},
		},
		File:        path,
		DeviceTypes: map[string]*DeviceType{},
	}
	doc, err := tomlfile.Decode(path, data, &lab.Config)
	if err != nil {
		return nil, err
	}
	lab.validate(doc)

	types, problems := loadDeviceTypes(lab.files(doc, "device_types", lab.Config.DeviceTypes))
	for name, dt := range types {
		if dt != nil {
			lab.DeviceTypes[name] = dt
		}
	}

	var docs []*tomlfile.Document
	for _, file := range lab.files(doc, "devices", lab.Config.Devices) {
		d, ddoc, err := parseDevice(file, types)
		if err != nil {
			problems = append(problems, tomlfile.Problems(file, err)...)
			continue
		}
		lab.checkUnique(d, ddoc)
		lab.Devices = append(lab.Devices, d)
		docs = append(docs, ddoc)
	}
	problems = append(problems, doc.Problems()...)
	for _, ddoc := range docs {
		problems = append(problems, ddoc.Problems()...)
	}
	if err := tomlfile.Check(problems); err != nil {
		return nil, err
	}
	lab.Warnings = problems // only warnings are left
	slices.SortFunc(lab.Devices, func(a, b *Device) int { return cmp.Compare(a.Name, b.Name) })
	return lab, nil
}

// LoadDeviceTypes loads every device type in the *.toml files of dirs. It
// returns the valid ones, and the problems of the others as an error.
func LoadDeviceTypes(dirs ...string) (map[string]*DeviceType, error) {
	var files []string
	for _, dir := range dirs {
		inDir, err := tomlFiles(dir)
		if err != nil {
			return nil, fmt.Errorf("load device types: %w", err)
		}
		files = append(files, inDir...)
	}
	types, problems := loadDeviceTypes(files)
	valid := map[string]*DeviceType{}
	for name, dt := range types {
		if dt != nil {
			valid[name] = dt
		}
	}
	return valid, tomlfile.Check(problems)
}

// loadDeviceTypes loads device-type files. types maps every name to its
// type, or to nil if the type has problems (devices are then not checked
// against it: its own problems say what is wrong).
func loadDeviceTypes(files []string) (types map[string]*DeviceType, problems []tomlfile.Problem) {
	types = map[string]*DeviceType{}
	typeFiles := map[string]string{}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".toml")
		if first, dup := typeFiles[name]; dup {
			problems = append(problems, tomlfile.Problem{File: file, Message: fmt.Sprintf("device type %q is already defined in %s", name, first)})
			continue
		}
		typeFiles[name] = file
		dt, err := LoadDeviceType(file)
		if err != nil {
			problems = append(problems, tomlfile.Problems(file, err)...)
		}
		types[name] = dt
	}
	return types, problems
}

// CheckBootFiles reports each loader file that the devices' boot settings
// name and the boot root does not have, at the device type's boot.file
// line (once per type and file) or at the device's override. A root that
// is not a directory here is one warning (a lab checked away from its boot
// server). labctl validate calls it; loading a lab does not, so that a lab
// whose root lacks a family's loaders still runs its other devices.
func (l *Lab) CheckBootFiles() []tomlfile.Problem {
	root := l.Config.BootServer.Root
	if root == "" {
		return nil
	}
	if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
		return []tomlfile.Problem{{File: l.File, Key: "boot_server.root", Warning: true,
			Message: fmt.Sprintf("%s is not a directory here: loader files not checked", root)}}
	}
	var problems []tomlfile.Problem
	seen := map[string]bool{}
	for _, d := range l.Devices {
		dt := l.DeviceTypes[d.DeviceType]
		if dt == nil {
			continue
		}
		for _, f := range d.Settings.Boot.Files() {
			fi, err := os.Stat(filepath.Join(root, filepath.FromSlash(f)))
			if err == nil && fi.Mode().IsRegular() {
				continue
			}
			msg := fmt.Sprintf("%s is not in the boot root %s (firmware %s, loader %s; make master builds a boot root with every loader)",
				f, root, d.Settings.Boot.Firmware, d.Settings.Boot.Loader)
			p := tomlfile.Problem{File: dt.File, Line: dt.BootFileLine, Key: "boot.file", Message: msg}
			if d.Override.IsSet() && d.Settings.Boot.File != dt.Settings.Boot.File {
				p = tomlfile.Problem{File: d.File, Line: d.bootFileLine, Key: d.Override.Key() + ".boot.file", Message: msg}
			}
			if seen[p.File+"\x00"+f] {
				continue
			}
			seen[p.File+"\x00"+f] = true
			problems = append(problems, p)
		}
	}
	return problems
}

// files lists the *.toml files in the directories of the lab key (relative
// to the lab file), sorted within each directory.
func (l *Lab) files(doc *tomlfile.Document, key string, dirs []string) []string {
	var files []string
	for i, dir := range dirs {
		inDir, err := tomlFiles(resolve(filepath.Dir(l.File), dir))
		if err != nil {
			doc.Problemf(fmt.Sprintf("%s[%d]", key, i), "%v", err)
			continue
		}
		files = append(files, inDir...)
	}
	return files
}

// tomlFiles lists the *.toml files in dir, sorted.
func tomlFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range entries {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".toml") {
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	return files, nil
}

// checkUnique reports a device whose name, MAC or BMC another device of the
// lab already has. IPs may repeat: simulated nodes each have their own
// user-mode network, all with the same address.
func (l *Lab) checkUnique(d *Device, doc *tomlfile.Document) {
	for _, other := range l.Devices {
		switch {
		case other.Name == d.Name:
			doc.Problemf("name", "device %q is also defined in %s", d.Name, other.File)
		case other.MAC != nil && d.MAC != nil && other.MAC.String() == d.MAC.String():
			doc.Problemf("mac", "%s is also the MAC of %s (%s)", d.MAC, other.Name, other.File)
		case other.BMC.Host == d.BMC.Host && other.BMC.Port == d.BMC.Port:
			doc.Problemf("bmc.port", "%s:%d is also the BMC of %s (%s): one BMC, one device",
				d.BMC.Host, d.BMC.Port, other.Name, other.File)
		}
	}
}

func (l *Lab) validate(doc *tomlfile.Document) {
	c := &l.Config
	switch {
	case c.Name == "":
		doc.Problemf("name", "required: the lab's name")
	case !tomlfile.ValidName(c.Name):
		doc.Problemf("name", "%q is not a valid name: use %s", c.Name, tomlfile.NameRule)
	}
	if len(c.DeviceTypes) == 0 {
		doc.Problemf("device_types", "required: directories of device-type files")
	}
	if len(c.Devices) == 0 {
		doc.Problemf("devices", "required: directories of device files")
	}
	dir := absDir(l.File)
	c.StateDir = resolve(dir, c.StateDir)

	b := &c.BootServer
	if b.Root == "" {
		doc.Problemf("boot_server.root", "required: the directory served over TFTP and HTTP")
	}
	b.Root = resolve(dir, b.Root)
	checkListen(doc, "boot_server.tftp_listen", b.TFTPListen)
	checkListen(doc, "boot_server.http_listen", b.HTTPListen)
	u, err := url.Parse(b.HTTPURL)
	switch {
	case b.HTTPURL == "":
		doc.Problemf("boot_server.http_url", "required: how nodes reach the HTTP server, e.g. http://10.0.2.2:8080")
	case err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Hostname() == "":
		doc.Problemf("boot_server.http_url", "%q is not an http:// or https:// URL with a host", b.HTTPURL)
	case b.TFTPServer == "":
		b.TFTPServer = u.Hostname()
	}
	if b.TFTPServer != "" && !validHost(b.TFTPServer) {
		doc.Problemf("boot_server.tftp_server", "%q is not a host name or IP address", b.TFTPServer)
	}

	c.NFS.check(doc, dir, c.StateDir)
	c.Images.check(doc)
	if c.Images.SaveDir == "" {
		c.Images.SaveDir = "images"
	}
	c.Images.SaveDir = resolve(dir, c.Images.SaveDir)
	if rel, err := filepath.Rel(c.StateDir, c.Images.SaveDir); err == nil && filepath.IsLocal(rel) {
		doc.Problemf("images.save_dir", "%s is inside state_dir, whose files labctl keeps private: saved images must stay readable by every user to be deployed", c.Images.SaveDir)
	}
	checkWebhooks(doc, dir, c.Webhooks)
	c.Notify.check(doc, dir)

	checkListen(doc, "server.listen", c.Server.Listen)
	if c.Retention.MaxAge < 0 {
		doc.Problemf("retention.max_age", "%v is negative: how long finished jobs are kept, e.g. \"720h\"", c.Retention.MaxAge)
	} else if c.Retention.MaxAge > 0 && c.Retention.MaxAge < time.Minute {
		doc.Problemf("retention.max_age", "%v is shorter than a minute: a job would be gone before anyone reads it", c.Retention.MaxAge)
	}
	if c.Retention.MaxJobs < 0 {
		doc.Problemf("retention.max_jobs", "%d is negative: how many finished jobs are kept, e.g. 10000", c.Retention.MaxJobs)
	}
	switch srv := &c.Server; {
	case srv.TLS != "" && srv.TLS != SelfSignedTLS:
		doc.Problemf("server.tls", "%q: the one value is %q (or give tls_cert and tls_key)", srv.TLS, SelfSignedTLS)
	case srv.TLS != "" && (srv.TLSCert != "" || srv.TLSKey != ""):
		doc.Problemf("server.tls", "give either tls = %q or tls_cert and tls_key, not both", SelfSignedTLS)
	case (srv.TLSCert == "") != (srv.TLSKey == ""):
		doc.Problemf("server.tls_cert", "tls_cert and tls_key go together")
	case srv.TLSCert != "":
		srv.TLSCert, srv.TLSKey = resolve(dir, srv.TLSCert), resolve(dir, srv.TLSKey)
		checkSecretFile(doc, "server.tls_key", srv.TLSKey)
	}
	if c.Health.Interval < 0 {
		doc.Problemf("health.interval", "must not be negative (0 or absent: no periodic checks)")
	} else if c.Health.Interval > 0 && c.Health.Interval < time.Second {
		doc.Problemf("health.interval", "%s is too short: give at least 1s, e.g. \"6h\"", c.Health.Interval)
	}
	if c.Health.Failures < 1 || c.Health.Failures > 100 {
		doc.Problemf("health.failures", "%d: give the checks in a row a device may fail before it goes offline, 1 to 100", c.Health.Failures)
	}
	if c.Jobs.Retries < 0 || c.Jobs.Retries > MaxRetries {
		doc.Problemf("jobs.retries", "%d: give 0 to %d", c.Jobs.Retries, MaxRetries)
	}
	if c.Jobs.QueueTimeout < 0 {
		doc.Problemf("jobs.queue_timeout", "must not be negative (0 or absent: jobs wait as long as it takes)")
	}
	c.Store.check(doc, dir)
	c.Host.check(doc, dir, c.Store.URL != "")
	for i := range c.Server.Tokens {
		t := &c.Server.Tokens[i]
		key := fmt.Sprintf("server.tokens[%d]", i)
		switch {
		case !tomlfile.ValidName(t.Name):
			doc.Problemf(key+".name", "required: who uses the token (%s)", tomlfile.NameRule)
		case slices.ContainsFunc(c.Server.Tokens[:i], func(o Token) bool { return o.Name == t.Name }):
			doc.Problemf(key+".name", "%q is listed twice", t.Name)
		case t.Name == HostTokenName:
			doc.Problemf(key+".name", "%q is the name of the lab's hosts' own credential ([host] token): choose another", t.Name)
		}
		if t.Role == "" {
			doc.Problemf(key+".role", "required: what the token may do: viewer, submitter, operator or admin")
		}
		checkSecretSource(doc, key, "token", dir, &t.TokenFile, t.TokenEnv, "required: a token_file or a token_env")
	}
}

// HostTokenName is the API token name of the lab-internal credential the
// hosts of a lab on a shared store forward requests with ([host] token);
// no [[server.tokens]] may take it, or the audit trail could not tell them
// apart.
const HostTokenName = "lab-hosts"

func (st *Store) check(doc *tomlfile.Document, dir string) {
	if st.URL == "" {
		if st.PasswordFile != "" || st.PasswordEnv != "" {
			doc.Problemf("store.url", "required with a store password: the PostgreSQL database, postgres://user@host:port/database")
		}
		return
	}
	if err := CheckStoreURL(st.URL); err != nil {
		doc.Problemf("store.url", "%v", err)
	}
	checkSecretSource(doc, "store", "password", dir, &st.PasswordFile, st.PasswordEnv, "")
}

// checkSecretSource checks a secret the lab file gives as KEY.NAME_file
// or KEY.NAME_env: never both, the file made absolute against dir and
// checked (checkSecretFile), the variable's name valid. required, if not
// empty, is the problem when neither is given.
func checkSecretSource(doc *tomlfile.Document, key, name, dir string, file *string, env, required string) {
	k := key + "." + name
	switch {
	case *file == "" && env == "":
		if required != "" {
			doc.Problemf(k+"_file", "%s", required)
		}
	case *file != "" && env != "":
		doc.Problemf(k+"_env", "give either %[1]s_file or %[1]s_env, not both", name)
	case *file != "":
		*file = resolve(dir, *file)
		checkSecretFile(doc, k+"_file", *file)
	case !validEnvName(env):
		doc.Problemf(k+"_env", "%q is not an environment variable name", env)
	}
}

// resolve makes path absolute, relative to dir.
func resolve(dir, path string) string {
	if path == "" || filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(dir, path)
}

func checkListen(doc *tomlfile.Document, key, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		doc.Problemf(key, "%q is not host:port (e.g. 127.0.0.1:8080, or :8080 for every address)", addr)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		doc.Problemf(key, "%q is not a port (0 to 65535)", port)
	}
	if host != "" && !validHost(host) {
		doc.Problemf(key, "%q is not a host name or IP address", host)
	}
}

func validHost(host string) bool {
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	if host == "" || len(host) > 253 {
		return false
	}
	for _, r := range host {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

// Device returns the device called name.
func (l *Lab) Device(name string) (*Device, bool) {
	i := slices.IndexFunc(l.Devices, func(d *Device) bool { return d.Name == name })
	if i < 0 {
		return nil, false
	}
	return l.Devices[i], true
}

// Match returns the devices of deviceType (any type if empty) that have
// every one of tags, sorted by name.
func (l *Lab) Match(deviceType string, tags []string) []*Device {
	var out []*Device
	for _, d := range l.Devices {
		if (deviceType == "" || d.DeviceType == deviceType) && d.HasTags(tags) {
			out = append(out, d)
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

// maxDownloadGiB keeps the byte count of [images] max_download_gib within
// an int64.
const maxDownloadGiB = 1 << 32

func (im *Images) check(doc *tomlfile.Document) {
	im.Networks = nil
	for i, s := range im.AllowNetworks {
		key := fmt.Sprintf("images.allow_networks[%d]", i)
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil || a.Zone() != "" {
				doc.Problemf(key, "%q is not a network: use CIDR notation (10.0.0.0/8, fd00::/8) or one IP address", s)
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p != p.Masked() {
			doc.Problemf(key, "%q has host bits set: the network is %s", s, p.Masked())
			continue
		}
		im.Networks = append(im.Networks, p)
	}
	if im.MaxDownloadGiB < 0 || im.MaxDownloadGiB > maxDownloadGiB {
		doc.Problemf("images.max_download_gib", "%d is not a size in GiB (1 to %d; 0 or unset for the default, 64)", im.MaxDownloadGiB, maxDownloadGiB)
		im.MaxDownloadGiB = 0
	}
}

func (n *NFSServer) check(doc *tomlfile.Document, dir, stateDir string) {
	switch n.Server {
	case "":
		if doc.Has("nfs") {
			doc.Problemf("nfs.server", `required in [nfs]: "ganesha"`)
		}
		return
	case "ganesha":
	default:
		doc.Problemf("nfs.server", "%q: the one server labctl manages is \"ganesha\" (nfs-ganesha)", n.Server)
		return
	}
	if n.ExportsDir == "" {
		n.ExportsDir = filepath.Join(stateDir, "nfs")
	}
	n.ExportsDir = resolve(dir, n.ExportsDir)
	for key, p := range map[string]*string{"nfs.pid_file": &n.PIDFile, "nfs.log_file": &n.LogFile} {
		if *p == "" {
			doc.Problemf(key, "required: the server's %s", map[string]string{"nfs.pid_file": "pid file (ganesha.nfsd -p)", "nfs.log_file": "log (ganesha.nfsd -L), where labctl reads that a reload is done"}[key])
		}
		*p = resolve(dir, *p)
	}
	if _, err := netip.ParseAddr(n.Host); err != nil {
		doc.Problemf("nfs.host", "%q: want the IP address nodes reach the server at", n.Host)
	}
	if n.Port < 0 || n.Port > 65535 {
		doc.Problemf("nfs.port", "%d is not a port", n.Port)
	}
	if n.Client != "" {
		if _, err := netip.ParseAddr(n.Client); err != nil {
			doc.Problemf("nfs.client", "%q is not an IP address", n.Client)
		}
	}
	if n.FirstExportID < 0 || n.FirstExportID > 60000 {
		doc.Problemf("nfs.first_export_id", "%d: give 1 to 60000", n.FirstExportID)
	}
}
