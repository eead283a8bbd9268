package bench

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// TestHostsReport: the ratio is each round's several-host submit-to-dispatch
// p99 over the same round's SQLite p99; the target needs every job
// complete, the ratio within 2x and the several-host p99 under 100 ms.
// Queue-to-start (here half of it) is shown beside, not judged.
func TestHostsReport(t *testing.T) {
	c := HostsCase{Scale: ScaleCase{Rounds: 2, Nodes: 4, Jobs: 4, ImageSize: 1 << 20}, Hosts: 3}
	// submit-to-dispatch of 4 jobs, all equal: p99 = x.
	run := func(x float64, complete int) scaleRun {
		return scaleRun{q2d: []float64{x, x, x, x}, q2s: []float64{x / 2, x / 2, x / 2, x / 2}, submit: []float64{.01, .01, .01, .02}, complete: complete,
			wall: 10, submitWall: .5, daemonCPU: 2, dbCPU: .4, perHost: []int{2, 1, 1}, hostQ2s: [][]float64{{x}, {x}, {x}}}
	}
	for _, tc := range []struct {
		name      string
		sqlite    []float64 // p99 s per round
		several   []float64
		complete  int
		leads     bool
		wantRatio string
	}{
		{"within", []float64{.020, .040}, []float64{.030, .060}, 4, true, "1.50x [1.50–1.50]"},
		{"twice is the limit", []float64{.020, .020}, []float64{.040, .040}, 4, true, "2.00x [2.00–2.00]"},
		{"over 2x", []float64{.010, .020}, []float64{.030, .060}, 4, false, "3.00x [3.00–3.00]"},
		{"over 100 ms", []float64{.080, .090}, []float64{.120, .130}, 4, false, "1.47x [1.44–1.50]"},
		{"a job failed", []float64{.020, .020}, []float64{.030, .030}, 3, false, "1.50x [1.50–1.50]"},
	} {
		var runs [3][]scaleRun
		for r := range 2 {
			runs[0] = append(runs[0], run(tc.sqlite[r], 4))
			runs[1] = append(runs[1], run(tc.sqlite[r], 4))
			runs[2] = append(runs[2], run(tc.several[r], tc.complete))
		}
		var b bytes.Buffer
		res := c.report(&b, c.setups(), runs[:])
		out := b.String()
		q2s := fmt.Sprintf("queue-to-start p99 %.1f", 1000*(tc.several[0]+tc.several[1])/4) // the median of two rounds
		if res.Leads != tc.leads || !strings.Contains(res.Ratio, tc.wantRatio) || !strings.Contains(res.Ratio, q2s) {
			t.Errorf("%s: leads %v, ratio %q; want %v, %q and %q", tc.name, res.Leads, res.Ratio, tc.leads, tc.wantRatio, q2s)
		}
		for _, want := range []string{"| figure | 1 host, SQLite median [min–max] | 1 host, PostgreSQL median [min–max] | 3 hosts, one PostgreSQL median [min–max] |",
			"| jobs run by each host (last round) | 2 / 1 / 1 |", "| **submits per second** (jobs ÷ first submit to last answered) | 8 [8–8] |",
			"| **daemon CPU ms per job** (every labctl serve) | 500.0 [500.0–500.0] |"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: the report has no %q:\n%s", tc.name, want, out)
			}
		}
	}
}
