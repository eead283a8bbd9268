package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/labctl/labctl/sol"
)

// liveView shows a running job to a person: the dispatcher's events as
// short lines and, on a terminal, a progress bar while the image streams.
// It implements dispatcher.Progress.
type liveView struct {
	w     io.Writer
	quiet bool
	tty   bool

	mu    sync.Mutex
	bar   bool   // a progress bar is on the last line
	phase string // the job's phase, which names what the bar counts
}

func newLiveView(w io.Writer, quiet bool) *liveView {
	tty := false
	if f, ok := w.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	return &liveView{w: w, quiet: quiet, tty: tty}
}

// Event shows one job log line of the dispatcher ("TIME # text").
func (v *liveView) Event(line string) {
	if v.quiet {
		return
	}
	text, at := line, ""
	if rec, err := sol.ParseRecord([]byte(line)); err == nil {
		text, at = string(rec.Data), rec.Time.Local().Format("15:04:05")
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.clearBar()
	fmt.Fprintf(v.w, "%s %s\n", at, text)
}

// Phase implements dispatcher.Progress.
func (v *liveView) Phase(name string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.phase = name
}

// Transfer implements dispatcher.Progress: a bar on a terminal.
func (v *liveView) Transfer(done, total int64, elapsed time.Duration) {
	if v.quiet || !v.tty {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	fmt.Fprintf(v.w, "\r%s", progressBar(transferLabel(v.phase), done, total, elapsed, 30))
	v.bar = true
}

// Done ends the view (clears a bar left on screen).
func (v *liveView) Done() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.clearBar()
}

func (v *liveView) clearBar() {
	if v.bar {
		fmt.Fprint(v.w, "\r\x1b[K")
		v.bar = false
	}
}

// transferLabel names what a phase's transfer counts: the image a deploy
// sends, the disk a save receives.
func transferLabel(phase string) string {
	if phase == "save" {
		return "disk"
	}
	return "image"
}

// progressBar draws "image [#########.........]  32.0/64.0 MiB  12.3 MiB/s".
func progressBar(label string, done, total int64, elapsed time.Duration, width int) string {
	rate := float64(done) / (1 << 20) / max(elapsed.Seconds(), 0.001)
	if total <= 0 {
		return fmt.Sprintf("%s %8.1f MiB  %6.1f MiB/s", label, float64(done)/(1<<20), rate)
	}
	filled := int(int64(width) * min(done, total) / total)
	return fmt.Sprintf("%s [%s%s] %6.1f/%.1f MiB %6.1f MiB/s", label,
		strings.Repeat("#", filled), strings.Repeat(".", width-filled),
		float64(done)/(1<<20), float64(total)/(1<<20), rate)
}
