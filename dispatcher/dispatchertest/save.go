package dispatchertest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/netboot"
)

// saveServer is the simulated node's boot server for saves: a real
// netboot.Server (HTTP only, on 127.0.0.1), so the master's upload
// pipeline runs against the real endpoint; an optional proxy in front of
// it cuts connections.
type saveServer struct {
	srv    *netboot.Server
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	proxies []net.Listener
}

// AcceptSave implements labctl.Netboot with a real boot server.
func (n *Node) AcceptSave(dir string, rawSize int64, rawSHA256 string) (labctl.SaveUpload, error) {
	n.mu.Lock()
	if n.saves == nil {
		srv, err := netboot.New(netboot.Config{Root: n.dir, HTTPAddr: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
		if err != nil {
			n.mu.Unlock()
			return nil, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		ss := &saveServer{srv: srv, cancel: cancel, done: make(chan struct{})}
		go func() { defer close(ss.done); srv.Serve(ctx) }()
		n.saves = ss
	}
	ss, cut := n.saves, n.cutSave
	n.mu.Unlock()
	sv, err := ss.srv.AcceptSave(dir, rawSize, rawSHA256)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.saveTokens = append(n.saveTokens, sv.Token())
	n.mu.Unlock()
	up := &saveUpload{Save: sv, url: sv.URL()}
	if cut > 0 {
		addr, err := ss.proxy(cut)
		if err != nil {
			sv.Close()
			return nil, err
		}
		up.url = "http://" + addr + "/saves/"
	}
	return up, nil
}

// SaveTokens are the secret tokens of the saves opened so far, for tests
// that check they reach no log.
func (n *Node) SaveTokens() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.saveTokens...)
}

// CutSaveAfter makes the next saves' connections break after the node
// sent n bytes (headers included): a network that fails mid-upload.
func (n *Node) CutSaveAfter(bytes int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cutSave = bytes
}

func (ss *saveServer) close() {
	ss.mu.Lock()
	for _, l := range ss.proxies {
		l.Close()
	}
	ss.mu.Unlock()
	ss.cancel()
	<-ss.done
}

// proxy listens on 127.0.0.1 and forwards one connection to the boot
// server, closing both ends once cut bytes came from the client.
func (ss *saveServer) proxy(cut int64) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	ss.mu.Lock()
	ss.proxies = append(ss.proxies, l)
	ss.mu.Unlock()
	go func() {
		defer l.Close()
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		s, err := net.Dial("tcp", ss.srv.HTTPAddr().String())
		if err != nil {
			return
		}
		defer s.Close()
		go io.Copy(c, s)
		io.CopyN(s, c, cut)
		// Abort both ends: a reset, as a network failure gives.
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		if tc, ok := s.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
	}()
	return l.Addr().String(), nil
}

// saveUpload is a netboot.Save as a labctl.SaveUpload, its URL maybe
// through the cutting proxy.
type saveUpload struct {
	*netboot.Save
	url string
}

func (s *saveUpload) URL() string { return s.url }

func (s *saveUpload) Wait(ctx context.Context) (labctl.SaveResult, error) {
	r, err := s.Save.Wait(ctx)
	return labctl.SaveResult{Size: r.Size, RawSize: r.RawSize, RawSHA256: r.RawSHA256}, err
}
