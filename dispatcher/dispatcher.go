// Package dispatcher runs jobs on lab nodes: the pipeline that deploys an
// image through the PXE-booted master, boots the node from its disk, runs
// the test steps over the serial console and always powers the node off
// and puts its boot entry back at the end.
//
// The package declares the few things it needs from the outside world as
// small interfaces (Power, Netboot) and takes a sol.Dialer for the console;
// package lab provides the real implementations (IPMI, commands, the
// boot server) and dispatchertest provides a simulated node for tests.
package dispatcher

import (
	"context"
	"time"
)

// PowerOp is a power action.
type PowerOp string

// Power actions.
const (
	PowerOn    PowerOp = "on"
	PowerOff   PowerOp = "off"
	PowerCycle PowerOp = "cycle"
	PowerReset PowerOp = "reset"
)

// BootDevice is what a node boots from on its next power-on.
type BootDevice string

// Boot devices.
const (
	BootPXE  BootDevice = "pxe"
	BootDisk BootDevice = "disk"
)

// Power controls one node's power and next boot device.
//
// Power returns once the node's power state has been read back and matches
// the request (on after on/cycle/reset, off after off); powering on a node
// that is on, or off one that is off, is not an error. SetBootDevice
// applies to the next boot; options such as EFI or persistence come from
// the device's configuration. Every method returns promptly when ctx ends,
// and its errors name the node's BMC (or command) and what was tried.
type Power interface {
	Power(ctx context.Context, op PowerOp) error
	PowerState(ctx context.Context) (on bool, err error)
	SetBootDevice(ctx context.Context, dev BootDevice) error
}

// Netboot is one node's entry on the boot server.
//
// BootMaster makes the node's next PXE boot load the master image;
// BootLocal makes it boot from its local disk (the device type's local-boot
// entry), which is also the state between jobs.
type Netboot interface {
	BootMaster() error
	BootLocal() error
	// PublishImage serves a local image file to the node over HTTP until the
	// returned image is closed.
	PublishImage(path string) (PublishedImage, error)
	// AcceptUploads lets the node send files (job artifacts) into dir until
	// the returned closer is called. The node POSTs a file's bytes, base64
	// encoded, to url + name + "?encoding=base64&size=" + its size in bytes
	// (busybox wget cannot post binary files as they are).
	AcceptUploads(dir string) (url string, closeFn func(), err error)
}

// PublishedImage is an image file the boot server serves to a node.
type PublishedImage interface {
	URL() string
	Size() int64
	BytesServed() int64
	Close() error
}

// Progress receives what a running job is doing, for a live view such as a
// progress bar. Implementations must be fast and safe for concurrent use.
type Progress interface {
	// Phase is called when the job enters a phase (deploy, boot, test, finalize).
	Phase(name string)
	// Transfer is called about once a second while the image streams to
	// the node; total is 0 when the size is unknown.
	Transfer(done, total int64, elapsed time.Duration)
}

type noProgress struct{}

func (noProgress) Phase(string)                         {}
func (noProgress) Transfer(int64, int64, time.Duration) {}
