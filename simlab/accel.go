package simlab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Accelerator choice. Machines here are VMs themselves: /dev/kvm exists but
// guests may hang or die under it (nested virtualisation), so KVM is used
// only after a smoke boot of the test disk image reached its login prompt.
// SIMLAB_ACCEL=kvm|tcg forces a choice; the smoke result is cached per
// machine boot in the pool directory.

// kvmSmoke is the cached outcome of a KVM smoke boot.
type kvmSmoke struct {
	BootID string    `json:"boot_id"`
	QEMU   string    `json:"qemu"`
	Image  string    `json:"image"`
	OK     bool      `json:"ok"`
	Detail string    `json:"detail"`
	At     time.Time `json:"at"`
}

// ChooseAccel returns "tcg" or "kvm". want is "tcg", "kvm", "auto" or ""
// (then $SIMLAB_ACCEL, else auto). Auto runs (once per machine boot) a KVM
// smoke boot of the raw test image; progress may be nil.
func ChooseAccel(ctx context.Context, want, qemu string, a Artifacts, poolDir string, progress func(string)) (string, error) {
	if want == "" {
		want = os.Getenv("SIMLAB_ACCEL")
	}
	switch want {
	case "tcg", "kvm":
		return want, nil
	case "", "auto":
	default:
		return "", fmt.Errorf("accelerator %q: want kvm, tcg or auto (SIMLAB_ACCEL)", want)
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return "tcg", nil
	}
	f.Close()

	if err := os.MkdirAll(poolDir, 0o777); err != nil {
		return "tcg", nil
	}
	cache := filepath.Join(poolDir, "kvm-smoke.json")
	lock, err := os.OpenFile(cache+".lock", os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return "tcg", nil
	}
	defer lock.Close()
	_ = syscall.Flock(int(lock.Fd()), syscall.LOCK_EX) // one smoke at a time on the machine
	key := kvmSmoke{BootID: bootID(), QEMU: fileStamp(qemu), Image: a.Images.RawSHA256}
	var prev kvmSmoke
	if b, err := os.ReadFile(cache); err == nil && json.Unmarshal(b, &prev) == nil &&
		prev.BootID == key.BootID && prev.QEMU == key.QEMU && prev.Image == key.Image {
		return accelOf(prev.OK), nil
	}
	if progress != nil {
		progress("checking whether KVM works here (smoke boot of the test image, up to 30 s)")
	}
	ok, detail := smokeKVM(ctx, qemu, a.Images.Raw.Path)
	key.OK, key.Detail, key.At = ok, detail, time.Now()
	if b, err := json.MarshalIndent(key, "", "  "); err == nil {
		_ = os.WriteFile(cache, append(b, '\n'), 0o666)
	}
	if progress != nil {
		progress(fmt.Sprintf("KVM smoke boot: %s -> using %s", detail, accelOf(ok)))
	}
	return accelOf(ok), nil
}

func accelOf(kvmOK bool) string {
	if kvmOK {
		return "kvm"
	}
	return "tcg"
}

// smokeKVM boots image under KVM (snapshot: the image is not changed) and
// reports whether the login prompt appeared within 30 s.
func smokeKVM(ctx context.Context, qemu, image string) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, "-accel", "kvm", "-m", "256", "-nographic", "-monitor", "none",
		"-serial", "stdio", "-drive", "file="+image+",if=virtio,format=raw,snapshot=on", "-nic", "none", "-boot", "order=c")
	cmd.Stdin = nil
	out, err := cmd.StdoutPipe()
	if err != nil {
		return false, err.Error()
	}
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return false, "start: " + err.Error()
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	start := time.Now()
	var seen bytes.Buffer
	buf := make([]byte, 4096)
	for {
		n, err := out.Read(buf)
		seen.Write(buf[:n])
		s := seen.String()
		switch {
		case strings.Contains(s, "login: "):
			return true, fmt.Sprintf("login prompt after %.1fs", time.Since(start).Seconds())
		case strings.Contains(s, "KVM internal error"), strings.Contains(s, "failed to set MSR"):
			return false, "KVM internal error"
		}
		if err != nil {
			if ctx.Err() != nil {
				return false, "no login prompt within 30s"
			}
			return false, "QEMU exited: " + err.Error()
		}
	}
}

func bootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
}

func fileStamp(path string) string {
	p, err := exec.LookPath(path)
	if err != nil {
		return path
	}
	st, err := os.Stat(p)
	if err != nil {
		return p
	}
	return fmt.Sprintf("%s %d %d", p, st.Size(), st.ModTime().Unix())
}
