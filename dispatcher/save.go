package dispatcher

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/labctl/labctl/jobs"
	"github.com/labctl/labctl/sol"
)

// SaveDigestPath is where the raw disk's sha256 of a saved image at path
// (NAME.img.zst) goes: NAME.img.sha256, as `sha256sum NAME.img` writes it,
// the file a job's deploy.sha256_file names beside deploy.image.
func SaveDigestPath(path string) string {
	return strings.TrimSuffix(path, ".zst") + ".sha256"
}

// SavePath is where a job's [save] goes in the save directory dir (the
// lab's [images] save_dir), or "" if the job saves nothing or there is
// no save directory.
func SavePath(dir string, spec *jobs.Job) string {
	if spec.Save == nil || dir == "" {
		return ""
	}
	return filepath.Join(dir, spec.Save.Output)
}

// CheckSaveTarget says why a save could not be written to path: a file
// (the image or its digest) is there already. A save never replaces one.
func CheckSaveTarget(path string) error {
	for _, p := range []string{path, SaveDigestPath(path)} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s exists: a save never replaces a file (remove it or choose another name)", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// saveUploadWait bounds the wait for the boot server to finish a save
// after the node's upload command ended.
const saveUploadWait = 30 * time.Second

// save boots the master and has it send the node's disk to the boot
// server as a zstd stream, then stores it as the job's save image.
//
// The master reads the disk twice: once to hash it (sha256sum), once
// through zstd to the boot server. Runs of zero blocks cost no network:
// zstd turns each 128 KiB block of zeros into a few bytes, so a sparse
// disk's image is about the size of its data; the hash must read every
// byte anyway. busybox wget cannot send a binary stream, so the master
// frames zstd's output as HTTP/1.1 chunks itself (dd reads 1 MiB at a
// time into /tmp) and sends them with nc. The boot server unpacks and
// hashes what arrives; both digests must match, and the image gets its
// name (with NAME.img.sha256 beside it) only then.
func (r *runner) save(ctx context.Context) error {
	s := r.Spec.Save
	ctx, cancel := context.WithTimeout(ctx, r.timeouts.Save)
	defer cancel()
	out := r.SaveTo
	if out == "" {
		return errors.New("no place to save to (the lab's save directory is not set)")
	}
	if err := CheckSaveTarget(out); err != nil {
		return err
	}
	disk := s.Disk
	if disk == "" {
		disk = r.set.Master.Disk
	}
	if r.testShell != nil {
		// The test OS may hold writes in its page cache: the master boot
		// starts with a power off.
		if res, err := r.testShell.run(ctx, "sync"); err != nil || res.ExitCode != 0 {
			r.event("save: sync in the test OS: exit %d, %v", res.ExitCode, err)
		}
	}
	r.event("save: %s of %s to %s (zstd level %d)", disk, r.Device, out, r.set.Master.ZstdLevel)
	sh, err := r.bootMaster(ctx)
	if err != nil {
		return err
	}
	if err := r.masterNetwork(ctx, sh); err != nil {
		return err
	}

	// blockdev for a device node, stat for a disk that is a file.
	res, err := sh.run(ctx, fmt.Sprintf("blockdev --getsize64 %[1]s 2>/dev/null || stat -L -c %%s %[1]s", disk))
	if err != nil {
		return fmt.Errorf("size of %s: %w", disk, err)
	}
	size := diskBytes.FindStringSubmatch(res.Output)
	if res.ExitCode != 0 || size == nil {
		return fmt.Errorf("size of %s on the node: exit %d: %s", disk, res.ExitCode, lastLines(res.Output, 3))
	}
	diskSize, err := strconv.ParseInt(size[1], 10, 64)
	if err != nil || diskSize <= 0 {
		return fmt.Errorf("size of %s on the node: %q is not a disk size", disk, size[1])
	}
	start := r.Now()
	res, err = sh.run(ctx, fmt.Sprintf("set -o pipefail; dd if=%s bs=4M 2>/dev/null | sha256sum", disk))
	if err != nil {
		return fmt.Errorf("hash %s: %w", disk, err)
	}
	sum := sha256Line.FindStringSubmatch(res.Output)
	if res.ExitCode != 0 || sum == nil {
		return fmt.Errorf("hash %s on the node: exit %d: %s", disk, res.ExitCode, lastLines(res.Output, 3))
	}
	nodeSum := strings.ToLower(sum[1])
	r.event("save: %s holds %d bytes, sha256 %s on the node (read in %s)", disk, diskSize, nodeSum, r.Now().Sub(start).Round(10*time.Millisecond))

	up, err := r.Netboot.AcceptSave(filepath.Dir(out), diskSize, nodeSum)
	if err != nil {
		return fmt.Errorf("accept the save: %w", err)
	}
	defer up.Close()
	if err := r.giveSaveToken(ctx, sh, up.Token()); err != nil {
		return err
	}
	cmd, err := saveCommand(up.URL(), disk, r.set.Master.ZstdLevel, r.tag)
	if err != nil {
		return err
	}
	start = r.Now()
	stop := r.watchTransfer("save", "saved", up.RawReceived, diskSize)
	res, err = sh.run(ctx, cmd)
	stop()
	if err != nil {
		return fmt.Errorf("send the disk: %w", err)
	}
	wctx, wcancel := context.WithTimeout(ctx, saveUploadWait)
	got, uerr := up.Wait(wctx)
	wcancel()
	elapsed := r.Now().Sub(start)
	switch {
	case uerr != nil && res.ExitCode != 0:
		return fmt.Errorf("send the disk: the boot server kept nothing: %v; the node's upload exited %d: %s", uerr, res.ExitCode, lastLines(res.Output, 3))
	case uerr != nil:
		return fmt.Errorf("send the disk: the boot server kept nothing: %v", uerr)
	case res.ExitCode != 0:
		return fmt.Errorf("send the disk: the node's upload exited %d: %s", res.ExitCode, lastLines(res.Output, 3))
	case got.RawSize != diskSize:
		return fmt.Errorf("save: the boot server unpacked %d bytes, the node's disk has %d", got.RawSize, diskSize)
	case got.RawSHA256 != nodeSum:
		return fmt.Errorf("save: sha256 mismatch: the node's disk has %s, the boot server received %s: the image did not arrive intact", nodeSum, got.RawSHA256)
	}
	r.event("save: sha256 %s matches on the node and the boot server; %d bytes of disk in %s (%.1f MiB/s), %d bytes stored",
		got.RawSHA256, got.RawSize, elapsed.Round(10*time.Millisecond), float64(got.RawSize)/(1<<20)/max(elapsed.Seconds(), 0.001), got.Size)
	if err := writeDigestFile(SaveDigestPath(out), got.RawSHA256, strings.TrimSuffix(filepath.Base(out), ".zst")); err != nil {
		return err
	}
	if err := up.Commit(out); err != nil {
		os.Remove(SaveDigestPath(out))
		return err
	}
	r.res.Saved = out
	r.event("save: stored %s and %s", out, SaveDigestPath(out))
	return nil
}

// diskBytes finds a disk's size in bytes, a line of digits alone.
var diskBytes = regexp.MustCompile(`(?m)^\s*(\d+)\s*$`)

// giveSaveToken puts the save's secret token into the master shell's
// variable _lt without it reaching the console's transcript: the shell
// stops echoing and reads a line, the token is typed as a password is
// (recorded as asterisks), and its length is checked.
func (r *runner) giveSaveToken(ctx context.Context, sh *shell, token string) error {
	for attempt := 1; ; attempt++ {
		r.seq++
		id := fmt.Sprintf("%s-%d", r.tag, r.seq)
		ready := regexp.MustCompile(`@@LK-` + regexp.QuoteMeta(id) + `@@`)
		gaps := r.watchGaps()
		_, err := sh.typeLine(ctx, fmt.Sprintf(`stty -echo; echo @@L""K-%s@@; read -r _lt; stty echo`, id), gaps)
		gaps.stop()
		if err != nil {
			return fmt.Errorf("save token: %w", err)
		}
		if _, err := r.session.Expect(ctx, ready); err != nil {
			return fmt.Errorf("save token: %w", err)
		}
		secret := sh.pacing
		secret.NoEcho, secret.Mode, secret.Delay = true, sol.Fixed, max(sh.pacing.Delay, sh.pacing.MinGap, 5*time.Millisecond)
		if _, err := r.writer.Type(ctx, token+"\r", secret); err != nil {
			return fmt.Errorf("save token: %w", err)
		}
		if _, err := r.session.Expect(ctx, sh.prompt); err != nil {
			return fmt.Errorf("save token: %w", err)
		}
		res, err := sh.run(ctx, fmt.Sprintf(`[ "${#_lt}" = %d ]`, len(token)))
		if err != nil {
			return fmt.Errorf("save token: %w", err)
		}
		if res.ExitCode == 0 {
			return nil
		}
		if attempt == 3 {
			return errors.New("save token: the node did not get it whole in 3 tries (the console loses characters)")
		}
		r.event("save token: the node did not get it whole; typing it again")
	}
}

// saveCommand is the master's line that sends disk to the save URL base
// (the token is in the shell's $_lt): dd | zstd, framed as HTTP/1.1
// chunks of up to 1 MiB, into nc. nc prints the boot server's answer.
func saveCommand(base, disk string, level int, tag string) (string, error) {
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return "", fmt.Errorf("save URL %q: the master sends saves over plain http", base)
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "80"
	}
	chunk := "/tmp/labctl-" + tag + ".chunk"
	return fmt.Sprintf(`set -o pipefail; dd if=%[1]s bs=4M 2>/dev/null | zstd -q -c -%[2]d | { printf 'PUT %[3]s%%s HTTP/1.1\r\nHost: %[4]s\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n' "$_lt"; while dd of=%[5]s bs=1M count=1 iflag=fullblock 2>/dev/null && _n=$(wc -c <%[5]s) && [ "$_n" -gt 0 ]; do printf '%%x\r\n' "$_n"; cat %[5]s; printf '\r\n'; done; printf '0\r\n\r\n'; rm -f %[5]s; } | nc %[6]s %[7]s`,
		disk, level, u.EscapedPath(), u.Host, chunk, host, port), nil
}

// writeDigestFile writes "DIGEST  NAME\n" (sha256sum's format) to path,
// atomically and never replacing a file.
func writeDigestFile(path, digest, name string) error {
	tmp := filepath.Join(filepath.Dir(path), ".save-"+rand.Text()+".sha256")
	if err := os.WriteFile(tmp, []byte(digest+"  "+name+"\n"), 0o644); err != nil {
		return fmt.Errorf("write the saved image's digest: %w", err)
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		return fmt.Errorf("write the saved image's digest: %w", err)
	}
	return nil
}
