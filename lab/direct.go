package lab

import (
	"context"

	"github.com/labctl/labctl"
)

// Direct answers power and boot-device requests for the lab's nodes
// without a daemon (labctl power --lab, bootdev --lab): the same requests,
// with the same meaning, as a daemon answers. Each is bounded by the node's
// power timeout. Do not use it on nodes a running daemon owns.
type Direct struct {
	Lab *Lab
}

var _ labctl.NodeControl = Direct{}

// Power runs a power request on the named node.
func (d Direct) Power(ctx context.Context, name string, req labctl.PowerRequest) (labctl.PowerResponse, error) {
	n, ctx, cancel, err := d.node(ctx, name)
	if err != nil {
		return labctl.PowerResponse{}, err
	}
	defer cancel()
	return labctl.ApplyPower(ctx, n.Power, name, req)
}

// SetBootDevice sets the named node's next boot device.
func (d Direct) SetBootDevice(ctx context.Context, name string, req labctl.BootdevRequest) (labctl.BootdevResponse, error) {
	n, ctx, cancel, err := d.node(ctx, name)
	if err != nil {
		return labctl.BootdevResponse{}, err
	}
	defer cancel()
	return labctl.ApplyBootDevice(ctx, n.Power, name, req)
}

func (d Direct) node(ctx context.Context, name string) (*labctl.Node, context.Context, context.CancelFunc, error) {
	n, err := d.Lab.Node(name)
	if err != nil {
		return nil, nil, nil, err
	}
	dev, _ := d.Lab.Config.Device(name)
	ctx, cancel := context.WithTimeout(ctx, dev.Settings.Timeouts.Power)
	return n, ctx, cancel, nil
}
