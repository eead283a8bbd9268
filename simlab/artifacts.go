package simlab

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Artifacts are the files `make artifacts` builds into
// build/simlab/artifacts: the boot root a boot server serves to nodes, and
// the test disk images.
type Artifacts struct {
	// Dir is the artifacts directory.
	Dir string
	// BootRoot is the directory a boot server serves (TFTP and HTTP):
	// pxelinux.0, lpxelinux.0, ldlinux.c32, chain.c32, libcom32.c32,
	// libutil.c32, simlab/vmlinuz, simlab/master.gz.
	BootRoot string
	// Kernel and Initrd are the master's kernel and initrd, relative to
	// BootRoot (as pxelinux configs name them).
	Kernel, Initrd string
	// Images are the test disk image and its compressed forms.
	Images Images
}

// Images is the test disk image in every published form. All four write the
// same bytes to a disk: RawSHA256 (and RawSize) describe those.
type Images struct {
	Raw, Gzip, XZ, Zstd Image
	RawSHA256           string
	RawSize             int64
}

// Image is one published image file.
type Image struct {
	Path string
	// SHA256 is the checksum of this file as published next to it
	// (PATH.sha256); for the raw image it equals Images.RawSHA256.
	SHA256 string
	Size   int64
}

// ErrNoArtifacts means `make artifacts` has not been run.
var ErrNoArtifacts = errors.New("simlab artifacts missing (run `make artifacts`)")

// LoadArtifacts checks the artifacts in dir and reads their checksums.
func LoadArtifacts(dir string) (Artifacts, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return Artifacts{}, err
	}
	a := Artifacts{
		Dir:      dir,
		BootRoot: filepath.Join(dir, "bootroot"),
		Kernel:   "simlab/vmlinuz",
		Initrd:   "simlab/master.gz",
	}
	for _, f := range []string{"pxelinux.0", "lpxelinux.0", "ldlinux.c32", "chain.c32", "libcom32.c32", "libutil.c32", a.Kernel, a.Initrd} {
		if _, err := os.Stat(filepath.Join(a.BootRoot, f)); err != nil {
			return a, fmt.Errorf("%w: %v", ErrNoArtifacts, err)
		}
	}
	images := filepath.Join(dir, "images")
	load := func(name string) Image {
		im := Image{Path: filepath.Join(images, name)}
		if err != nil {
			return im
		}
		var st os.FileInfo
		if st, err = os.Stat(im.Path); err != nil {
			err = fmt.Errorf("%w: %v", ErrNoArtifacts, err)
			return im
		}
		im.Size = st.Size()
		im.SHA256, err = readSHA256File(im.Path + ".sha256")
		return im
	}
	a.Images.Raw = load("disk.img")
	a.Images.Gzip = load("disk.img.gz")
	a.Images.XZ = load("disk.img.xz")
	a.Images.Zstd = load("disk.img.zst")
	if err != nil {
		return a, err
	}
	a.Images.RawSHA256 = a.Images.Raw.SHA256
	a.Images.RawSize = a.Images.Raw.Size
	return a, nil
}

// readSHA256File reads the checksum from a sha256sum-style file.
func readSHA256File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNoArtifacts, err)
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil && line == "" {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	fields := strings.Fields(line)
	if len(fields) == 0 || len(fields[0]) != 64 {
		return "", fmt.Errorf("read %s: no sha256 in %q", path, line)
	}
	return fields[0], nil
}

// RepoRoot finds the labctl repository containing dir (or one of its
// parents): the directory with labctl's go.mod.
func RepoRoot(dir string) (string, error) {
	d, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/labctl/labctl\n") {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no labctl repository (go.mod of github.com/labctl/labctl) at or above %s", dir)
		}
		d = parent
	}
}

// DefaultArtifactsDir is $LABCTL_SIMLAB_ARTIFACTS, or build/simlab/artifacts
// in the repository that contains the working directory.
func DefaultArtifactsDir() (string, error) {
	if d := os.Getenv("LABCTL_SIMLAB_ARTIFACTS"); d != "" {
		return filepath.Abs(d)
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	root, err := RepoRoot(wd)
	if err != nil {
		return "", fmt.Errorf("find simlab artifacts: %w (or set LABCTL_SIMLAB_ARTIFACTS)", err)
	}
	return filepath.Join(root, "build", "simlab", "artifacts"), nil
}
