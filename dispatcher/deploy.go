package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/sol"
)

// deploy boots the master image over PXE and streams the job's image onto
// the node's disk, proving it on the node as the verify mode says (see
// devices.Deploy): a sha256 of the bytes as they arrive (stream), of the
// bytes read back from the disk (readback), or both. A compressed image
// goes to the node as it is or as its zstd copy (devices.Deploy.Repack).
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
	disk := d.Disk
	if disk == "" {
		disk = r.set.Master.Disk
	}
	verify := d.Verify
	if verify == "" {
		verify = r.set.Deploy.Verify
	}
	r.event("deploy: image %s (%s, %d bytes uncompressed) to %s, sha256 %s", d.Image, image.Compression, image.RawSize, disk, want)
	if verify == devices.VerifyStream && image.Compression == None {
		// The node hashes every byte either way, and reading them back in
		// 4 MiB blocks costs less than busybox tee's 1 KiB copies.
		r.event("deploy: verify stream: the image is not compressed, so it is read back instead (hashing it on its way costs more)")
		verify = devices.VerifyReadback
	}
	r.event("deploy: verify %s: %s", verify, verifyMeaning(verify))

	// What the node is served and the digest its stream hash must show,
	// worked out while the master boots.
	toZstd := r.set.Deploy.Repack == devices.RepackZstd && image.Compression != None && image.Compression != Zstd
	var ready chan servedImage
	taken := false
	if toZstd || verify.Stream() {
		ready = make(chan servedImage, 1)
		go func() { ready <- r.serveAs(ctx, image, want, toZstd, verify.Stream()) }()
		defer func() {
			if !taken {
				// The job ended first: close the copy the repack opens,
				// once it is done.
				go func() {
					if s := <-ready; s.File != image.File {
						s.File.Close()
					}
				}()
			}
		}()
	}

	sh, err := r.bootMaster(ctx)
	if err != nil {
		return err
	}
	if err := r.masterNetwork(ctx, sh); err != nil {
		return err
	}

	served := servedImage{File: image.File, Compression: image.Compression}
	if ready != nil {
		served, taken = <-ready, true
		if served.err != nil {
			return served.err
		}
		if served.File != image.File {
			defer served.File.Close()
		}
		if served.note != "" {
			r.event("%s", served.note)
		}
	}
	img, err := r.Netboot.PublishImage(served.File)
	if err != nil {
		return fmt.Errorf("publish image: %w", err)
	}
	defer img.Close()

	start := r.Now()
	stop := r.watchTransfer("deploy", "sent", img.BytesServed, img.Size())
	res, err := sh.run(ctx, writeCommand(img.URL(), served.Compression.Decompressor(), disk, verify.Stream(), r.tag))
	stop()
	if err != nil {
		return fmt.Errorf("write image: %w", err)
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("write image: the pipeline exited %d: %s", res.ExitCode, lastLines(res.Output, 3))
	}
	r.event("deploy: wrote the image in %s (its line %s)", r.Now().Sub(start).Round(10*time.Millisecond), res.Typing)
	if verify.Stream() {
		m := sha256Line.FindStringSubmatch(res.Output)
		if m == nil {
			return fmt.Errorf("stream sha256: no digest in the node's output %q", lastLines(res.Output, 2))
		}
		what := "image"
		if served.Compression != None {
			what = string(served.Compression) + " file"
		}
		if got := strings.ToLower(m[1]); got != served.SHA256 {
			return fmt.Errorf("stream sha256 mismatch: the node received bytes with sha256 %s, the %s served has %s: the image did not arrive intact", got, what, served.SHA256)
		}
		r.event("deploy: stream sha256 %s of the %s verified on the node: the image arrived intact and was written without error; the disk was not read back", served.SHA256, what)
	}
	if !verify.Readback() {
		return nil
	}

	// Read the written bytes back from the disk and hash them on the node.
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
	r.event("deploy: readback sha256 %s verified on the node in %s: the disk holds the image", want, r.Now().Sub(start).Round(10*time.Millisecond))
	return nil
}

// servedImage is what the node is served: the job's image or its zstd
// copy, with the sha256 of its bytes when the node hashes them.
type servedImage struct {
	File        *os.File
	Compression Compression
	SHA256      string
	note        string // what happened, for the job log
	err         error
}

// serveAs works out what the node is served: the image's zstd copy when
// toZstd asks for one and it can be had (else the image, saying why), and
// the digest of its bytes when stream asks for one. It runs while the
// master boots, so it sends the job's events back as its note.
func (r *runner) serveAs(ctx context.Context, image imageFile, want string, toZstd, stream bool) servedImage {
	s := servedImage{File: image.File, Compression: image.Compression}
	if toZstd {
		start := r.Now()
		p, err := repack(ctx, image, want, r.CacheDir)
		switch {
		case err == nil:
			how := "from the cache"
			if p.Made {
				how = fmt.Sprintf("made in %s", r.Now().Sub(start).Round(10*time.Millisecond))
			}
			size := int64(-1)
			if fi, err := p.File.Stat(); err == nil {
				size = fi.Size()
			}
			return servedImage{File: p.File, Compression: Zstd, SHA256: p.SHA256,
				note: fmt.Sprintf("deploy: the node is served the image repacked into zstd (%d bytes, %s; the master unpacks zstd faster than %s)", size, how, image.Compression)}
		case errors.Is(err, errNoRepack):
			s.note = fmt.Sprintf("deploy: the image is served as it is (%s): %v", image.Compression, err)
		default:
			s.err = fmt.Errorf("repack the image into zstd: %w", err)
			return s
		}
	}
	if stream {
		s.SHA256, s.err = streamDigest(image, want, r.CacheDir)
	}
	return s
}

// verifyMeaning says what a verify mode proves, for the job log.
func verifyMeaning(m devices.VerifyMode) string {
	switch m {
	case devices.VerifyStream:
		return "the node hashes the image as it arrives (proves it arrived intact; the disk is not read back)"
	case devices.VerifyBoth:
		return "the node hashes the image as it arrives and reads it back from the disk (proves it arrived intact and the disk holds it)"
	}
	return "the node reads the written image back from the disk and hashes it (proves the disk holds it)"
}

// writeCommand is the master's line that writes the image at url to disk:
// wget | decompressor | dd, with pipefail. With stream, busybox tee also
// copies what wget receives into a FIFO that sha256sum reads, so the bytes
// are hashed as they arrive, and a sync ends it (readback syncs before it
// reads). The stream is hashed before it is decompressed: a few times
// fewer bytes than the disk gets, which matters on a slow master CPU; the
// decompressor's own integrity check (gzip's CRC and length, xz's and
// zstd's checksums) and pipefail cover the decompression. tag makes the
// FIFO's name the job's own.
func writeCommand(url, decompressor, disk string, stream bool, tag string) string {
	fetch := "wget -q -O - '" + url + "'"
	var rest []string
	if decompressor != "" {
		rest = append(rest, decompressor)
	}
	rest = append(rest, "dd of="+disk+" bs=4M")
	if !stream {
		return "set -o pipefail; " + strings.Join(append([]string{fetch}, rest...), " | ")
	}
	// The subshell is not interactive: no job-control lines, and wait
	// sees sha256sum finish before the line's exit status is read. The
	// FIFO's name is typed once: every character costs an echo.
	return fmt.Sprintf("set -o pipefail; f=/tmp/labctl-%[1]s.fifo; rm -f $f; mkfifo $f && (sha256sum <$f & %[2]s | tee $f | %[3]s; rc=$?; wait; rm -f $f; sync; exit $rc)",
		tag, fetch, strings.Join(rest, " | "))
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

// masterNetwork runs the device type's network commands in the master.
func (r *runner) masterNetwork(ctx context.Context, sh *shell) error {
	for _, c := range r.set.Master.NetworkCommands {
		res, err := sh.run(ctx, c)
		if err != nil {
			return fmt.Errorf("network set-up: %w", err)
		}
		if res.ExitCode != 0 {
			return fmt.Errorf("network set-up: %q exited %d: %s", c, res.ExitCode, lastLines(res.Output, 3))
		}
	}
	return nil
}

// pacing is the device's typing pacing with the given fixed delay. Shell
// lines are typed with strict echo: a character that does not echo was
// lost, and the line is typed again (see shell.typeLine).
func (r *runner) pacing(delay time.Duration) sol.Pacing {
	p := sol.Pacing{Mode: sol.Fixed, Delay: delay, EchoTimeout: r.echoTimeout}
	if r.set.Console.Pacing == devices.PacingEcho {
		// minGap, the window and the echo timeout are what this console
		// was found to need earlier in the job.
		p.Mode, p.StrictEcho, p.MinGap, p.Window = sol.Echo, true, r.minGap, r.echoWindow
	}
	return p
}

// watchTransfer reports a transfer's progress (bytes of size so far, as
// counted by done) once a second until the returned stop is called, and
// logs it every 10 s as the action's event.
func (r *runner) watchTransfer(action, verb string, count func() int64, size int64) (stop func()) {
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
				r.Progress.Transfer(count(), size, r.Now().Sub(start))
				return
			case <-tick.C:
			}
			now := r.Now()
			n := count()
			r.Progress.Transfer(n, size, now.Sub(start))
			if now.Sub(lastLog) >= 10*time.Second {
				lastLog = now
				r.event("%s: %s", action, transferLine(n, size, verb, now.Sub(start)))
			}
		}
	}()
	return func() { close(done); <-finished }
}

// transferLine reads like "32.0 MiB of 64.0 MiB sent (50%, 12.3 MiB/s)".
func transferLine(done, total int64, verb string, elapsed time.Duration) string {
	rate := float64(done) / (1 << 20) / max(elapsed.Seconds(), 0.001)
	if total > 0 {
		return fmt.Sprintf("%.1f MiB of %.1f MiB %s (%d%%, %.1f MiB/s)",
			float64(done)/(1<<20), float64(total)/(1<<20), verb, done*100/total, rate)
	}
	return fmt.Sprintf("%.1f MiB %s (%.1f MiB/s)", float64(done)/(1<<20), verb, rate)
}

// lastLines returns the last n lines of s, for error messages.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
