package dispatcher

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/sol"
)

// deploy boots the master image over PXE and streams the job's image onto
// the node's disk, checking its sha256 on the node.
func (r *runner) deploy(ctx context.Context) error {
	d := r.Spec.Deploy
	ctx, cancel := context.WithTimeout(ctx, r.timeouts.Deploy)
	defer cancel()

	want, err := Digest(d, r.Images.PublicFiles)
	if err != nil {
		return err
	}
	image, err := prepareImage(ctx, d.Image, want, r.CacheDir, r.Images, r.event)
	if err != nil {
		return err
	}
	defer image.File.Close()
	img, err := r.Netboot.PublishImage(image.File)
	if err != nil {
		return fmt.Errorf("publish image: %w", err)
	}
	defer img.Close()
	disk := d.Disk
	if disk == "" {
		disk = r.set.Master.Disk
	}
	r.event("deploy: image %s (%s, %d bytes uncompressed) to %s, sha256 %s", d.Image, image.Compression, image.RawSize, disk, want)

	sh, err := r.bootMaster(ctx)
	if err != nil {
		return err
	}
	for _, c := range r.set.Master.NetworkCommands {
		res, err := sh.run(ctx, c)
		if err != nil {
			return fmt.Errorf("network set-up: %w", err)
		}
		if res.ExitCode != 0 {
			return fmt.Errorf("network set-up: %q exited %d: %s", c, res.ExitCode, lastLines(res.Output, 3))
		}
	}

	stages := []string{"wget -q -O - '" + img.URL() + "'"}
	if dc := image.Compression.Decompressor(); dc != "" {
		stages = append(stages, dc)
	}
	stages = append(stages, "dd of="+disk+" bs=4M")
	pipeline := "set -o pipefail; " + strings.Join(stages, " | ")

	start := r.Now()
	stop := r.watchTransfer(img, img.Size())
	res, err := sh.run(ctx, pipeline)
	stop()
	if err != nil {
		return fmt.Errorf("write image: %w", err)
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("write image: the pipeline exited %d: %s", res.ExitCode, lastLines(res.Output, 3))
	}
	r.event("deploy: wrote the image in %s", r.Now().Sub(start).Round(10*time.Millisecond))

	// Read the written bytes back from the disk and hash them on the node.
	// (Hashing on the way in through tee and a FIFO reads the image once,
	// but busybox tee copies 1 KiB at a time: 7x slower under QEMU.)
	start = r.Now()
	res, err = sh.run(ctx, fmt.Sprintf("sync; dd if=%s bs=4M count=%d iflag=count_bytes 2>/dev/null | sha256sum", disk, image.RawSize))
	if err != nil {
		return fmt.Errorf("read the written image's sha256: %w", err)
	}
	m := sha256Line.FindStringSubmatch(res.Output)
	if res.ExitCode != 0 || m == nil {
		return fmt.Errorf("read the written image's sha256: exit %d, no digest in %q", res.ExitCode, lastLines(res.Output, 2))
	}
	if got := strings.ToLower(m[1]); got != want {
		return fmt.Errorf("sha256 mismatch: expected %s, the node's disk holds %s", want, got)
	}
	r.event("deploy: sha256 %s verified on the node in %s", want, r.Now().Sub(start).Round(10*time.Millisecond))
	return nil
}

// sha256Line finds sha256sum's "DIGEST  -" in a command's output: the 64
// hex digits before "  -", wherever they start. On a slow console a late
// echo of the typed command can land right in front of them (seen with
// 400 nodes on 2 CPUs: "s DIGEST  -" and "syncDIGEST  -", where the "c"
// is a hex digit too). A damaged digest still fails the comparison.
var sha256Line = regexp.MustCompile(`([0-9a-fA-F]{64})[ \t]+\*?-`)

// bootMaster boots the node into the master image and returns its shell,
// with a prompt unique to this job.
func (r *runner) bootMaster(ctx context.Context) (*shell, error) {
	if err := r.node.BootMaster(ctx); err != nil {
		return nil, err
	}
	sh := &shell{r: r, pacing: r.pacing(r.set.Console.BootloaderDelay()), prompt: r.node.masterPrompt()}
	if err := sh.setPrompt(ctx); err != nil {
		return nil, err
	}
	return sh, nil
}

// pacing is the device's typing pacing with the given fixed delay. Shell
// lines are typed with strict echo: a character that does not echo was
// lost, and the line is typed again (see shell.typeLine).
func (r *runner) pacing(delay time.Duration) sol.Pacing {
	p := sol.Pacing{Mode: sol.Fixed, Delay: delay, EchoTimeout: r.set.Console.EchoTimeout}
	if r.set.Console.Pacing == devices.PacingEcho {
		// minGap is what this console was found to need earlier in the job.
		p.Mode, p.StrictEcho, p.MinGap = sol.Echo, true, r.minGap
	}
	return p
}

// watchTransfer reports the image transfer's progress once a second until
// the returned stop is called.
func (r *runner) watchTransfer(img labctl.PublishedImage, size int64) (stop func()) {
	if img == nil {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	start := r.Now()
	go func() {
		defer close(finished)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		lastLog := start
		for {
			select {
			case <-done:
				r.Progress.Transfer(img.BytesServed(), size, r.Now().Sub(start))
				return
			case <-tick.C:
			}
			now := r.Now()
			served := img.BytesServed()
			r.Progress.Transfer(served, size, now.Sub(start))
			if now.Sub(lastLog) >= 10*time.Second {
				lastLog = now
				r.event("deploy: %s", transferLine(served, size, now.Sub(start)))
			}
		}
	}()
	return func() { close(done); <-finished }
}

// transferLine reads like "32.0 MiB of 64.0 MiB sent (50%, 12.3 MiB/s)".
func transferLine(done, total int64, elapsed time.Duration) string {
	rate := float64(done) / (1 << 20) / max(elapsed.Seconds(), 0.001)
	if total > 0 {
		return fmt.Sprintf("%.1f MiB of %.1f MiB sent (%d%%, %.1f MiB/s)",
			float64(done)/(1<<20), float64(total)/(1<<20), done*100/total, rate)
	}
	return fmt.Sprintf("%.1f MiB sent (%.1f MiB/s)", float64(done)/(1<<20), rate)
}

// lastLines returns the last n lines of s, for error messages.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
