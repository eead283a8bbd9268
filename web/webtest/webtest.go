// Package webtest drives a real headless Chromium (Debian's chromium)
// through the DevTools protocol (chromedp) for the web UI's tests and
// benchmarks: a browser per test, a tab per person (each its own browser
// context: its own cookies), and on failure each tab's screenshot and
// console log saved for the person reading the test output.
package webtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"

	"github.com/labctl/labctl/internal/testutil"
)

// Chromium is the browser's path: $LABCTL_CHROMIUM, or chromium on PATH.
func Chromium() (string, error) {
	if p := os.Getenv("LABCTL_CHROMIUM"); p != "" {
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no chromium on PATH (Debian package chromium; make deps installs it)")
}

// Browser is one headless Chromium with a fresh profile.
type Browser struct {
	t      testing.TB
	ctx    context.Context
	outDir string
}

// Start starts Chromium for t. Without a chromium it skips the test,
// or fails it when LABCTL_REQUIRE_SIMLAB=1 (make test). Screenshots and
// console logs of failed tests go to outDir.
func Start(t testing.TB, outDir string) *Browser {
	t.Helper()
	path, err := Chromium()
	if err != nil {
		testutil.SkipOrFail(t, err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox, // as root, Chromium's sandbox refuses to start
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	// The first run starts the browser; it must have no deadline of its
	// own (chromedp stops the browser with it), so a watchdog bounds it.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(bctx) }()
	select {
	case err = <-started:
	case <-time.After(2 * time.Minute):
		err = fmt.Errorf("no answer within 2 minutes")
	}
	if err != nil {
		cancelBrowser()
		cancelAlloc()
		t.Fatalf("start chromium %s: %v", path, err)
	}
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
	})
	return &Browser{t: t, ctx: bctx, outDir: outDir}
}

// Tab is one page in its own browser context (its own cookies), as one
// person's browser.
type Tab struct {
	t    testing.TB
	Name string
	ctx  context.Context

	mu      sync.Mutex
	console []string
}

// NewTab opens a tab in a new browser context. If the test fails, its
// screenshot (NAME.png) and console log (NAME.console.txt) are saved.
func (b *Browser) NewTab(name string) *Tab {
	b.t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext())
	tab := &Tab{t: b.t, Name: name, ctx: ctx}
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		b.t.Fatalf("tab %s: %v", name, err)
	}
	go func() {
		for m, err := range chromedp.Console(ctx) {
			if err != nil {
				return
			}
			tab.log(m.String())
		}
	}()
	b.t.Cleanup(cancel)
	// Runs before cancel (cleanups run last first).
	b.t.Cleanup(func() {
		if b.t.Failed() {
			tab.saveEvidence(b.outDir)
		}
	})
	return tab
}

func (tab *Tab) log(line string) {
	tab.mu.Lock()
	defer tab.mu.Unlock()
	tab.console = append(tab.console, time.Now().UTC().Format("15:04:05.000")+" "+line)
}

// ConsoleLog is what the page logged, exceptions included.
func (tab *Tab) ConsoleLog() string {
	tab.mu.Lock()
	defer tab.mu.Unlock()
	return strings.Join(tab.console, "\n")
}

func (tab *Tab) saveEvidence(dir string) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tab.t.Logf("tab %s: %v", tab.Name, err)
		return
	}
	png := filepath.Join(dir, tab.Name+".png")
	if err := tab.Screenshot(png); err != nil {
		tab.t.Logf("tab %s: screenshot: %v", tab.Name, err)
	}
	logPath := filepath.Join(dir, tab.Name+".console.txt")
	ctx, cancel := context.WithTimeout(tab.ctx, 10*time.Second)
	url, _ := chromedp.Run(ctx, chromedp.Location())
	cancel()
	os.WriteFile(logPath, []byte("page: "+url+"\n"+tab.ConsoleLog()+"\n"), 0o644)
	tab.t.Logf("tab %s at %s: screenshot %s, console log %s", tab.Name, url, png, logPath)
}

// Screenshot saves the whole page as a PNG (quality 100 is PNG).
func (tab *Tab) Screenshot(path string) error {
	ctx, cancel := context.WithTimeout(tab.ctx, 30*time.Second)
	defer cancel()
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		return err
	}
	return os.WriteFile(path, buf, 0o644)
}

// Run runs actions within timeout; a failure fails the test (what was
// being done is in what).
func (tab *Tab) Run(what string, timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	tab.t.Helper()
	if err := tab.Try(timeout, actions...); err != nil {
		tab.t.Fatalf("tab %s: %s: %v", tab.Name, what, err)
	}
}

// Try runs actions within timeout and returns their error.
func (tab *Tab) Try(timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(tab.ctx, timeout)
	defer cancel()
	return chromedp.Do(ctx, actions...)
}

// Eval evaluates a JavaScript expression in tab's page (awaiting a
// promise) into a T.
func Eval[T any](tab *Tab, js string) (T, error) {
	ctx, cancel := context.WithTimeout(tab.ctx, 30*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
}

// Text is the text of the first element sel matches ("" if none).
func (tab *Tab) Text(sel string) string {
	s, _ := Eval[string](tab, fmt.Sprintf(`(() => { const e = document.querySelector(%q); return e ? e.innerText : ""; })()`, sel))
	return s
}

// Login logs the tab in at server with token, through the login form,
// and waits for the first page.
func (tab *Tab) Login(server, token string) {
	tab.t.Helper()
	tab.Run("log in", time.Minute,
		chromedp.Navigate(server+"/login"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Submit(chromedp.CSS("#token")),
		WaitText("#who", "("))
}

// WaitJS waits until the JavaScript expression is truthy. It asks every
// 100 ms, across page loads (an evaluation that a navigation interrupts
// is asked again), until the action's context ends.
func WaitJS(expr string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		var last error
		for {
			ok, err := chromedp.Evaluate[bool]("!!("+expr+")")(ctx, t)
			if err == nil && ok {
				return chromedp.Void{}, nil
			}
			if err != nil {
				last = err
			}
			select {
			case <-ctx.Done():
				if last != nil {
					return chromedp.Void{}, fmt.Errorf("%w (last evaluation: %v)", ctx.Err(), last)
				}
				return chromedp.Void{}, ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// WaitText waits until the element sel's text contains want.
func WaitText(sel, want string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); return !!e && e.textContent.includes(%q); })()`, sel, want)
		if _, err := WaitJS(js)(ctx, t); err != nil {
			return chromedp.Void{}, fmt.Errorf("%s does not show %q: %w", sel, want, err)
		}
		return chromedp.Void{}, nil
	}
}

// Type types text into the focused element as a person would with a
// keyboard: the text as input (Input.insertText, as an input method
// sends it: one event, whatever its characters), then Enter as a key
// press if enter is set. Terminal emulators take both.
func Type(text string, enter bool) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		if text != "" {
			if _, err := cdp.Call(ctx, t, input.InsertText, input.InsertTextParams{Text: text}); err != nil {
				return chromedp.Void{}, err
			}
		}
		if enter {
			return chromedp.KeyEvent("\r")(ctx, t)
		}
		return chromedp.Void{}, nil
	}
}

// Choose sets the value of the form field sel as a person choosing it
// would: the value, then input and change events.
func Choose(sel, value string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); if (!e) return false;
			e.value = %q; e.dispatchEvent(new Event("input", {bubbles: true})); e.dispatchEvent(new Event("change", {bubbles: true})); return true; })()`, sel, value)
		ok, err := chromedp.Evaluate[bool](js)(ctx, t)
		if err == nil && !ok {
			err = fmt.Errorf("no %s", sel)
		}
		return chromedp.Void{}, err
	}
}
