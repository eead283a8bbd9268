package dispatcher

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl/sol"
)

// floodDialer is a console that prints total bytes of lines as fast as it
// can, then goes quiet.
type floodDialer struct {
	total int
	done  chan struct{}
}

func (d *floodDialer) Target() string { return "flooding console" }

func (d *floodDialer) Dial(context.Context) (io.ReadWriteCloser, error) {
	a, b := net.Pipe()
	go func() {
		defer close(d.done)
		line := []byte(strings.Repeat("flood ", 20) + "\r\n")
		for sent := 0; sent < d.total; sent += len(line) {
			if _, err := b.Write(line); err != nil {
				return
			}
		}
	}()
	go io.Copy(io.Discard, b)
	return a, nil
}

// A node that floods its console fills the job log up to its limit and no
// further; one line says the output was cut, and the job's own records
// after that (its outcome) are still written.
func TestLogCapsFloodingConsole(t *testing.T) {
	const limit = 1 << 20
	d := &floodDialer{total: 8 << 20, done: make(chan struct{})}
	s := sol.NewSession(d, sol.Options{})
	if err := s.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	path := filepath.Join(t.TempDir(), "job.log")
	l, err := openJobLog(path, limit, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Event("job 1 (flood) on node1")
	l.Follow(s)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the console did not finish flooding")
	}
	l.StopFollowing()
	l.Event("job 1: incomplete: lab went wrong")
	l.Close()

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > limit+logReserve {
		t.Fatalf("job.log is %d bytes, over the limit of %d and the reserve", len(data), limit)
	}
	if len(data) < limit/2 {
		t.Fatalf("job.log is %d bytes: the console was not logged up to the limit", len(data))
	}
	const cut = "output truncated: job log reached 1 MiB; further console output not logged"
	if n := bytes.Count(data, []byte(cut)); n != 1 {
		t.Fatalf("the truncation line appears %d times, want once", n)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if last := lines[len(lines)-1]; !strings.Contains(last, "job 1: incomplete") {
		t.Fatalf("last line %q, want the job's end", last)
	}
	if !strings.Contains(lines[0], "job 1 (flood)") {
		t.Fatalf("first line %q", lines[0])
	}
	after := data[bytes.Index(data, []byte(cut)):]
	if bytes.Contains(after, []byte("flood flood")) {
		t.Fatal("console output was logged after the truncation line")
	}
}

// A log's own records beyond the limit stop at the reserve.
func TestLogCapReserve(t *testing.T) {
	var buf bytes.Buffer
	l := NewLog(nopCloser{&buf}, nil, nil)
	l.SetMaxSize(100)
	msg := strings.Repeat("e", 1000)
	for range 3000 {
		l.Event(msg)
	}
	l.Close()
	if buf.Len() > 100+logReserve {
		t.Fatalf("log is %d bytes, over the limit and the reserve", buf.Len())
	}
	if buf.Len() < logReserve/2 {
		t.Fatalf("log is %d bytes: the reserve was not used", buf.Len())
	}
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
