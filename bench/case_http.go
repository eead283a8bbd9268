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
	// Slice cuts a run in turns of this long, the servers taking turns
	// (0: one turn of Duration each).
	Slice  time.Duration
	Settle time.Duration
	// Generators are the load generators: GenBench (the bench's raw
	// HTTP/1.1 client, a new connection per image) and GenWrk.
	Generators []string
}

// GenWrk is wrk, the HTTP benchmarking tool, as case 2's load generator.
const GenWrk = "wrk"

type httpKey struct {
	gen string
	n   int
}

type httpRuns struct {
	mbps, cpuPerGB, perMin, perMed []float64
	clientPerGB                    []float64
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
	gens := c.Generators
	if len(gens) == 0 {
		gens = []string{GenBench}
	}
	runs := map[httpKey]map[string]*httpRuns{}
	for r := range c.Rounds {
		for _, key := range httpKeys(gens, c.Ns) {
			n := key.n
			if runs[key] == nil {
				runs[key] = map[string]*httpRuns{}
			}
			order := rotate(servers, r)
			rrs := make([]*httpRuns, len(order))
			for i, s := range order {
				if err := ctx.Err(); err != nil {
					return res, err
				}
				if _, err := s.EnsureRunning(); err != nil {
					return res, err
				}
				if runs[key][s.Name] == nil {
					runs[key][s.Name] = &httpRuns{errors: map[string]int{}}
				}
				rrs[i] = runs[key][s.Name]
			}
			run := RunHTTP
			if key.gen == GenWrk {
				run = RunHTTPWrk
			}
			// The run is cut in slices, the servers taking turns slice by
			// slice: what else the machine does meanwhile (the load
			// generator shares it, and on a shared machine so do others)
			// falls on every server alike.
			slice := c.slice()
			slices := max(int(c.Duration/slice), 1)
			outs := make([]HTTPResult, len(order))
			busy0 := MachineBusy()
			samples := make([]*Sample, len(order))
			for i, s := range order {
				samples[i] = StartSample(s.Group())
				outs[i].Errors = map[string]int{}
			}
			var perMin, perMed [][]float64 = make([][]float64, len(order)), make([][]float64, len(order))
			for range slices {
				for i, s := range order {
					out, err := run(ctx, HTTPLoad{URL: s.URL, Size: fi.Size(), N: n, Duration: slice})
					if err != nil {
						for _, sm := range samples {
							sm.Stop()
						}
						return res, err
					}
					o := &outs[i]
					o.Bytes += out.Bytes
					o.Wall += out.Wall
					o.Complete += out.Complete
					o.ClientCPU += out.ClientCPU
					for k, v := range out.Errors {
						o.Errors[k] += v
					}
					perMin[i] = append(perMin[i], Percentile(out.PerClientMBps, 0))
					perMed[i] = append(perMed[i], Percentile(out.PerClientMBps, .5))
				}
			}
			time.Sleep(200 * time.Millisecond)
			busy := MachineBusy() - busy0
			for i, s := range order {
				cpu, peak := samples[i].Stop()
				out, rr := outs[i], rrs[i]
				rr.mbps = append(rr.mbps, out.MBps())
				if out.Bytes > 0 {
					rr.cpuPerGB = append(rr.cpuPerGB, cpu/(float64(out.Bytes)/1e9))
					rr.clientPerGB = append(rr.clientPerGB, out.ClientCPU/(float64(out.Bytes)/1e9))
				}
				rr.perMin = append(rr.perMin, Median(perMin[i]))
				rr.perMed = append(rr.perMed, Median(perMed[i]))
				rr.complete += out.Complete
				rr.peakMB = max(rr.peakMB, peak)
				for k, v := range out.Errors {
					rr.errors[k] += v
				}
				fmt.Fprintf(logw, "  r%d %-5s %-10s n=%-4d %8.1f MB/s complete=%d errors=%v cpu=%.2fs client cpu=%.2fs peak=%.1fMB busy=%.1f (all servers)\n",
					r+1, key.gen, s.Name, n, out.MBps(), out.Complete, out.Errors, cpu, out.ClientCPU, peak, busy)
			}
			time.Sleep(c.Settle)
		}
	}
	fmt.Fprintf(w, "### Case 2: HTTP image serving (%s image, %s per run in turns of %s, %d rounds, servers interleaved)\n\n", sizeName(int(fi.Size())), c.Duration, c.slice(), c.Rounds)
	fmt.Fprintf(w, "Servers: %s. Clients: the bench's own, which stream the image on raw HTTP/1.1 connections, one request each, starting over when it ends; "+
		"and wrk (N keep-alive connections on up to one thread per CPU, requesting the image again as soon as it ends; its own byte count and run time). "+
		"Per client figures of wrk are its mean. Within a run the servers take turns of %s; ÷ nginx is the ratio within each round (median, range over the rounds). "+
		"Client CPU: the load generator's own CPU per GB received (on loopback the receiver copies every byte).\n\n", serverNotes(servers), c.slice())
	t := &Table{Head: []string{"client", "N", "server", "MB/s median [min–max]", "÷ nginx, per round: median [min–max]", "per client MB/s min / p50", "whole images", "errors", "CPU s/GB", "client CPU s/GB", "peak MB"}}
	worst := 0.0
	first := true
	worstKey := ""

	for _, key := range httpKeys(gens, c.Ns) {
		n := key.n
		var nginx []float64
		if rr := runs[key]["nginx"]; rr != nil {
			nginx = rr.mbps
		}
		for _, s := range servers {
			rr := runs[key][s.Name]
			if rr == nil {
				continue
			}
			errs := 0
			for _, v := range rr.errors {
				errs += v
			}
			t.Add(key.gen, fmt.Sprint(n), s.Name, Summarize(rr.mbps).Format(0), PairedRatios(rr.mbps, nginx).Format(2),
				fmt.Sprintf("%s / %s", f(Median(rr.perMin), 1), f(Median(rr.perMed), 1)), fmt.Sprint(rr.complete), fmt.Sprint(errs),
				f(Median(rr.cpuPerGB), 2), f(Median(rr.clientPerGB), 2), f(rr.peakMB, 1))
		}
		if lab := runs[key]["labctl"]; lab != nil && len(nginx) > 0 {
			r := PairedRatios(lab.mbps, nginx).Med
			if first || r < worst {
				worst, first, worstKey = r, false, fmt.Sprintf("%s client, N=%d", key.gen, n)
			}
		}
	}
	t.Write(w)
	res.Leads = !first && worst >= 0.95
	res.Ratio = fmt.Sprintf("case 2 (HTTP image): labctl ÷ nginx: lowest %.2fx (%s) over N=%v, clients %v (target >= 0.95x, byte counting on)", worst, worstKey, c.Ns, gens)
	fmt.Fprintf(w, "**ratio:** %s\n\n", res.Ratio)
	return res, nil
}

// slice is how long one turn of a server lasts.
func (c HTTPCase) slice() time.Duration {
	if c.Slice > 0 && c.Slice < c.Duration {
		return c.Slice
	}
	return c.Duration
}

// httpKeys is the order runs are made in: each generator, each N.
func httpKeys(gens []string, ns []int) []httpKey {
	var keys []httpKey
	for _, g := range gens {
		for _, n := range ns {
			keys = append(keys, httpKey{g, n})
		}
	}
	return keys
}
