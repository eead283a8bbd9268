//go:build !labctl_run

package main

import (
	"debug/buildinfo"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
)

// runBinary is labctl-run: cmd/labctl built with the tag labctl_run
// (commands_run.go), installed beside labctl by make build.
const runBinary = "labctl-run"

// handOffRun replaces this process with labctl-run (runBinary), the same
// run command built without the other commands' code, when it is
// installed beside this binary from the same build; it returns only if
// it does not (nil when there is none to hand to, which is not an error).
// The job then runs in the same process, under the same PID, with the
// same arguments and environment: a job run without a daemon lasts
// minutes, and its dispatcher maps half the pages it would here.
func handOffRun(env *appEnv) error {
	exe, err := os.Executable()
	if err != nil {
		return nil
	}
	if resolved, err := filepath.EvalSymlinks(exe); err == nil {
		exe = resolved
	}
	path := filepath.Join(filepath.Dir(exe), runBinary)
	if fi, err := os.Stat(path); err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
		return nil
	}
	if err := sameBuild(path); err != nil {
		return fmt.Errorf("%s is not from this labctl's build (%v)", path, err)
	}
	newLogger(env, slog.LevelInfo).Debug("handing the job to labctl-run", "path", path)
	err = execBinary(path, append([]string{path}, os.Args[1:]...), os.Environ())
	if errors.Is(err, errors.ErrUnsupported) {
		return nil
	}
	return fmt.Errorf("start %s: %w", path, err)
}

// buildStamp names one `make build`, which links labctl and labctl-run
// with the same stamp (-ldflags -X): sameBuild compares the flags.
var buildStamp string

// sameBuild checks that the program path was built with this one (module
// version, VCS revision and state where Go records them, Go version, and
// the link flags that carry buildStamp), so that a stale labctl-run never
// runs a newer labctl's jobs.
func sameBuild(path string) error {
	mine, ok := debug.ReadBuildInfo()
	if !ok {
		return errors.New("this binary records no build information")
	}
	theirs, err := buildinfo.ReadFile(path)
	if err != nil {
		return err
	}
	if mine.GoVersion != theirs.GoVersion || mine.Main.Path != theirs.Main.Path || mine.Main.Version != theirs.Main.Version {
		return fmt.Errorf("%s %s %s, this is %s %s %s", theirs.Main.Path, theirs.Main.Version, theirs.GoVersion, mine.Main.Path, mine.Main.Version, mine.GoVersion)
	}
	for _, key := range []string{"vcs.revision", "vcs.time", "vcs.modified", "-ldflags"} {
		if a, b := setting(mine, key), setting(theirs, key); a != b {
			return fmt.Errorf("%s %q, this is %q", key, b, a)
		}
	}
	return nil
}

// setting is the value of a build setting ("" if not recorded).
func setting(bi *debug.BuildInfo, key string) string {
	for _, s := range bi.Settings {
		if s.Key == key {
			return s.Value
		}
	}
	return ""
}
