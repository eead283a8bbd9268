package bench

import (
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// TFTPCase is case 1, the PXE storm: N clients at once fetch the NBP or
// the initrd from each server, with and without blksize and windowsize.
type TFTPCase struct {
	Rounds   int
	Files    []string // names under Env.Root
	Ns       []int
	BlkSizes []int // 0: no blksize option (512)
	Windows  []int // 0: no windowsize option
	// Cap bounds runs that would take minutes (the initrd for 50 clients
	// or more): they report throughput over the window, and the storm's
	// duration it implies.
	Cap     time.Duration
	CapFrom int64 // bytes × clients above which a run is capped
	// SoloBytes is what a run of a single client moves at least: it
	// fetches the file again, back to back, as often as that takes (the
	// same count for every server), the servers taking turns fetch by
	// fetch. A single NBP fetch lasts a few milliseconds, where a
	// scheduler hiccup on a shared machine decides the figure; 0: one
	// fetch.
	SoloBytes int64
	Settle    time.Duration
	// Generators are the load generators (GenBench, GenCurl); curl runs
	// the lock-step configurations only, and of those only the client
	// counts in CurlNs (empty: every N): a run of hundreds of processes
	// takes a while to start on a busy machine.
	Generators []string
	CurlNs     []int
}

type tftpKey struct {
	gen         string
	file        string
	n, blk, win int
}

type tftpRuns struct {
	mbps, cpuPerGB, p50, p99, pmax []float64
	ok, failed, cut, timeouts      int
	peakMB                         float64
	perClientMin, perClientMed     []float64
	capped                         bool
	granted                        string
	fails                          map[string]int
	crashed                        int
}

// CaseResult is the summary a case hands to the report's last lines.
type CaseResult struct {
	Name  string
	Ratio string // the ratio line
	Leads bool   // labctl meets the case's target
	Notes []string
}

// Run runs the case and writes its tables to w; progress goes to logw.
func (c TFTPCase) Run(ctx context.Context, env *Env, w, logw io.Writer) (CaseResult, error) {
	res := CaseResult{Name: "1 TFTP PXE storm"}
	refs := map[string][]byte{}
	for _, f := range c.Files {
		b, err := os.ReadFile(filepath.Join(env.Root, f))
		if err != nil {
			return res, err
		}
		refs[f] = b
	}
	servers, skipped := TFTPServers(env, slices.Max(c.Ns))
	if err := startAll(w, servers, skipped); err != nil {
		return res, err
	}
	defer stopAll(servers)

	gens := c.Generators
	if len(gens) == 0 {
		gens = []string{GenBench}
	}
	var keys []tftpKey
	for _, g := range gens {
		for _, f := range c.Files {
			for _, n := range c.Ns {
				for _, b := range c.BlkSizes {
					for _, win := range c.Windows {
						if g != GenBench && (win > 0 || len(c.CurlNs) > 0 && !slices.Contains(c.CurlNs, n)) {
							continue
						}
						keys = append(keys, tftpKey{g, f, n, b, win})
					}
				}
			}
		}
	}
	runs := map[tftpKey]map[string]*tftpRuns{}
	for _, k := range keys {
		runs[k] = map[string]*tftpRuns{}
	}
	start := time.Now()
	for r := range c.Rounds {
		for _, k := range keys {
			var order []*Server
			for _, s := range rotate(servers, r) {
				if k.win == 0 || s.Windows { // else it would not grant the window: its lock-step row stands for it
					order = append(order, s)
				}
			}
			run := RunTFTP
			if k.gen == GenCurl {
				run = RunTFTPCurl
			}
			// prepare makes sure s runs and returns its runs and load.
			prepare := func(s *Server) (*tftpRuns, TFTPLoad, error) {
				rr := runs[k][s.Name]
				if rr == nil {
					rr = &tftpRuns{fails: map[string]int{}}
					runs[k][s.Name] = rr
				}
				load := TFTPLoad{Addr: s.Addr, File: k.file, Ref: refs[k.file], N: k.n, BlkSize: k.blk, Window: k.win}
				if int64(len(refs[k.file]))*int64(k.n) > c.CapFrom {
					load.Cap = c.Cap
					rr.capped = true
				}
				if err := ctx.Err(); err != nil {
					return rr, load, err
				}
				restarted, err := s.EnsureRunning()
				if restarted {
					rr.crashed++
					fmt.Fprintf(logw, "  %s had died; restarted\n", s.Name)
				}
				return rr, load, err
			}
			record := func(s *Server, rr *tftpRuns, out TFTPResult, cpu, peak, busy float64) {
				if !s.Alive() {
					rr.crashed++
				}
				rr.mbps = append(rr.mbps, out.MBps())
				if out.Bytes > 0 {
					rr.cpuPerGB = append(rr.cpuPerGB, cpu/(float64(out.Bytes)/1e9))
				}
				rr.p50 = append(rr.p50, Percentile(out.Durations, .5))
				rr.p99 = append(rr.p99, Percentile(out.Durations, .99))
				rr.pmax = append(rr.pmax, Percentile(out.Durations, 1))
				rr.perClientMin = append(rr.perClientMin, Percentile(out.PerClientMBps, 0))
				rr.perClientMed = append(rr.perClientMed, Percentile(out.PerClientMBps, .5))
				rr.ok += out.OK
				rr.failed += out.Failed
				rr.cut += out.Cut
				rr.timeouts += out.Timeouts
				rr.peakMB = max(rr.peakMB, peak)
				if out.Granted != "" {
					rr.granted = out.Granted
				}
				for k, v := range out.Fails {
					rr.fails[k] += v
				}
				fmt.Fprintf(logw, "  r%d %-5s %-10s %-11s n=%-4d bs=%-4d ws=%-2d %7.1f MB/s ok=%d failed=%d cut=%d retries=%d cpu=%.2fs peak=%.1fMB busy=%.1f\n",
					r+1, k.gen, s.Name, k.file, k.n, k.blk, k.win, out.MBps(), out.OK, out.Failed, out.Cut, out.Timeouts, cpu, peak, busy)
				for _, why := range slices.Sorted(maps.Keys(out.Fails)) {
					fmt.Fprintf(logw, "      failed %d: %s\n", out.Fails[why], why)
				}
			}
			if reps := c.repeats(len(refs[k.file]), k.n); reps > 1 {
				// A single client's fetches, the servers taking turns
				// fetch by fetch: whatever else the machine does while
				// the row runs falls on every server alike.
				rrs, loads := make([]*tftpRuns, len(order)), make([]TFTPLoad, len(order))
				for i, s := range order {
					var err error
					if rrs[i], loads[i], err = prepare(s); err != nil {
						return res, err
					}
				}
				busy0 := MachineBusy()
				samples := make([]*Sample, len(order))
				for i, s := range order {
					samples[i] = StartSample(s.Group())
				}
				outs, err := runTurns(ctx, run, loads, reps)
				time.Sleep(200 * time.Millisecond) // forked children get reaped and counted
				for i, s := range order {
					cpu, peak := samples[i].Stop()
					if err == nil {
						record(s, rrs[i], outs[i], cpu, peak, MachineBusy()-busy0)
					}
				}
				if err != nil {
					return res, err
				}
				time.Sleep(c.Settle)
				continue
			}
			for _, s := range order {
				rr, load, err := prepare(s)
				if err != nil {
					return res, err
				}
				busy0 := MachineBusy()
				sample := StartSample(s.Group())
				out, err := run(ctx, load)
				time.Sleep(200 * time.Millisecond) // forked children get reaped and counted
				cpu, peak := sample.Stop()
				if err != nil {
					return res, err
				}
				record(s, rr, out, cpu, peak, MachineBusy()-busy0)
				if out.Cut > 0 {
					// The cap cut transfers the server may go on
					// sending for (dnsmasq and atftpd retransmit to
					// clients that are gone for seconds): the next
					// run's clients, taking the same ports, would hear
					// this server first and take it for theirs (curl
					// answers the first source it hears). Restarting
					// ends them, as a run's end would on a real lab.
					s.Stop()
					if err := s.Start(); err != nil {
						return res, fmt.Errorf("restart %s after a capped run: %w", s.Name, err)
					}
				}
				time.Sleep(c.Settle)
			}
		}
		fmt.Fprintf(logw, "tftp round %d done at +%s\n", r+1, time.Since(start).Round(time.Second))
	}

	// Tables: one per file and N.
	fmt.Fprintf(w, "### Case 1: TFTP PXE storm (%d rounds, servers interleaved; CPU: %s)\n\n", c.Rounds, servers[0].Group().Method())
	fmt.Fprintf(w, "Servers: %s. Clients: the bench's own (blksize, tsize, RFC 7440 windowsize; every byte compared; 1 s timeout, 5 retries), "+
		"and where the tables say so curl's TFTP client, one process per client, lock-step (blksize, tsize; its output piped to the bench, every byte compared; "+
		"processes started before the clock, each waiting for its URL on stdin; retransmits after max-time ÷ retries, 5 s here; its retries are not counted). "+
		"A window row lists only servers that grant windowsize; a client asking the others gets their lock-step rate, so the best peer for a window row is the best of both. "+
		"÷ best peer: labctl's median ÷ the best peer median.\n\n", serverNotes(servers))
	var worst float64 = math.Inf(1)
	worstKey := ""
	ratios := &Table{Head: []string{"client", "file", "N", "blksize", "window", "labctl MB/s", "best peer", "peer MB/s", "labctl ÷ best peer", "labctl failed"}}
	failsAtScale := 0
	for _, gen := range gens {
		for _, file := range c.Files {
			for _, n := range c.Ns {
				t := &Table{Head: []string{"blksize", "window", "server", "MB/s median [min–max]", "÷ best peer", "per transfer p50 / p99 / max s", "ok / failed / cut", "client retries", "CPU s/GB", "peak MB"}}
				var whys []string // the failures' reasons, per server and block size
				capped := false
				for _, blk := range c.BlkSizes {
					for _, win := range c.Windows {
						k := tftpKey{gen, file, n, blk, win}
						if runs[k] == nil {
							continue
						}
						bestPeer, bestName := bestTFTPPeer(runs, k)
						for _, s := range servers {
							rr := runs[k][s.Name]
							if rr == nil {
								continue
							}
							capped = capped || rr.capped
							mb := Summarize(rr.mbps)
							ratio := "–"
							if s.Name == "labctl" {
								ratio = Ratio(mb.Med, bestPeer)
							} else {
								ratio = Ratio(mb.Med, bestPeer) + " of best"
							}
							times := fmt.Sprintf("%s / %s / %s", f(Median(rr.p50), 3), f(Median(rr.p99), 3), f(Median(rr.pmax), 3))
							if rr.capped {
								eta := float64(n) * float64(len(refs[file])) / 1e6 / mb.Med
								times = fmt.Sprintf("capped: storm of %d would take %s s; per client MB/s min %s, p50 %s", n, f(eta, 0), f(Median(rr.perClientMin), 2), f(Median(rr.perClientMed), 2))
							}
							retries := fmt.Sprint(rr.timeouts)
							if gen != GenBench {
								retries = "–"
							}
							name := s.Name
							if rr.crashed > 0 {
								name += fmt.Sprintf(" (died %dx)", rr.crashed)
							}
							for _, why := range slices.Sorted(maps.Keys(rr.fails)) {
								whys = append(whys, fmt.Sprintf("%s blksize %s window %s: %d × %s", s.Name, blkName(blk), winName(win), rr.fails[why], why))
							}
							t.Add(blkName(blk), winName(win), name, mb.Format(1), ratio, times,
								fmt.Sprintf("%d / %d / %d", rr.ok, rr.failed, rr.cut), retries,
								f(Median(rr.cpuPerGB), 1), f(rr.peakMB, 1))
						}
						if lab := runs[k]["labctl"]; lab != nil {
							lm := Median(lab.mbps)
							ratios.Add(gen, file, fmt.Sprint(n), blkName(blk), winName(win), f(lm, 1), bestName, f(bestPeer, 1), Ratio(lm, bestPeer), fmt.Sprint(lab.failed))
							if bestPeer > 0 && lm/bestPeer < worst {
								worst = lm / bestPeer
								worstKey = fmt.Sprintf("%s client, %s N=%d blksize %s window %s", gen, file, n, blkName(blk), winName(win))
							}
							if n >= 400 {
								failsAtScale += lab.failed
							}
						}
					}
				}
				title := fmt.Sprintf("#### %s (%s), N=%d, %s client", file, sizeName(len(refs[file])), n, gen)
				if capped {
					title += fmt.Sprintf(" — time-capped at %s: MB/s over the window; storm time = N × size ÷ MB/s", c.Cap)
				}
				if reps := c.repeats(len(refs[file]), n); reps > 1 {
					title += fmt.Sprintf(" — each run %d fetches back to back, the servers taking turns fetch by fetch (MB/s: all bytes over the sum of their times; per transfer: each fetch)", reps)
				}
				if len(t.Rows) == 0 {
					continue
				}
				fmt.Fprintln(w, title)
				fmt.Fprintln(w)
				t.Write(w)
				if len(whys) > 0 {
					fmt.Fprintf(w, "Failed transfers, by reason: %s.\n\n", strings.Join(whys, "; "))
				}
			}
		}
	}
	fmt.Fprintln(w, "#### Case 1 summary: labctl ÷ best peer, per configuration")
	fmt.Fprintln(w)
	ratios.Write(w)
	res.Leads = worst >= 1.0 && failsAtScale == 0
	res.Ratio = fmt.Sprintf("case 1 (TFTP storm): labctl ÷ best peer: lowest %.2fx (%s); labctl failures at N>=400 with default settings: %d", worst, worstKey, failsAtScale)
	fmt.Fprintf(w, "**ratio:** %s\n\n", res.Ratio)
	return res, nil
}

// repeats is how many runs back to back one measurement takes for a file
// of size bytes fetched by n clients (see SoloBytes).
func (c TFTPCase) repeats(size, n int) int {
	if n != 1 || size <= 0 || c.SoloBytes <= int64(size) {
		return 1
	}
	return int((c.SoloBytes + int64(size) - 1) / int64(size))
}

// runTurns runs each load reps times, the loads taking turns (load 0,
// 1, ... then 0 again), and adds each load's runs up as one: its bytes
// over the sum of its runs' wall times, every transfer's duration. A load
// whose run had a transfer fail or cut takes no more turns; an error ends
// all.
func runTurns(ctx context.Context, run func(context.Context, TFTPLoad) (TFTPResult, error), loads []TFTPLoad, reps int) ([]TFTPResult, error) {
	outs := make([]TFTPResult, len(loads))
	for i := range outs {
		outs[i].Fails = map[string]int{}
	}
	failed := make([]bool, len(loads))
	for range reps {
		for i, l := range loads {
			if failed[i] {
				continue
			}
			r, err := run(ctx, l)
			if err != nil {
				return outs, err
			}
			o := &outs[i]
			o.OK, o.Failed, o.Cut = o.OK+r.OK, o.Failed+r.Failed, o.Cut+r.Cut
			o.Bytes += r.Bytes
			o.Wall += r.Wall
			o.Timeouts += r.Timeouts
			o.Durations = append(o.Durations, r.Durations...)
			for k, v := range r.Fails {
				o.Fails[k] += v
			}
			if r.Granted != "" {
				o.Granted = r.Granted
			}
			failed[i] = r.Failed > 0 || r.Cut > 0
		}
	}
	for i := range outs {
		sort.Float64s(outs[i].Durations)
		outs[i].PerClientMBps = []float64{outs[i].MBps()} // one client: its rate is the aggregate
	}
	return outs, nil
}

// bestTFTPPeer is the best peer median for k: peers that ran k, and for a
// window row also each peer's lock-step figure at the same block size
// (what a client asking for a window gets from a server that ignores it).
func bestTFTPPeer(runs map[tftpKey]map[string]*tftpRuns, k tftpKey) (float64, string) {
	best, name := 0.0, "–"
	consider := func(kk tftpKey, suffix string) {
		for s, rr := range runs[kk] {
			if strings.HasPrefix(s, "labctl") {
				continue // labctl, or an older labctl beside it: not a peer
			}
			if m := Median(rr.mbps); m > best {
				best, name = m, s+suffix
			}
		}
	}
	consider(k, "")
	if k.win > 0 {
		consider(tftpKey{k.gen, k.file, k.n, k.blk, 0}, " (lock-step)")
	}
	return best, name
}

func serverNotes(servers []*Server) string {
	var parts []string
	for _, s := range servers {
		parts = append(parts, fmt.Sprintf("%s (%s)", s.Name, s.Note))
	}
	return strings.Join(parts, ", ")
}

func blkName(b int) string {
	if b == 0 {
		return "512 (none asked)"
	}
	return fmt.Sprint(b)
}

func winName(w int) string {
	if w == 0 {
		return "–"
	}
	return fmt.Sprint(w)
}

func sizeName(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d KiB", n>>10)
}

// startAll notes the servers skipped in the report and starts the others,
// which must include labctl, first; on failure none is left running.
func startAll(w io.Writer, servers []*Server, skipped []string) error {
	for _, s := range skipped {
		fmt.Fprintf(w, "> skipped %s\n\n", s)
	}
	if len(servers) == 0 || servers[0].Name != "labctl" {
		return ErrNoServers
	}
	for _, s := range servers {
		if err := s.Start(); err != nil {
			stopAll(servers)
			return err
		}
	}
	return nil
}

func stopAll(servers []*Server) {
	for _, s := range servers {
		s.Stop()
	}
}
