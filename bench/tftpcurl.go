package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Load generators of case 1: the bench's own client (RunTFTP), and curl's
// TFTP client, one process per client, so that the figures do not rest on
// the bench's code alone.
const (
	GenBench = "bench"
	GenCurl  = "curl"
)

// RunTFTPCurl runs l with curl's TFTP client (lock-step; l.Window must be
// 0): N curl processes, each piping the file to the bench, which compares
// every byte with l.Ref. The processes are started first and wait for
// their configuration on stdin (curl -K -); the clock starts when all of
// them have it, so process start-up is not part of the measured time.
//
// curl's retransmission interval is its whole-transfer time limit
// (--max-time) divided by its retry count (3 to 50): with the limits used
// here a lost request or block costs the client a few seconds, as with a
// PXE ROM, not the bench client's 1 s.
func RunTFTPCurl(ctx context.Context, l TFTPLoad) (TFTPResult, error) {
	if l.Window > 0 {
		return TFTPResult{}, errors.New("curl's TFTP client does not ask for a window")
	}
	if err := loopbackOnly(l.Addr); err != nil {
		return TFTPResult{}, err
	}
	bin, err := exec.LookPath("curl")
	if err != nil {
		return TFTPResult{}, fmt.Errorf("curl not found (Debian package curl; `make deps` installs it): %w", err)
	}
	host, port, _ := net.SplitHostPort(l.Addr)
	limit := 60 * time.Second
	if l.Cap > 0 {
		limit = l.Cap + 10*time.Second // the cap ends the run first
	}
	conf := fmt.Sprintf("url = \"tftp://%s:%s/%s\"\nsilent\nshow-error\nmax-time = %d\n", host, port, l.File, int(limit.Seconds()))
	if l.BlkSize > 0 {
		conf += fmt.Sprintf("tftp-blksize = %d\n", l.BlkSize)
	}

	type one struct {
		cmd    *exec.Cmd
		stdin  io.WriteCloser
		stdout io.ReadCloser
		stderr bytes.Buffer
		bytes  int64
		bad    string
		dur    time.Duration
		exit   error
	}
	procs, pids := make([]*one, l.N), make([]int, l.N)
	kill := func() {
		for _, p := range procs {
			if p != nil && p.cmd.Process != nil {
				p.cmd.Process.Kill()
			}
		}
	}
	for i := range procs {
		p := &one{cmd: exec.Command(bin, "-K", "-")}
		p.cmd.Stderr = &p.stderr
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if p.stdin, err = p.cmd.StdinPipe(); err == nil {
			p.stdout, err = p.cmd.StdoutPipe()
		}
		if err == nil {
			err = p.cmd.Start()
		}
		if err != nil {
			kill()
			for _, q := range procs[:i] {
				q.cmd.Wait()
			}
			return TFTPResult{}, fmt.Errorf("start curl %d of %d: %w", i+1, l.N, err)
		}
		procs[i] = p
		pids[i] = p.cmd.Process.Pid
	}
	waitBlockedOnStdin(pids, 10*time.Second)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if l.Cap > 0 {
		var c2 context.CancelFunc
		runCtx, c2 = context.WithTimeout(runCtx, l.Cap)
		defer c2()
	}
	var wg sync.WaitGroup
	start := time.Now()
	for _, p := range procs {
		io.WriteString(p.stdin, conf)
		p.stdin.Close()
	}
	for _, p := range procs {
		wg.Go(func() {
			defer func() { p.dur = time.Since(start) }()
			buf := make([]byte, 64<<10)
			for {
				n, err := p.stdout.Read(buf)
				if n > 0 && p.bad == "" {
					end := p.bytes + int64(n)
					if end > int64(len(l.Ref)) || !bytes.Equal(buf[:n], l.Ref[p.bytes:end]) {
						p.bad = "corrupt data"
					} else {
						p.bytes = end
					}
				}
				if err != nil {
					break
				}
			}
			p.exit = p.cmd.Wait()
		})
	}
	stop := context.AfterFunc(runCtx, kill)
	wg.Wait()
	stop()
	wall := time.Since(start)
	cut := runCtx.Err() != nil && ctx.Err() == nil

	out := TFTPResult{Fails: map[string]int{}, Wall: wall, Granted: fmt.Sprintf("blksize=%d window=1", max(l.BlkSize, 512))}
	for _, p := range procs {
		out.Bytes += p.bytes
		out.PerClientMBps = append(out.PerClientMBps, float64(p.bytes)/1e6/max(p.dur.Seconds(), 1e-6))
		switch {
		case p.bad != "":
			out.Failed++
			out.Fails[p.bad]++
		case p.exit == nil && p.bytes == int64(len(l.Ref)):
			out.OK++
			out.Durations = append(out.Durations, p.dur.Seconds())
		case cut:
			out.Cut++
		case p.exit == nil:
			out.Failed++
			out.Fails[fmt.Sprintf("short file: %d of %d bytes", p.bytes, len(l.Ref))]++
		default:
			out.Failed++
			out.Fails[curlWhy(p.exit, p.stderr.String())]++
		}
	}
	sort.Float64s(out.Durations)
	sort.Float64s(out.PerClientMBps)
	if err := ctx.Err(); err != nil {
		return out, err
	}
	return out, nil
}

// curlWhy is a failed curl's reason: its exit status and first error line.
func curlWhy(exit error, stderr string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(stderr), "\n")
	var ee *exec.ExitError
	if errors.As(exit, &ee) {
		return fmt.Sprintf("curl exit %d: %s", ee.ExitCode(), clipLine(line, 120))
	}
	return fmt.Sprintf("curl: %v: %s", exit, clipLine(line, 120))
}

func clipLine(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// waitBlockedOnStdin waits until every process of pids is blocked in
// read(2) on its standard input (see readingStdin), or until timeout: then
// the start-up of each is done and a write to its stdin starts it at once.
func waitBlockedOnStdin(pids []int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for len(pids) > 0 && time.Now().Before(deadline) {
		var rest []int
		for _, pid := range pids {
			if !readingStdin(pid) {
				rest = append(rest, pid)
			}
		}
		pids = rest
		if len(pids) > 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// readingStdin reports whether pid is blocked in read(0, ...). A process
// whose syscall file cannot be read counts as ready when it sleeps.
func readingStdin(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/syscall")
	if err != nil || len(b) == 0 {
		st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return true // gone: nothing to wait for
		}
		_, rest, _ := strings.Cut(string(st), ") ")
		return strings.HasPrefix(rest, "S")
	}
	f := strings.Fields(string(b))
	// "0 0x0 ...": read (syscall 0 on x86-64) on descriptor 0.
	return len(f) >= 2 && f[0] == strconv.Itoa(int(syscall.SYS_READ)) && f[1] == "0x0"
}
