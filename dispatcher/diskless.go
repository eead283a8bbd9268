package dispatcher

import (
	"context"
	"fmt"
	"strings"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/jobs"
)

// bootDiskless boots the job's own kernel and initrd over the network
// (boot.method ramdisk or nfs) and logs in to the test OS: power off, the
// node's PXE entry set to the job's kernel, bootdev pxe, power on. The
// kernel and initrd are served by the boot server from descriptors opened
// here, as deploy images are (OpenLocal), until the test OS is up. For
// nfs, the root is exported first and stays exported until the job ends;
// its place is on the kernel command line. Nothing writes the disk.
func (r *runner) bootDiskless(ctx context.Context) error {
	b := r.Spec.Boot
	ctx, cancel := context.WithTimeout(ctx, r.timeouts.Boot)
	defer cancel()

	kernel, err := r.publishLocal("boot.kernel", b.Kernel)
	if err != nil {
		return err
	}
	defer kernel.Close()
	initrd, err := r.publishLocal("boot.initrd", b.Initrd)
	if err != nil {
		return err
	}
	defer initrd.Close()

	cmdline := b.Append
	if cmdline == "" {
		cmdline = r.set.Master.Append
	}
	if b.Method == jobs.BootNFS {
		args, err := r.exportRoot(ctx)
		if err != nil {
			return err
		}
		cmdline = strings.TrimSpace(cmdline + " " + args)
	}
	r.event("boot: %s: kernel %s (%d bytes), initrd %s (%d bytes), command line %q",
		b.Method, b.Kernel, kernel.Size(), b.Initrd, initrd.Size(), cmdline)

	start, err := r.node.pxeBoot(ctx, func() error {
		return r.Netboot.BootKernel(kernel.URL(), initrd.URL(), cmdline)
	})
	if err != nil {
		return err
	}
	return r.login(ctx, start, "power on")
}

// publishLocal opens a job's local file (see OpenLocal) and serves it to
// the node; closing the image closes both.
func (r *runner) publishLocal(key, path string) (*localImage, error) {
	f, err := OpenLocal(key, path, r.Images.PublicFiles)
	if err != nil {
		return nil, err
	}
	img, err := r.Netboot.PublishImage(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: publish: %w", key, err)
	}
	return &localImage{PublishedImage: img, close: f.Close}, nil
}

// localImage is a published local file.
type localImage struct {
	labctl.PublishedImage
	close func() error
}

func (i *localImage) Close() error {
	err := i.PublishedImage.Close()
	i.close()
	return err
}
