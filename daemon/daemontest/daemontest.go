// Package daemontest runs a lab daemon in-process for tests: devices that
// are simulated nodes (dispatchertest: a real shell on a pty, the whole job
// pipeline in about a second) or fake nodes (power and boot entries
// remembered, a console that never prints, for tests with a fake
// RunFunc), a SQLite store in a temporary state directory, and optionally
// the HTTP API on 127.0.0.1:0. The daemon's and the API's tests, labctl's
// client commands and the console broker's tests use it.
package daemontest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/api"
	"github.com/labctl/labctl/daemon"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/dispatcher/dispatchertest"
	"github.com/labctl/labctl/internal/testutil"
	"github.com/labctl/labctl/store"
)

// Token is the API token of a lab started with Options.API; its name is
// "ci".
const Token = "daemontest-token-ci"

// Options say what lab to start.
type Options struct {
	// PowerTimeout is the fake nodes' power timeout, which also bounds a
	// health check's wait for the console; 0 means 2 s (a silent fake BMC
	// fails fast). Hundreds of fake nodes on a busy machine need more.
	PowerTimeout time.Duration
	// Nodes is how many devices: node1, node2, ... of device type "sim",
	// each with the tag "x86" (and those in Tags).
	Nodes int
	// Fake makes the devices FakeNodes instead of simulated nodes.
	Fake bool
	// Run runs jobs; nil means dispatcher.Run.
	Run daemon.RunFunc
	// Tags are more tags, by device name.
	Tags map[string][]string
	// API also serves the HTTP API on 127.0.0.1:0 (Lab.URL, Token).
	API bool
	// Settings, if set, changes the lab file's settings ([health],
	// [jobs]) before the daemon starts.
	Settings func(*devices.Config)
	// StateDir is the lab's state directory; "" means a new temporary one.
	StateDir string
	// Retention is the lab's [retention]; RetentionEvery how often it
	// runs (0: the daemon's default).
	Retention      devices.Retention
	RetentionEvery time.Duration
	// WrapStore, if set, is what the daemon gets instead of the SQLite
	// store (a wrapper that fails writes, for instance).
	WrapStore func(store.Store) store.Store
	// Quiet keeps no daemon log (long measurements); Log then returns "".
	Quiet bool
	// Observers hear the daemon (daemon.Config.Observers).
	Observers []daemon.Observer
	// Metrics, with API, is served as GET /metrics (api.Config.Metrics).
	Metrics http.Handler
}

// Lab is a running in-process lab.
type Lab struct {
	t      testing.TB
	opts   Options
	Config *devices.Lab
	// Sims and Fakes are the devices' nodes, by name.
	Sims  map[string]*dispatchertest.Node
	Fakes map[string]*FakeNode
	nodes map[string]*labctl.Node
	// DBPath is the store's file.
	DBPath string

	// Daemon and Store are those of the current start.
	Daemon *daemon.Daemon
	Store  *store.SQLite
	// URL is the API (with Options.API), e.g. http://127.0.0.1:41234.
	URL  string
	log  *testutil.SyncBuffer
	stop func()
}

// Start starts a lab; it is stopped when the test ends. A test that needs
// simulated nodes is skipped if busybox is missing.
func Start(t testing.TB, o Options) *Lab {
	t.Helper()
	state := o.StateDir
	if state == "" {
		state = t.TempDir()
	}
	l := &Lab{
		t: t, opts: o,
		Config: &devices.Lab{Config: devices.Config{Name: "test", StateDir: state, Retention: o.Retention,
			Images: devices.Images{SaveDir: filepath.Join(t.TempDir(), "images")}}},
		Sims:   map[string]*dispatchertest.Node{},
		Fakes:  map[string]*FakeNode{},
		nodes:  map[string]*labctl.Node{},
		DBPath: filepath.Join(state, "labctl.db"),
		log:    &testutil.SyncBuffer{},
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon log:\n%s", l.log.String())
		}
	})
	for i := range o.Nodes {
		name := fmt.Sprintf("node%d", i+1)
		dev := &devices.Device{Name: name, DeviceType: "sim", Tags: append([]string{"x86"}, o.Tags[name]...)}
		if o.Fake {
			f := &FakeNode{Name: name}
			l.Fakes[name] = f
			dev.Settings = devices.DefaultSettings()
			dev.Settings.Timeouts.Power = cmp.Or(o.PowerTimeout, 2*time.Second)
			l.nodes[name] = &labctl.Node{Power: f, Console: f, Netboot: f}
		} else {
			n, err := dispatchertest.NewNode(name, t.TempDir())
			if err != nil {
				t.Skip(err)
			}
			t.Cleanup(func() { n.Close() })
			n.BootDelay = 10 * time.Millisecond
			l.Sims[name] = n
			dev.Settings = dispatchertest.Settings(n)
			l.nodes[name] = &labctl.Node{Power: n, Console: n.Dialer(), Netboot: n}
		}
		l.Config.Devices = append(l.Config.Devices, dev)
	}
	if o.Settings != nil {
		o.Settings(&l.Config.Config)
	}
	l.Start()
	t.Cleanup(l.Shutdown)
	return l
}

// Node implements daemon.Nodes.
func (l *Lab) Node(name string) (*labctl.Node, error) {
	n, ok := l.nodes[name]
	if !ok {
		return nil, fmt.Errorf("no device %q", name)
	}
	return n, nil
}

// Start opens the store and starts a daemon (and the API, on a new port)
// on it.
func (l *Lab) Start() {
	l.t.Helper()
	l.StartAt("127.0.0.1:0")
}

// StartAt is Start with the API on addr (to restart it where clients
// expect it).
func (l *Lab) StartAt(addr string) {
	l.t.Helper()
	s, err := store.OpenSQLite(l.DBPath)
	if err != nil {
		l.t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(l.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if l.opts.Quiet {
		log = slog.New(slog.DiscardHandler)
	}
	var ds store.Store = s
	if l.opts.WrapStore != nil {
		ds = l.opts.WrapStore(s)
	}
	d, err := daemon.New(context.Background(), daemon.Config{Lab: l.Config, Nodes: l, Store: ds, Run: l.opts.Run, Log: log,
		RetentionEvery: l.opts.RetentionEvery, Observers: l.opts.Observers})
	if err != nil {
		s.Close()
		l.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Add(1)
	go func() {
		defer wg.Done()
		errs <- d.Serve(ctx)
	}()
	if l.opts.API {
		srv, err := api.NewServer(d, api.Config{Addr: addr, Tokens: []api.Token{{Name: "ci", Secret: Token, Role: labctl.RoleAdmin}}, Log: log,
			Metrics: l.opts.Metrics})
		if err != nil {
			cancel()
			l.t.Fatal(err)
		}
		l.URL = "http://" + srv.Addr().String()
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- srv.Serve(ctx)
		}()
	}
	l.Store, l.Daemon = s, d
	l.stop = func() {
		cancel()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Minute):
			l.t.Error("the daemon did not stop within a minute of its context ending")
		}
		close(errs)
		for err := range errs {
			if err != nil {
				l.t.Errorf("Serve = %v", err)
			}
		}
		s.Close()
	}
}

// Log returns what the daemon has logged so far.
func (l *Lab) Log() string { return l.log.String() }

// Shutdown stops the daemon (idempotent).
func (l *Lab) Shutdown() {
	if l.stop != nil {
		l.stop()
		l.stop = nil
	}
}

// Restart stops the daemon and starts a new one on the same store.
func (l *Lab) Restart() {
	l.Shutdown()
	l.Start()
}

// Context is a request context from the "ci" token, ended with the test.
func Context(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(labctl.WithCaller(context.Background(), "ci"), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// Submit submits a job file's text.
func (l *Lab) Submit(text string) labctl.Job {
	l.t.Helper()
	j, err := l.Daemon.Submit(Context(l.t), labctl.SubmitRequest{File: "job.toml", Dir: "/", Spec: text})
	if err != nil {
		l.t.Fatalf("Submit = %v", err)
	}
	return j
}

// Wait follows the job to its end and returns it.
func (l *Lab) Wait(id int64) labctl.Job {
	l.t.Helper()
	var end *labctl.Job
	err := l.Daemon.Follow(Context(l.t), id, labctl.FollowOptions{NoLog: true}, func(e labctl.Event) error {
		end = e.End
		return nil
	})
	if err != nil || end == nil {
		l.t.Fatalf("follow job %d: %v (end %v)", id, err, end)
	}
	return *end
}

// WaitDevice waits until the device is in state.
func (l *Lab) WaitDevice(name, state string) labctl.Device {
	l.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		d, err := l.Daemon.Device(Context(l.t), name)
		if err != nil {
			l.t.Fatal(err)
		}
		if d.State == state {
			return d
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("device %s is %s (%s), want %s", name, d.State, d.Reason, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WaitIdle waits until every device is idle.
func (l *Lab) WaitIdle() {
	l.t.Helper()
	for _, d := range l.Config.Devices {
		l.WaitDevice(d.Name, labctl.DeviceIdle)
	}
}

// Image writes a small bootable gzip image and returns its path and the
// sha256 of its uncompressed bytes.
func Image(t testing.TB) (string, string) {
	t.Helper()
	return dispatchertest.GzipImage(t, t.TempDir(), dispatchertest.MBRImage(256<<10))
}

// JobText is a job file: the top-level keys top, then the deploy of a
// fresh image, the boot and one test step that prints hello.
func JobText(t testing.TB, top string) string {
	img, sum := Image(t)
	return top + fmt.Sprintf(`
[deploy]
image = %q
sha256 = %q
[boot]
password = "test"
[[test]]
name = "hello"
commands = ["echo hello"]
`, img, sum)
}

// FakeNode is a node without a machine: power and boot entries are
// remembered, the console is an in-memory pipe that never prints.
type FakeNode struct {
	Name string

	mu       sync.Mutex
	on       bool
	calls    []string
	powerErr error
}

func (f *FakeNode) record(c string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
	return f.powerErr
}

// Power implements labctl.Power.
func (f *FakeNode) Power(_ context.Context, op labctl.PowerOp) error {
	if err := f.record("power " + string(op)); err != nil {
		return err
	}
	f.mu.Lock()
	f.on = op != labctl.PowerOff
	f.mu.Unlock()
	return nil
}

// PowerState implements labctl.Power.
func (f *FakeNode) PowerState(context.Context) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.on, f.powerErr
}

// SetBootDevice implements labctl.Power.
func (f *FakeNode) SetBootDevice(_ context.Context, dev labctl.BootDevice) error {
	return f.record("bootdev " + string(dev))
}

// Fail makes every later power call fail with err (nil heals it): a BMC
// that stopped answering.
func (f *FakeNode) Fail(err error) {
	f.mu.Lock()
	f.powerErr = err
	f.mu.Unlock()
}

// Calls returns the power, bootdev and PXE calls so far ("power off",
// "pxe local", ...).
func (f *FakeNode) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// BootMaster implements labctl.Netboot.
func (f *FakeNode) BootMaster() error { f.record("pxe master"); return nil }

// BootLocal implements labctl.Netboot.
func (f *FakeNode) BootLocal() error { f.record("pxe local"); return nil }

// BootKernel implements labctl.Netboot.
func (f *FakeNode) BootKernel(string, string, string) error { f.record("pxe kernel"); return nil }

// ExportRoot implements labctl.Netboot (a fake node has no NFS server).
func (f *FakeNode) ExportRoot(context.Context, string) (labctl.RootExport, error) {
	return nil, errors.New("fake node: no NFS server")
}

// PublishImage implements labctl.Netboot (a fake node takes no image).
func (f *FakeNode) PublishImage(*os.File) (labctl.PublishedImage, error) {
	return nil, errors.New("fake node: no images")
}

// AcceptUploads implements labctl.Netboot (a fake node sends nothing).
func (f *FakeNode) AcceptUploads(string) (string, func(), error) {
	return "", nil, errors.New("fake node: no uploads")
}

// AcceptSave implements labctl.Netboot (a fake node sends nothing).
func (f *FakeNode) AcceptSave(string, int64, string) (labctl.SaveUpload, error) {
	return nil, errors.New("fake node: no saves")
}

// Dial implements sol.Dialer: a console that never prints.
func (f *FakeNode) Dial(context.Context) (io.ReadWriteCloser, error) {
	a, b := net.Pipe()
	go io.Copy(io.Discard, b)
	return a, nil
}

// Target implements sol.Dialer.
func (f *FakeNode) Target() string { return "fake console " + f.Name }
