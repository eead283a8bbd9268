package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/labctl/labctl/internal/statedir"
	"github.com/labctl/labctl/results"
	"github.com/labctl/labctl/sol"
)

// test runs the job's test steps in the test OS shell, then fetches the
// artifacts.
func (r *runner) test(ctx context.Context) error {
	sh := r.testShell
	var typing sol.TypeReport
	for i, t := range r.Spec.Tests {
		step := &r.res.Steps[i]
		timeout := r.timeouts.Tests[i]
		sctx, cancel := context.WithTimeout(ctx, timeout)
		start := r.Now()
		var out strings.Builder
		rc, failed := 0, ""
		var err error
		for _, c := range t.Commands {
			var res commandResult
			res, err = sh.run(sctx, c)
			out.WriteString(res.Output)
			typing = addReports(typing, res.Typing)
			step.TypingDuration += res.Typing.Duration
			if err != nil || res.ExitCode != 0 {
				rc, failed = res.ExitCode, c
				break
			}
		}
		cancel()
		step.Duration = r.Now().Sub(start)
		step.Output = out.String()
		step.ExitCode, step.FailedCommand = rc, failed
		if err != nil {
			if ctx.Err() != nil || !errors.Is(sctx.Err(), context.DeadlineExceeded) {
				step.Result = results.Skipped
				return fmt.Errorf("test step %s: %w", t.Name, err)
			}
			// The step ran out of time: abandon its command and go on.
			step.Result = results.Timeout
			r.event("test %s: timed out after %s running %q; sending Ctrl-C", t.Name, timeout, short(failed))
			if err := r.interrupt(ctx, sh); err != nil {
				return fmt.Errorf("test step %s timed out and the shell did not come back: %w", t.Name, err)
			}
			continue
		}
		switch {
		case rc == 0 && !t.ExpectFailure:
			step.Result = results.Pass
		case rc != 0 && t.ExpectFailure:
			step.Result = results.ExpectedFail
		case rc == 0:
			step.Result = results.UnexpectedOK
		default:
			step.Result = results.Fail
		}
		r.event("test %s: %s (exit %d) in %s", t.Name, step.Result, rc, step.Duration.Round(10*time.Millisecond))
	}
	if typing.Chars > 0 {
		r.event("test: %s", typing)
	}
	r.fetchArtifacts(ctx, sh)
	return nil
}

// interrupt sends Ctrl-C and waits for the prompt.
func (r *runner) interrupt(ctx context.Context, sh *shell) error {
	ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := r.writer.Type(ictx, "\x03", sol.Pacing{Mode: sol.Fixed, Delay: 50 * time.Millisecond}); err != nil {
		return err
	}
	_, err := r.session.Expect(ictx, sh.prompt)
	return err
}

// fetchArtifacts has the node upload each artifact to the boot server. A
// missing artifact is logged, not a job failure.
func (r *runner) fetchArtifacts(ctx context.Context, sh *shell) {
	if len(r.Spec.Artifacts) == 0 {
		return
	}
	dir := filepath.Join(r.Dir, "artifacts")
	if err := os.MkdirAll(dir, statedir.DirMode); err != nil {
		r.event("artifacts: %v", err)
		return
	}
	url, closeFn, err := r.Netboot.AcceptUploads(dir)
	if err != nil {
		r.event("artifacts: cannot accept uploads: %v", err)
		return
	}
	defer closeFn()
	actx, cancel := context.WithTimeout(ctx, r.set.Timeouts.TestStep)
	defer cancel()
	for _, a := range r.Spec.Artifacts {
		name := path.Base(a)
		// busybox wget posts files only up to their first NUL byte: send
		// base64 and let the server check the size.
		res, err := sh.run(actx, fmt.Sprintf(`base64 '%s' >/tmp/labctl.b64 && wget -q -O - --post-file=/tmp/labctl.b64 "%s%s?encoding=base64&size=$(wc -c <'%s')"`, a, url, name, a))
		switch {
		case err != nil:
			r.event("artifacts: %s: %v", a, err)
			return
		case res.ExitCode != 0:
			r.event("artifacts: %s: upload exited %d: %s", a, res.ExitCode, lastLines(res.Output, 2))
		default:
			r.res.Artifacts = append(r.res.Artifacts, filepath.Join("artifacts", name))
			r.event("artifacts: fetched %s", a)
		}
	}
}
