package api_test

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/api"
)

// An https daemon with a self-signed certificate: a client that pins its
// fingerprint or trusts the certificate file gets in (API and console); a
// client with another pin, or with only the system's roots, does not; the
// key stays readable by its owner only; a second start reuses the
// certificate.
func TestSelfSignedTLS(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	cfg, fp, err := api.SelfSignedTLS(dir, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(filepath.Join(dir, "key.pem")); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("key.pem: %v, mode %v, want 0600", err, info.Mode().Perm())
	}
	if _, fp2, err := api.SelfSignedTLS(dir, nil); err != nil || fp2 != fp {
		t.Errorf("a second start made another certificate: %s, %v (first %s)", fp2, err, fp)
	}
	svc := &consoleService{atts: make(chan *fakeAttachment, 4)}
	srv, err := api.NewServer(svc, api.Config{Addr: "127.0.0.1:0", TLS: cfg,
		Tokens: []api.Token{{Name: "ci", Secret: goodToken, Role: labctl.RoleAdmin}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	url := "https://" + srv.Addr().String()

	client := func(ca, pin string) *api.Client {
		t.Helper()
		tc, err := api.ClientTLS(ca, pin)
		if err != nil {
			t.Fatal(err)
		}
		c, err := api.NewClient(url, goodToken, tc)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if _, err := client("", fp).Jobs(ctx, labctl.JobFilter{}); err != nil {
		t.Errorf("pinned client: %v", err)
	}
	if _, err := client(filepath.Join(dir, "cert.pem"), "").Devices(ctx); err != nil {
		t.Errorf("client trusting cert.pem: %v", err)
	}
	other := "sha256:" + strings.Repeat("0", 64)
	if _, err := client("", other).Jobs(ctx, labctl.JobFilter{}); err == nil || !strings.Contains(err.Error(), "not the pinned") {
		t.Errorf("client with another pin = %v, want refused", err)
	}
	if _, err := client("", "").Jobs(ctx, labctl.JobFilter{}); err == nil {
		t.Error("a client trusting only the system's roots accepted a self-signed certificate")
	}
	att, err := client("", fp).AttachConsole(ctx, "node1", labctl.ConsoleOptions{})
	if err != nil {
		t.Fatalf("console over TLS: %v", err)
	}
	att.Close()
	if _, err := api.ClientTLS("", "md5:1234"); err == nil {
		t.Error("ClientTLS accepted a malformed pin")
	}
	if _, err := api.NewClient("http://127.0.0.1:1", goodToken, mustClientTLS(t, fp)); err == nil {
		t.Error("NewClient took a pin for an http:// server")
	}
}

func mustClientTLS(t *testing.T, pin string) *tls.Config {
	t.Helper()
	tc, err := api.ClientTLS("", pin)
	if err != nil {
		t.Fatal(err)
	}
	return tc
}
