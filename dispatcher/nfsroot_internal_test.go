package dispatcher

import (
	"strings"
	"testing"
)

// A node's NFSv4 client identity fits the kernel's 63 bytes and stays
// apart from every other device's, however long the names.
func TestNFSClientID(t *testing.T) {
	long := strings.Repeat("a", 64)
	seen := map[string]string{}
	for _, dev := range []string{"node1", "node2", long, long[:63] + "b", long[:56]} {
		id := nfsClientID(dev)
		if len(id) > 63 || strings.ContainsAny(id, " \t\n\"") {
			t.Errorf("%s: id %q (%d bytes)", dev, id, len(id))
		}
		if other, ok := seen[id]; ok {
			t.Errorf("%s and %s share id %q", dev, other, id)
		}
		seen[id] = dev
	}
	if got := nfsClientID("node1"); got != "labctl.node1" {
		t.Errorf("node1: %q", got)
	}
}
