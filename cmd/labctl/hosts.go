//go:build !labctl_run

package main

import (
	"cmp"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/labctl/labctl/api"
	"github.com/labctl/labctl/daemon"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/internal/tomlfile"
)

// hostConfig is the daemon's place in a lab of several hosts, and the
// lab-internal credential; nil without a [store] url (a lab of one host
// on SQLite).
func hostConfig(cfg *devices.Lab, opts serveOptions) (*daemon.HostConfig, string, error) {
	if cfg.Store.URL == "" {
		if opts.host != "" {
			return nil, "", usageErrorf("serve: --host is for a lab of several hosts: set [store] url in %s", cfg.File)
		}
		return nil, "", nil
	}
	name := cmp.Or(opts.host, cfg.Host.Name)
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, "", fmt.Errorf("serve: this host's name: %w (set [host] name in %s)", err, cfg.File)
		}
		name = h
	}
	if !tomlfile.ValidName(name) {
		return nil, "", fmt.Errorf("serve: host name %q: %s (set [host] name in %s, or --host)", name, tomlfile.NameRule, cfg.File)
	}
	tok, err := cfg.Host.Token()
	if err != nil {
		return nil, "", err
	}
	h := &daemon.HostConfig{Name: name, API: cfg.Host.APIURL, Lease: cfg.Host.Lease, Poll: cfg.Host.Poll}
	if secret := tok.Reveal(); secret != "" {
		peerTLS, trust, err := peerTLS(cfg)
		if err != nil {
			return nil, "", err
		}
		h.Peer = func(name, apiURL string) (daemon.Peer, error) {
			var tlsConfig *tls.Config
			if strings.HasPrefix(apiURL, "https://") {
				tlsConfig = peerTLS
			}
			c, err := api.NewClient(apiURL, secret, tlsConfig)
			if err != nil {
				return nil, err
			}
			c.OnBehalf, c.Peer, c.Trust = true, name, trust
			return c, nil
		}
	}
	return h, tok.Reveal(), nil
}

// peerTLS is how a host checks the certificates of the other hosts'
// HTTPS APIs, and its description for errors: the lab file's [host]
// ca_file, else the system's roots (a nil config).
func peerTLS(cfg *devices.Lab) (*tls.Config, string, error) {
	if cfg.Host.CAFile == "" {
		return nil, "the system's roots: set [host] ca_file in " + cfg.File + " to the lab's CA", nil
	}
	c, err := api.ClientTLS(cfg.Host.CAFile, "")
	if err != nil {
		return nil, "", fmt.Errorf("serve: [host] ca_file in %s: %w", cfg.File, err)
	}
	return c, "the CA file " + cfg.Host.CAFile + ", [host] ca_file in " + cfg.File, nil
}

// redactedURL is a store URL as it may be shown.
func redactedURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(a URL that does not parse)"
	}
	return u.Redacted()
}

// reachableAddr is the API's listen address as another host may reach
// it: a wildcard listener (0.0.0.0, ::) is named by this machine's host
// name ([host] api_url says otherwise).
func reachableAddr(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok || !tcp.IP.IsUnspecified() {
		return a.String()
	}
	name, err := os.Hostname()
	if err != nil {
		return a.String()
	}
	return net.JoinHostPort(name, strconv.Itoa(tcp.Port))
}
