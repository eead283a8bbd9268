package dispatcher

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"syscall"
	"time"
)

// ImagePolicy is what a job's image may be and where it may come from.
type ImagePolicy struct {
	// PublicFiles takes only local image and digest files that every user
	// may read (see OpenLocal): the daemon's rule, as it serves files for
	// people who may not read them themselves.
	PublicFiles bool
	// AllowNetworks are networks URL images may be downloaded from
	// although their addresses are loopback, link-local, private or
	// unspecified: such addresses are refused otherwise, checked on the
	// address each connection (redirects included) actually goes to, so
	// that a job cannot make the dispatcher fetch from the host's own or
	// its network's internal services.
	AllowNetworks []netip.Prefix
	// MaxDownload caps the size of a downloaded image in bytes; 0 means
	// DefaultMaxDownload.
	MaxDownload int64
}

// DefaultMaxDownload is the size limit of a downloaded image unless the
// lab sets one.
const DefaultMaxDownload = 64 << 30

func (p ImagePolicy) maxDownload() int64 {
	if p.MaxDownload > 0 {
		return p.MaxDownload
	}
	return DefaultMaxDownload
}

// client is the HTTP client for one download. It dials through
// checkAddress and does not use a proxy from the environment: the check
// must see the address the bytes come from.
func (p ImagePolicy) client() *http.Client {
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: p.control}
	return &http.Client{Transport: &http.Transport{
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: time.Minute,
		IdleConnTimeout:       90 * time.Second,
	}}
}

// control runs on each connection the client makes, with the resolved
// address it is about to connect to.
func (p ImagePolicy) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("image download to %s: not an IP address and port", address)
	}
	return p.checkAddress(ap.Addr())
}

// thisNetwork is 0.0.0.0/8, which Linux connects to as the host itself.
var thisNetwork = netip.MustParsePrefix("0.0.0.0/8")

// checkAddress refuses an address that is loopback, link-local, private
// or unspecified unless AllowNetworks holds it.
func (p ImagePolicy) checkAddress(a netip.Addr) error {
	a = a.Unmap()
	var kind string
	switch {
	case a.IsLoopback():
		kind = "loopback"
	case a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast():
		kind = "link-local"
	case a.IsPrivate():
		kind = "private"
	case a.IsUnspecified() || thisNetwork.Contains(a):
		kind = "unspecified"
	default:
		return nil
	}
	for _, n := range p.AllowNetworks {
		if n.Contains(a) {
			return nil
		}
	}
	return fmt.Errorf("%s is a %s address: connections a job asks for (image downloads, notify webhooks) are refused unless the lab allows its network (lab setting [images] allow_networks)", a.WithZone(""), kind)
}

// HTTPClient is an HTTP client for other requests a job makes the daemon
// send (its notify webhooks): it connects only where the policy lets
// images come from, checked on the address of each connection, redirects
// included.
func (p ImagePolicy) HTTPClient() *http.Client { return p.client() }

// CheckURL refuses an http(s) URL whose host is, or resolves to, an
// address the policy refuses, so that a job that names one is refused when
// it is submitted; HTTPClient checks again on each connection (a name may
// resolve elsewhere later).
func (p ImagePolicy) CheckURL(ctx context.Context, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return fmt.Errorf("%q is not an http:// or https:// URL with a host", raw)
	}
	host := u.Hostname()
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		addrs, err = net.DefaultResolver.LookupNetIP(rctx, "ip", host)
		if err != nil {
			return fmt.Errorf("%s: %w", host, err)
		}
	}
	for _, a := range addrs {
		if err := p.checkAddress(a); err != nil {
			return err
		}
	}
	return nil
}
