package dispatcher

import (
	"context"
	"fmt"
	"regexp"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/sol"
)

// boot switches the node to its disk, power-cycles it (see
// devices.Power.Cycle) and logs in to the test OS.
func (r *runner) boot(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.timeouts.Boot)
	defer cancel()

	if err := r.Netboot.BootLocal(); err != nil {
		return fmt.Errorf("PXE config: %w", err)
	}
	if err := r.node.bootdev(ctx, labctl.BootDisk); err != nil {
		return err
	}
	r.session.Discard()
	start := r.Now()
	if err := r.node.cycle(ctx); err != nil {
		return err
	}
	since := "power cycle"
	if r.set.Power.Cycle == devices.CycleOffOn {
		since = "power off and on"
	}
	return r.login(ctx, start, since)
}

// login waits for the test OS's login prompt (timeouts.disk_boot from
// start, the power-on that booted it), logs in and gives the shell the
// job's prompt. since says what start was, for the log.
func (r *runner) login(ctx context.Context, start time.Time, since string) error {
	login := r.set.Login
	loginPrompt := regexp.MustCompile(regexp.QuoteMeta(login.LoginPrompt))
	if err := r.node.waitPrompt(ctx, r.set.Timeouts.DiskBoot, "the login prompt", loginPrompt); err != nil {
		return err
	}
	r.event("boot: login prompt %s after %s", r.Now().Sub(start).Round(10*time.Millisecond), since)

	lctx, cancel := context.WithTimeout(ctx, r.set.Timeouts.Login)
	defer cancel()
	pacing := r.pacing(r.set.Console.BootloaderDelay())
	// No wait for the console to go quiet: getty and login discard
	// pending input before they print their prompts (busybox getty and
	// bb_ask, agetty, glibc getpass, PAM's prompts), so what is typed once
	// the prompt shows is read. The wait is for shells setting up a line
	// editor after their prompt.
	pacing.Settle = -1
	gaps := r.watchGaps()
	defer gaps.stop()
	if _, err := r.typeVerified(lctx, r.Spec.Boot.Username, &pacing, gaps); err != nil {
		return fmt.Errorf("log in: %w", err)
	}
	if r.Spec.Boot.Password != "" {
		if _, err := r.session.Expect(lctx, regexp.MustCompile(regexp.QuoteMeta(login.PasswordPrompt))); err != nil {
			return fmt.Errorf("log in: waiting for the password prompt: %w", err)
		}
		secret := pacing
		secret.NoEcho, secret.Mode, secret.Delay = true, sol.Fixed, max(pacing.Delay, pacing.MinGap)
		if _, err := r.writer.Type(lctx, r.Spec.Boot.Password+"\r", secret); err != nil {
			return fmt.Errorf("log in: %w", err)
		}
	}
	shellPrompt := regexp.MustCompile(regexp.QuoteMeta(login.ShellPrompt))
	patterns := []*regexp.Regexp{shellPrompt}
	if login.LoginIncorrect != "" {
		patterns = append(patterns, regexp.MustCompile(regexp.QuoteMeta(login.LoginIncorrect)))
	}
	m, err := r.session.Expect(lctx, patterns...)
	if err != nil {
		return fmt.Errorf("log in as %s: waiting for the shell prompt: %w", r.Spec.Boot.Username, err)
	}
	if m.Pattern == 1 {
		return fmt.Errorf("log in as %s: the node said %q", r.Spec.Boot.Username, m.Text())
	}
	r.event("boot: logged in as %s, %s after %s", r.Spec.Boot.Username, r.Now().Sub(start).Round(10*time.Millisecond), since)
	r.testShell = &shell{r: r, pacing: r.pacing(r.set.Console.TestShellDelay()), prompt: shellPrompt}
	return r.testShell.setPrompt(lctx)
}
