package devices

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The two racks of examples/hosts load, share one store, and own
// different devices.
func TestExampleHosts(t *testing.T) {
	seen := map[string]string{}
	for _, rack := range []string{"rack1", "rack2"} {
		lab, err := Load(filepath.Join("..", "examples", "hosts", rack, "lab.toml"))
		if err != nil {
			t.Fatalf("Load(examples/hosts/%s/lab.toml) = %v", rack, err)
		}
		if lab.Host.Name != rack || lab.Host.Lease != 15*time.Second || lab.Host.TokenEnv != "LABCTL_HOST_TOKEN" || lab.Store.URL == "" {
			t.Errorf("%s: host %+v, store %q", rack, lab.Host, lab.Store.URL)
		}
		for _, d := range lab.Devices {
			if other, ok := seen[d.Name]; ok {
				t.Errorf("device %s is in %s and %s", d.Name, other, rack)
			}
			seen[d.Name] = rack
		}
	}
	if len(seen) != 4 {
		t.Errorf("devices of the two racks: %v", seen)
	}
}

// [host] needs a shared store, a valid name and URL, a CA file that
// holds certificates, and a poll well within the lease.
func TestLabHostChecks(t *testing.T) {
	for _, tt := range []struct {
		add  string
		want string
	}{
		{"[host]\nname = \"rack1\"\n", "host: needs a [store] url"},
		{"[store]\nurl = \"postgres://labctl@db/labctl\"\n[host]\npoll = \"10s\"\n", "host.poll: 10s: give at most half the lease (15s)"},
		{"[store]\nurl = \"postgres://labctl@db/labctl\"\n[host]\nname = \"bad name\"\n", "host.name"},
		{"[store]\nurl = \"postgres://labctl@db/labctl\"\n[host]\napi_url = \"rack1:8470\"\n", "host.api_url"},
		{"[store]\nurl = \"postgres://labctl@db/labctl\"\n[host]\nca_file = \"missing-ca.pem\"\n", "host.ca_file: open "},
		{"[store]\nurl = \"postgres://labctl@db/labctl\"\n[host]\nca_file = \"lab.toml\"\n", "lab.toml holds no PEM certificate"},
	} {
		f := fixture()
		f["lab.toml"] += tt.add
		_, err := Load(filepath.Join(writeLab(t, f), "lab.toml"))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("lab with %q: %v, want %q", tt.add, err, tt.want)
		}
	}
	f := fixture()
	f["lab.toml"] += "[store]\nurl = \"postgres://labctl@db/labctl\"\n[host]\nname = \"rack1\"\ntoken_env = \"LAB_HOST_TOKEN\"\nlease = \"6s\"\npoll = \"2s\"\n"
	lab, err := Load(filepath.Join(writeLab(t, f), "lab.toml"))
	if err != nil || lab.Host.Name != "rack1" || lab.Host.Lease != 6*time.Second || lab.Host.Poll != 2*time.Second {
		t.Errorf("lab with a [host]: %+v, %v", lab, err)
	}
}
