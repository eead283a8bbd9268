package bench

import (
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
)

// Stat is the median, min and max of one figure over the rounds.
type Stat struct{ Med, Min, Max float64 }

// Summarize returns the median, min and max of xs (NaN if empty).
func Summarize(xs []float64) Stat {
	if len(xs) == 0 {
		return Stat{math.NaN(), math.NaN(), math.NaN()}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stat{med, s[0], s[len(s)-1]}
}

// Format prints "med [min–max]" with the given decimals.
func (s Stat) Format(dec int) string {
	if math.IsNaN(s.Med) {
		return "–"
	}
	return fmt.Sprintf("%.*f [%.*f–%.*f]", dec, s.Med, dec, s.Min, dec, s.Max)
}

// Percentile of sorted xs (nearest rank), NaN if empty.
func Percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// PairedRatios summarizes a[i] ÷ b[i] over the rounds both have: the
// ratio within each round, where the servers took turns under the same
// conditions.
func PairedRatios(a, b []float64) Stat {
	var rs []float64
	for i := range min(len(a), len(b)) {
		if b[i] > 0 {
			rs = append(rs, a[i]/b[i])
		}
	}
	return Summarize(rs)
}

// Median of xs (NaN if empty).
func Median(xs []float64) float64 { return Summarize(xs).Med }

// Table is a markdown table.
type Table struct {
	Head []string
	Rows [][]string
}

// Add appends a row.
func (t *Table) Add(cells ...string) { t.Rows = append(t.Rows, cells) }

// Write prints the table.
func (t *Table) Write(w io.Writer) {
	fmt.Fprintf(w, "| %s |\n", strings.Join(t.Head, " | "))
	seps := make([]string, len(t.Head))
	for i := range seps {
		seps[i] = "---"
	}
	fmt.Fprintf(w, "|%s|\n", strings.Join(seps, "|"))
	for _, r := range t.Rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
	}
	fmt.Fprintln(w)
}

// f formats a float with dec decimals, "–" for NaN.
func f(x float64, dec int) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "–"
	}
	return fmt.Sprintf("%.*f", dec, x)
}

// Ratio formats a÷b as "1.23x".
func Ratio(a, b float64) string {
	if b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return "–"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// rotate returns xs rotated left by k: the server order changes every
// round so that no server always runs first (on a cold cache) or last.
func rotate[T any](xs []T, k int) []T {
	out := make([]T, len(xs))
	for i := range xs {
		out[i] = xs[(i+k)%len(xs)]
	}
	return out
}

// ErrSkipped marks a case that could not run here (a component missing);
// the report says so instead of failing.
var ErrSkipped = errors.New("skipped")
