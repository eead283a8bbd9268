package api

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/labctl/labctl/internal/statedir"
)

// Fingerprint is how a certificate is named for pinning: "sha256:" and the
// hex SHA-256 of its DER bytes. The daemon prints it; a client given it
// (--pin, LABCTL_PIN) trusts exactly that certificate.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// LoadServerTLS loads the daemon's certificate and key (PEM files) and
// returns the server's TLS config and the certificate's fingerprint.
func LoadServerTLS(certFile, keyFile string) (*tls.Config, string, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, "", fmt.Errorf("TLS certificate %s, key %s: %w", certFile, keyFile, err)
	}
	return serverTLS(cert), Fingerprint(cert.Certificate[0]), nil
}

// SelfSignedTLS returns a TLS config with the self-signed certificate kept
// in dir (cert.pem, key.pem: the key readable by its owner only), made on
// first use for the given host names and addresses, and its fingerprint,
// which clients pin.
func SelfSignedTLS(dir string, hosts []string) (*tls.Config, string, error) {
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if _, err := os.Stat(certFile); errors.Is(err, os.ErrNotExist) {
		if err := writeSelfSigned(dir, certFile, keyFile, hosts); err != nil {
			return nil, "", fmt.Errorf("self-signed TLS certificate: %w", err)
		}
	}
	return LoadServerTLS(certFile, keyFile)
}

func serverTLS(cert tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}

func writeSelfSigned(dir, certFile, keyFile string, hosts []string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "labctl serve"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := writeAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return writeAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), statedir.FileMode)
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ClientTLS is how a client checks the daemon's certificate: the system's
// roots, plus (or instead) the PEM certificates in caFile, or only the one
// certificate whose Fingerprint is pin. It returns nil when both are empty
// (the system's roots).
func ClientTLS(caFile, pin string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case pin != "":
		want := strings.ToLower(strings.TrimSpace(pin))
		if !strings.HasPrefix(want, "sha256:") || len(want) != len("sha256:")+64 {
			return nil, fmt.Errorf("pin %q: want sha256: and 64 hex digits, as labctl serve prints it", pin)
		}
		// The pin replaces the chain check: the certificate is self-signed.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the daemon sent no certificate")
			}
			if got := Fingerprint(cs.PeerCertificates[0].Raw); got != want {
				return fmt.Errorf("the daemon's certificate is %s, not the pinned %s", got, want)
			}
			return nil
		}
	case caFile != "":
		pemData, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemData) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate in it", caFile)
		}
		cfg.RootCAs = pool
	default:
		return nil, nil
	}
	return cfg, nil
}
