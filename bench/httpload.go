package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// HTTPLoad is one run of image streaming: N clients each stream the image
// into a buffer and throw it away (the `wget -O - URL | dd` of a deploy),
// starting over when it ends, for Duration.
type HTTPLoad struct {
	URL      string
	Size     int64 // expected body size
	N        int
	Duration time.Duration
}

// HTTPResult is what one HTTP run measured.
type HTTPResult struct {
	Bytes         int64
	Wall          time.Duration
	Complete      int            // whole images received
	Errors        map[string]int // failed requests, by reason
	PerClientMBps []float64      // sorted
	// ClientCPU is the load generator's CPU seconds over the run (user
	// and system): on loopback the receiving side copies every byte, so
	// it shows whether the client, not the server, set the pace.
	ClientCPU float64
}

// MBps is the aggregate rate.
func (r HTTPResult) MBps() float64 {
	if r.Wall <= 0 {
		return 0
	}
	return float64(r.Bytes) / 1e6 / r.Wall.Seconds()
}

// RunHTTP runs the load. Clients speak plain HTTP/1.1 on raw connections
// (one request per connection, like wget), so the load generator costs as
// little CPU per byte as it can: it shares the machine with the server.
func RunHTTP(ctx context.Context, l HTTPLoad) (HTTPResult, error) {
	u, err := url.Parse(l.URL)
	if err != nil {
		return HTTPResult{}, err
	}
	if err := loopbackOnly(u.Host); err != nil {
		return HTTPResult{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, l.Duration)
	defer cancel()
	cpu0 := cpuSeconds(syscall.RUSAGE_SELF)
	bytes := make([]int64, l.N)
	complete := make([]int, l.N)
	errs := make([]map[string]int, l.N)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range l.N {
		errs[i] = map[string]int{}
		wg.Go(func() {
			buf := make([]byte, 256<<10)
			for ctx.Err() == nil {
				n, err := httpStream(ctx, u, buf)
				bytes[i] += n
				if err != nil {
					// A request cut by the end of the window is not an error.
					if dl, _ := ctx.Deadline(); ctx.Err() == nil && time.Until(dl) > 100*time.Millisecond {
						errs[i][err.Error()]++
						time.Sleep(10 * time.Millisecond)
					}
					continue
				}
				if n == l.Size {
					complete[i]++
				} else {
					errs[i][fmt.Sprintf("short body %d of %d", n, l.Size)]++
				}
			}
		})
	}
	wg.Wait()
	r := HTTPResult{Wall: time.Since(start), Errors: map[string]int{}, ClientCPU: cpuSeconds(syscall.RUSAGE_SELF) - cpu0}
	for i := range l.N {
		r.Bytes += bytes[i]
		r.Complete += complete[i]
		r.PerClientMBps = append(r.PerClientMBps, float64(bytes[i])/1e6/r.Wall.Seconds())
		for k, v := range errs[i] {
			r.Errors[k] += v
		}
	}
	sort.Float64s(r.PerClientMBps)
	return r, nil
}

// httpStream GETs u on a new connection and reads the body into buf until
// it ends or ctx does; it returns the body bytes read.
func httpStream(ctx context.Context, u *url.URL, buf []byte) (int64, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return 0, fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: labctl-bench\r\nConnection: close\r\n\r\n", u.RequestURI(), u.Host); err != nil {
		return 0, fmt.Errorf("send: %w", err)
	}
	br := bufio.NewReaderSize(conn, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, fmt.Errorf("response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	// Drain what bufio already holds, then read the socket directly.
	var n int64
	if k := br.Buffered(); k > 0 {
		m, _ := br.Discard(k)
		n += int64(m)
	}
	for {
		m, err := conn.Read(buf)
		n += int64(m)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// RunHTTPWrk runs the load with wrk (an independent generator: C, an event
// loop per thread, keep-alive connections that request the image again as
// soon as it ends): N connections on min(N, CPUs) threads for Duration.
// Bytes are wrk's own count of what it read (headers included, a few
// hundred bytes per image) over its own run time.
func RunHTTPWrk(ctx context.Context, l HTTPLoad) (HTTPResult, error) {
	u, err := url.Parse(l.URL)
	if err != nil {
		return HTTPResult{}, err
	}
	if err := loopbackOnly(u.Host); err != nil {
		return HTTPResult{}, err
	}
	bin, err := exec.LookPath("wrk")
	if err != nil {
		return HTTPResult{}, fmt.Errorf("wrk not found (Debian package wrk; `make deps` installs it): %w", err)
	}
	threads := min(l.N, runtime.NumCPU())
	secs := max(int(l.Duration.Round(time.Second).Seconds()), 1)
	cmd := exec.CommandContext(ctx, bin, "-t", strconv.Itoa(threads), "-c", strconv.Itoa(l.N), "-d", strconv.Itoa(secs)+"s",
		"--timeout", "600s", l.URL)
	cpu0 := cpuSeconds(syscall.RUSAGE_CHILDREN)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return HTTPResult{}, fmt.Errorf("wrk: %w: %s", err, clipLine(string(out), 300))
	}
	r, err := parseWrk(string(out), l.N)
	r.ClientCPU = cpuSeconds(syscall.RUSAGE_CHILDREN) - cpu0 // wrk is the only child waited for meanwhile
	return r, err
}

// cpuSeconds is the user and system CPU time getrusage reports for who
// (RUSAGE_SELF: this process; RUSAGE_CHILDREN: its children waited for).
func cpuSeconds(who int) float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(who, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// wrkSummary matches wrk's "12 requests in 8.00s, 5.98GB read".
var wrkSummary = regexp.MustCompile(`(\d+) requests in ([0-9.]+)(us|ms|s|m), ([0-9.]+)([KMGT]?B) read`)

// wrkErrors matches wrk's "Socket errors: connect 0, read 0, write 0, timeout 0"
// and "Non-2xx or 3xx responses: 3".
var wrkErrors = regexp.MustCompile(`(connect|read|write|timeout) (\d+)|Non-2xx or 3xx responses: (\d+)`)

// parseWrk reads wrk's report: bytes, run time, requests (each a whole
// image: wrk counts a request when its response has ended), errors.
func parseWrk(out string, n int) (HTTPResult, error) {
	m := wrkSummary.FindStringSubmatch(out)
	if m == nil {
		return HTTPResult{}, fmt.Errorf("wrk: no summary line in its output: %s", clipLine(out, 300))
	}
	reqs, _ := strconv.Atoi(m[1])
	t, _ := strconv.ParseFloat(m[2], 64)
	t *= map[string]float64{"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60}[m[3]]
	size, _ := strconv.ParseFloat(m[4], 64)
	size *= map[string]float64{"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}[m[5]]
	r := HTTPResult{Bytes: int64(size), Wall: time.Duration(t * float64(time.Second)), Complete: reqs, Errors: map[string]int{}}
	for _, e := range wrkErrors.FindAllStringSubmatch(out, -1) {
		switch {
		case e[3] != "":
			if v, _ := strconv.Atoi(e[3]); v > 0 {
				r.Errors["non-2xx responses"] += v
			}
		default:
			if v, _ := strconv.Atoi(e[2]); v > 0 {
				r.Errors["socket "+e[1]] += v
			}
		}
	}
	// wrk reports no per-connection figures: the mean stands for each.
	per := float64(r.Bytes) / 1e6 / max(t, 1e-6) / float64(n)
	for range n {
		r.PerClientMBps = append(r.PerClientMBps, per)
	}
	return r, nil
}
