package labctl

import (
	"context"
	"fmt"
	"os"

	"github.com/labctl/labctl/sol"
)

// PowerOp is a power action on a node.
type PowerOp string

// Power actions.
const (
	PowerOn    PowerOp = "on"
	PowerOff   PowerOp = "off"
	PowerCycle PowerOp = "cycle"
	PowerReset PowerOp = "reset"
)

// PowerOps are the power actions, in the order help texts list them.
var PowerOps = []PowerOp{PowerOn, PowerOff, PowerCycle, PowerReset}

// ParsePowerOp checks s names a power action; the error wraps ErrInvalid.
func ParsePowerOp(s string) (PowerOp, error) {
	for _, op := range PowerOps {
		if string(op) == s {
			return op, nil
		}
	}
	return "", fmt.Errorf("%w: power operation %q: use on, off, cycle or reset", ErrInvalid, s)
}

// BootDevice is what a node boots from on its next power-on.
type BootDevice string

// Boot devices.
const (
	BootPXE  BootDevice = "pxe"
	BootDisk BootDevice = "disk"
)

// ParseBootDevice checks s names a boot device; the error wraps ErrInvalid.
func ParseBootDevice(s string) (BootDevice, error) {
	switch d := BootDevice(s); d {
	case BootPXE, BootDisk:
		return d, nil
	}
	return "", fmt.Errorf("%w: boot device %q: use pxe or disk", ErrInvalid, s)
}

// OnOff says a power state in words.
func OnOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

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
// entry), which is also the state between jobs. BootKernel makes it boot a
// job's own kernel and initrd, which it fetches from the given URLs (images
// published with PublishImage), with the given kernel command line: the
// test OS of a diskless job.
type Netboot interface {
	BootMaster() error
	BootLocal() error
	BootKernel(kernelURL, initrdURL, cmdline string) error
	// ExportRoot exports dir read-only over NFS to this node (and, where
	// the server can tell nodes apart by address, to no other) until the
	// export is withdrawn: the root of a diskless test OS.
	ExportRoot(ctx context.Context, dir string) (RootExport, error)
	// PublishImage serves an open local image file to the node over HTTP
	// until the returned image is closed: the bytes of that descriptor,
	// not of whatever its path names later. The caller keeps f open until
	// then.
	PublishImage(f *os.File) (PublishedImage, error)
	// AcceptUploads lets the node send files (job artifacts) into dir until
	// the returned closer is called. The node POSTs a file's bytes, base64
	// encoded, to url + name + "?encoding=base64&size=" + its size in bytes
	// (busybox wget cannot post binary files as they are).
	AcceptUploads(dir string) (url string, closeFn func(), err error)
	// AcceptSave lets the node send one saved disk into dir (see
	// SaveUpload) until it is closed: a zstd stream of the disk's rawSize
	// bytes whose sha256 (hex) the node reported; other bytes are refused.
	AcceptSave(dir string, rawSize int64, rawSHA256 string) (SaveUpload, error)
}

// SaveUpload is a single-use URL where a node sends its saved disk: the
// node PUTs the zstd stream of the disk to URL()+Token() (chunked HTTP
// is fine). The token is a secret: it must not reach a log or the
// console's transcript. The server unpacks and hashes the stream as it
// arrives and keeps it, under no name, until Commit.
type SaveUpload interface {
	URL() string
	Token() string
	// RawReceived is the disk's bytes received so far, unpacked.
	RawReceived() int64
	// Wait returns what was received once the node's request ended, or
	// why nothing was kept.
	Wait(ctx context.Context) (SaveResult, error)
	// Commit links the received image to path (in dir), atomically and
	// never replacing a file.
	Commit(path string) error
	// Close withdraws the URL and removes what was received unless it
	// was committed.
	Close() error
}

// SaveResult is what the boot server received of a saved disk.
type SaveResult struct {
	Size      int64  // the zstd stream's bytes
	RawSize   int64  // the disk's bytes
	RawSHA256 string // sha256 of the disk's bytes, lower-case hex
}

// RootExport is a directory exported read-only to a node over NFS.
type RootExport interface {
	// Source is what the node mounts: "HOST:/PATH".
	Source() string
	// Options are the NFS mount options the server needs (its port and
	// version, "vers=4.1,port=2049").
	Options() string
	// Withdraw ends the export; the server confirmed it when it returns
	// nil.
	Withdraw() error
}

// PublishedImage is an image file the boot server serves to a node.
type PublishedImage interface {
	URL() string
	Size() int64
	BytesServed() int64
	Close() error
}

// Node is what drives one lab device: its power controller, its console
// and its boot-server entry (nil where nothing boots, as for labctl power).
type Node struct {
	Power   Power
	Console sol.Dialer
	Netboot Netboot
}

// Nodes gives the live parts of the lab's devices. package lab implements
// it over real BMCs and the boot server.
type Nodes interface {
	Node(name string) (*Node, error)
}

// ApplyPower runs a power request on a node and reads its power state
// back: what a power request means, with or without a daemon. Failures of
// the node's BMC (or power command) wrap ErrDevice, a bad request
// ErrInvalid.
func ApplyPower(ctx context.Context, p Power, node string, req PowerRequest) (PowerResponse, error) {
	if req.Op != PowerStatus {
		op, err := ParsePowerOp(req.Op)
		if err != nil {
			return PowerResponse{}, err
		}
		if err := p.Power(ctx, op); err != nil {
			return PowerResponse{}, fmt.Errorf("%w: power %s %s: %v", ErrDevice, op, node, err)
		}
	}
	on, err := p.PowerState(ctx)
	if err != nil {
		return PowerResponse{}, fmt.Errorf("%w: power status %s: %v", ErrDevice, node, err)
	}
	return PowerResponse{Node: node, On: on}, nil
}

// ApplyBootDevice sets a node's next boot device, as ApplyPower runs a
// power request.
func ApplyBootDevice(ctx context.Context, p Power, node string, req BootdevRequest) (BootdevResponse, error) {
	dev, err := ParseBootDevice(string(req.Device))
	if err != nil {
		return BootdevResponse{}, err
	}
	if err := p.SetBootDevice(ctx, dev); err != nil {
		return BootdevResponse{}, fmt.Errorf("%w: bootdev %s %s: %v", ErrDevice, dev, node, err)
	}
	return BootdevResponse{Node: node, Device: dev}, nil
}
