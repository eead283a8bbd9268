package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"sync"
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
	r := HTTPResult{Wall: time.Since(start), Errors: map[string]int{}}
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
