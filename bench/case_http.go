package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// HTTPCase is case 2: N clients stream a disk image from each server.
type HTTPCase struct {
	Rounds   int
	Image    string // name under Env.Root
	Ns       []int
	Duration time.Duration // per run
	Settle   time.Duration
}

type httpRuns struct {
	mbps, cpuPerGB, perMin, perMed []float64
	complete                       int
	errors                         map[string]int
	peakMB                         float64
}

// Run runs the case and writes its table to w.
func (c HTTPCase) Run(ctx context.Context, env *Env, w, logw io.Writer) (CaseResult, error) {
	res := CaseResult{Name: "2 HTTP image serving"}
	fi, err := os.Stat(filepath.Join(env.Root, c.Image))
	if err != nil {
		return res, err
	}
	servers, skipped := HTTPServers(env, c.Image)
	if err := startAll(w, servers, skipped); err != nil {
		return res, err
	}
	defer stopAll(servers)
	// Warm the page cache so that no server pays for the first read.
	if f, err := os.Open(filepath.Join(env.Root, c.Image)); err == nil {
		io.Copy(io.Discard, f)
		f.Close()
	}
	runs := map[int]map[string]*httpRuns{}
	for r := range c.Rounds {
		for _, n := range c.Ns {
			if runs[n] == nil {
				runs[n] = map[string]*httpRuns{}
			}
			for _, s := range rotate(servers, r) {
				if err := ctx.Err(); err != nil {
					return res, err
				}
				if _, err := s.EnsureRunning(); err != nil {
					return res, err
				}
				rr := runs[n][s.Name]
				if rr == nil {
					rr = &httpRuns{errors: map[string]int{}}
					runs[n][s.Name] = rr
				}
				sample := StartSample(s.Group())
				out, err := RunHTTP(ctx, HTTPLoad{URL: s.URL, Size: fi.Size(), N: n, Duration: c.Duration})
				time.Sleep(200 * time.Millisecond)
				cpu, peak := sample.Stop()
				if err != nil {
					return res, err
				}
				rr.mbps = append(rr.mbps, out.MBps())
				if out.Bytes > 0 {
					rr.cpuPerGB = append(rr.cpuPerGB, cpu/(float64(out.Bytes)/1e9))
				}
				rr.perMin = append(rr.perMin, Percentile(out.PerClientMBps, 0))
				rr.perMed = append(rr.perMed, Percentile(out.PerClientMBps, .5))
				rr.complete += out.Complete
				rr.peakMB = max(rr.peakMB, peak)
				for k, v := range out.Errors {
					rr.errors[k] += v
				}
				fmt.Fprintf(logw, "  r%d %-8s n=%-4d %8.1f MB/s complete=%d errors=%v cpu=%.2fs peak=%.1fMB\n",
					r+1, s.Name, n, out.MBps(), out.Complete, out.Errors, cpu, peak)
				time.Sleep(c.Settle)
			}
		}
	}
	fmt.Fprintf(w, "### Case 2: HTTP image serving (%s image, %s per run, %d rounds, servers interleaved)\n\n", sizeName(int(fi.Size())), c.Duration, c.Rounds)
	fmt.Fprintf(w, "Servers: %s. Clients stream the image on raw HTTP/1.1 connections, one request each, starting over when it ends.\n\n", serverNotes(servers))
	t := &Table{Head: []string{"N", "server", "MB/s median [min–max]", "÷ nginx", "per client MB/s min / p50", "whole images", "errors", "CPU s/GB", "peak MB"}}
	worst := 0.0
	first := true
	for _, n := range c.Ns {
		nginx := 0.0
		if rr := runs[n]["nginx"]; rr != nil {
			nginx = Median(rr.mbps)
		}
		for _, s := range servers {
			rr := runs[n][s.Name]
			if rr == nil {
				continue
			}
			errs := 0
			for _, v := range rr.errors {
				errs += v
			}
			t.Add(fmt.Sprint(n), s.Name, Summarize(rr.mbps).Format(0), Ratio(Median(rr.mbps), nginx),
				fmt.Sprintf("%s / %s", f(Median(rr.perMin), 1), f(Median(rr.perMed), 1)), fmt.Sprint(rr.complete), fmt.Sprint(errs),
				f(Median(rr.cpuPerGB), 2), f(rr.peakMB, 1))
		}
		if lab := runs[n]["labctl"]; lab != nil && nginx > 0 {
			r := Median(lab.mbps) / nginx
			if first || r < worst {
				worst, first = r, false
			}
		}
	}
	t.Write(w)
	res.Leads = !first && worst >= 0.95
	res.Ratio = fmt.Sprintf("case 2 (HTTP image): labctl ÷ nginx: lowest %.2fx over N=%v (target >= 0.95x, byte counting on)", worst, c.Ns)
	fmt.Fprintf(w, "**ratio:** %s\n\n", res.Ratio)
	return res, nil
}
