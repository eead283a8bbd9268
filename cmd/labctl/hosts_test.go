package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/api"
	"github.com/labctl/labctl/store"
	"github.com/labctl/labctl/store/pgtest"
)

// asHost appends a [host] table to a lab file.
func asHost(t *testing.T, labFile, name string) {
	t.Helper()
	appendFile(t, labFile, fmt.Sprintf("[host]\nname = %q\nlease = \"4s\"\npoll = \"250ms\"\n", name))
}

// Bad input stops labctl serve at start with a clear error, and writes
// nothing to the database: a store URL that does not parse, a database a
// newer labctl migrated, a device another host of the lab has.
func TestServeHostsBadInput(t *testing.T) {
	labFile, _ := commandLab(t)
	withStore(t, labFile, "postgres://labctl@db:port/labctl")
	err := runServe(context.Background(), serveOptions{lab: labFile}, &appEnv{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv})
	if err == nil || !strings.Contains(err.Error(), "lab.toml:") || !strings.Contains(err.Error(), "store.url") {
		t.Errorf("labctl serve with a store URL that does not parse = %v, want the file, line and key", err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(labFile), "state")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("labctl serve with a bad store URL made its state directory: %v", err)
	}

	// A newer schema.
	url := pgtest.URL(t)
	s, err := store.OpenPostgres(context.Background(), url, "")
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE schema_version SET version = 99`); err != nil {
		t.Fatal(err)
	}
	labFile, _ = commandLab(t)
	withStore(t, labFile, url)
	asHost(t, labFile, "rack1")
	env, _, _ := envWith(nil)
	err = runServe(context.Background(), serveOptions{lab: labFile}, env)
	if err == nil || !strings.Contains(err.Error(), "the database is at schema version 99, this labctl knows versions up to") {
		t.Errorf("labctl serve on a newer schema = %v", err)
	}
	var hosts int
	if err := db.QueryRow(`SELECT COUNT(*) FROM hosts`).Scan(&hosts); err != nil || hosts != 0 {
		t.Errorf("hosts after a refused start on a newer schema: %d, %v", hosts, err)
	}

	// Two hosts claiming one device.
	url = pgtest.URL(t)
	first, _ := commandLab(t)
	withStore(t, first, url)
	asHost(t, first, "rack1")
	startServe(t, first)
	second, _ := commandLab(t)
	withStore(t, second, url)
	asHost(t, second, "rack2")
	env, _, _ = envWith(nil)
	err = runServe(context.Background(), serveOptions{lab: second}, env)
	if !errors.Is(err, store.ErrDeviceTaken) || !strings.Contains(err.Error(), "device n1 is host rack1's, and host rack2 claims it too") {
		t.Errorf("a second host with the same device = %v, want refused naming rack1 and rack2", err)
	}
	s, err = store.OpenPostgres(context.Background(), url, "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if hs, err := s.Hosts(context.Background()); err != nil || len(hs) != 1 || hs[0].Name != "rack1" {
		t.Errorf("hosts after the refused start: %+v, %v; want rack1 only", hs, err)
	}
	// --host names the host, over the lab file.
	env, _, _ = envWith(nil)
	err = runServe(context.Background(), serveOptions{lab: second, host: "bad name"}, env)
	if err == nil || !strings.Contains(err.Error(), `host name "bad name"`) {
		t.Errorf("labctl serve --host 'bad name' = %v", err)
	}
}

// tlsHost is one labctl serve process of TestServeHostsTLS.
type tlsHost struct {
	name   string
	labDir string
	serve  *serveProc
	url    string
	client *api.Client
}

// TestServeHostsTLS: labctl serve processes on one PostgreSQL, their APIs
// HTTPS with certificates of a CA made here, the CA in each lab file's
// [host] ca_file. Power and a console of rack2's device through rack1
// are forwarded over TLS and work; rack3, whose ca_file is another CA,
// cannot reach rack2 and says which host and why.
func TestServeHostsTLS(t *testing.T) {
	bin := labctlBinary(t)
	url := pgtest.URL(t)
	pki := t.TempDir()
	labCA := newTestCA(t, pki, "lab")
	otherCA := newTestCA(t, pki, "other")
	const hostToken = "lab-internal-host-token-tls-0123"
	rack1 := startTLSHost(t, bin, url, hostToken, "rack1", 1, labCA, labCA)
	rack2 := startTLSHost(t, bin, url, hostToken, "rack2", 2, labCA, labCA)
	rack3 := startTLSHost(t, bin, url, hostToken, "rack3", 3, labCA, otherCA)

	// rack1 answers for rack2's device: its state, power, console.
	waitLabDevice(t, rack1.client, "n2", labctl.DeviceIdle, time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := rack1.client.Power(ctx, "n2", labctl.PowerRequest{Op: string(labctl.PowerOn)})
	if err != nil || !resp.On {
		t.Fatalf("power n2 on through rack1: %+v, %v", resp, err)
	}
	if b, err := os.ReadFile(filepath.Join(rack2.labDir, "power", "state")); err != nil || string(b) != "on\n" {
		t.Errorf("n2's power switch after power on through rack1: %q, %v", b, err)
	}
	vars := map[string]string{"LABCTL_SERVER": rack1.url, "LABCTL_TOKEN": "serve-test-token-0123", "LABCTL_CA": labCA.certFile}
	if code, out, stderr := runLabctl(t, vars, "power", "n2", "status"); code != 0 || out != "n2: on\n" {
		t.Errorf("labctl power n2 status through rack1: exit %d, %q %q", code, out, stderr)
	}
	delete(vars, "LABCTL_CA")
	if code, _, stderr := runLabctl(t, vars, "devices"); code == 0 || !strings.Contains(stderr, "unknown authority") || !strings.Contains(stderr, "--ca-file") {
		t.Errorf("labctl devices without the lab's CA: exit %d, %q; want the certificate refused, and how to trust it", code, stderr)
	}
	att, err := rack1.client.AttachConsole(ctx, "n2", labctl.ConsoleOptions{Replay: 50})
	if err != nil {
		t.Fatalf("console of n2 through rack1: %v", err)
	}
	defer att.Close()
	var seen strings.Builder
	readUntil := func(want string) {
		t.Helper()
		for !strings.Contains(seen.String(), want) {
			m, err := att.Next(ctx)
			if err != nil {
				t.Fatalf("console of n2 through rack1: %v (after %q, want %q)", err, seen.String(), want)
			}
			seen.Write(m.Output)
		}
	}
	readUntil("console up")
	if err := att.Input([]byte("typed-through-rack1\n")); err != nil {
		t.Fatalf("console input through rack1: %v", err)
	}
	readUntil("typed-through-rack1")
	att.Close()

	// rack3 does not trust rack2's certificate.
	waitLabDevice(t, rack3.client, "n3", labctl.DeviceIdle, time.Minute)
	_, err = rack3.client.Power(ctx, "n2", labctl.PowerRequest{Op: labctl.PowerStatus})
	checkPeerTLSError(t, "power n2 through rack3", err, otherCA.certFile)
	_, err = rack3.client.AttachConsole(ctx, "n2", labctl.ConsoleOptions{ReadOnly: true})
	checkPeerTLSError(t, "console of n2 through rack3", err, otherCA.certFile)
	for _, h := range []*tlsHost{rack1, rack2, rack3} {
		if strings.Contains(readFile(t, h.serve.log), hostToken) {
			t.Errorf("%s's log shows the lab-internal token", h.name)
		}
	}
}

// checkPeerTLSError checks the error of a request forwarded to rack2 by
// a host that does not trust rack2's certificate: 503, naming rack2, why
// and what the host trusts.
func checkPeerTLSError(t *testing.T, what string, err error, caFile string) {
	t.Helper()
	if !errors.Is(err, labctl.ErrUnavailable) {
		t.Errorf("%s: %v, want unavailable (503)", what, err)
		return
	}
	for _, want := range []string{"host rack2 at https://127.0.0.1:", "certificate signed by unknown authority", caFile, "[host] ca_file"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want it to say %q", what, err, want)
		}
	}
}

// startTLSHost starts labctl serve as host name of the lab on the
// database at url, with one command-powered device nI, its API over
// HTTPS with a certificate of serverCA; it trusts peerCA for the other
// hosts' APIs.
func startTLSHost(t *testing.T, bin, url, hostToken, name string, i int, serverCA, peerCA *testCA) *tlsHost {
	t.Helper()
	labFile, token := commandLab(t)
	dir := filepath.Dir(labFile)
	dev := fmt.Sprintf("n%d", i)
	text := strings.Replace(readFile(t, filepath.Join(dir, "devices", "n1.toml")), "52:54:00:00:00:01", fmt.Sprintf("52:54:00:00:00:%02x", i), 1)
	text = strings.Replace(text, "n1.password", dev+".password", 1)
	if err := os.WriteFile(filepath.Join(dir, "devices", dev+".toml"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "devices", "n1.password"), filepath.Join(dir, "devices", dev+".password")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "devices", "n1.toml")); err != nil {
		t.Fatal(err)
	}
	cert, key := serverCA.issue(t, dir, name)
	lab := strings.Replace(readFile(t, labFile), "[server]\n", fmt.Sprintf("[server]\ntls_cert = %q\ntls_key = %q\n", cert, key), 1)
	if err := os.WriteFile(labFile, []byte(lab), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "host.token"), []byte(hostToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withStore(t, labFile, url)
	appendFile(t, labFile, fmt.Sprintf("[host]\nname = %q\ntoken_file = \"host.token\"\nca_file = %q\nlease = \"4s\"\npoll = \"250ms\"\n", name, peerCA.certFile))

	h := &tlsHost{name: name, labDir: dir, serve: spawnServe(t, bin, labFile)}
	apiURL := regexp.MustCompile(`, API (https://\S+), `)
	deadline := time.Now().Add(time.Minute)
	for h.url == "" {
		if m := apiURL.FindStringSubmatch(readFile(t, h.serve.log)); m != nil {
			h.url = m[1]
			break
		}
		h.serve.checkRunning()
		if time.Now().After(deadline) {
			t.Fatalf("%s: labctl serve did not say its API address within a minute", name)
		}
	}
	tlsConfig, err := api.ClientTLS(serverCA.certFile, "")
	if err != nil {
		t.Fatal(err)
	}
	if h.client, err = api.NewClient(h.url, token, tlsConfig); err != nil {
		t.Fatal(err)
	}
	return h
}

// testCA is a certificate authority made for a test.
type testCA struct {
	cert     *x509.Certificate
	key      *ecdsa.PrivateKey
	certFile string
}

// newTestCA makes a CA and writes its certificate to dir/NAME-ca.pem.
func newTestCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name + " test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{cert: cert, key: key, certFile: filepath.Join(dir, name+"-ca.pem")}
	if err := os.WriteFile(ca.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return ca
}

// issue makes a server certificate for 127.0.0.1 signed by the CA, and
// writes it and its key to dir/NAME.pem and dir/NAME.key.
func (ca *testCA) issue(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
