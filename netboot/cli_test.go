package netboot

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cliClient is a TFTP or HTTP client program run against the server the
// way an admin would, to show the server speaks the protocol as others
// implement it, not only as pin/tftp does.
type cliClient struct {
	bin string // program looked up in PATH
	pkg string // Debian package that has it
	// args builds the command line for fetching name into out.
	args func(host, port, httpURL, name, out string) []string
	// failed tells from the output that the fetch failed, for clients
	// whose exit status does not (tftp-hpa exits 0 on errors).
	failed func(out string) bool
}

var cliClients = map[string]cliClient{
	"tftp-hpa": {
		bin: "tftp", pkg: "tftp-hpa",
		args: func(host, port, _, name, out string) []string {
			return []string{"-m", "binary", host, port, "-c", "get", name, out}
		},
		failed: func(out string) bool {
			return strings.Contains(out, "Error code") || strings.Contains(out, "Transfer timed out")
		},
	},
	"atftp": {
		bin: "atftp", pkg: "atftp",
		args: func(host, port, _, name, out string) []string {
			return []string{"-g", "-r", name, "-l", out, "--option", "blksize 1468", "--option", "tsize 0", host, port}
		},
	},
	"atftp windowsize 8": {
		// RFC 7440: the server grants the window (TestTFTPWindow checks
		// the OACK); atftp's own windowed receiver must get every byte.
		bin: "atftp", pkg: "atftp",
		args: func(host, port, _, name, out string) []string {
			return []string{"-g", "-r", name, "-l", out, "--option", "blksize 1468", "--option", "windowsize 8", host, port}
		},
	},
	"curl tftp": {
		bin: "curl", pkg: "curl",
		args: func(host, port, _, name, out string) []string {
			return []string{"-sS", "--fail", "--max-time", "20", "--tftp-blksize", "1468", "-o", out, "tftp://" + net.JoinHostPort(host, port) + "/" + name}
		},
	},
	"curl http": {
		bin: "curl", pkg: "curl",
		args: func(_, _, httpURL, name, out string) []string {
			return []string{"-sS", "--fail", "--max-time", "20", "-o", out, httpURL + "/" + name}
		},
	},
}

func TestCLIClients(t *testing.T) {
	ts := startServer(t, nil)
	// 127.0.0.1 is 7F000001 in pxelinux's hex-IP names.
	if err := ts.SetNode(mustMAC(t, testMAC), net.IPv4(127, 0, 0, 1), testMasterEntry); err != nil {
		t.Fatal(err)
	}
	master, _ := renderEntry(testMasterEntry, ts.HTTPURL(), testMAC)
	host, port, _ := net.SplitHostPort(ts.tftpAddr())
	fetches := []struct {
		name string
		want []byte // nil: must fail
	}{
		{"pxelinux.0", ts.root.nbp},
		{"master/vmlinuz", ts.root.kernel},
		{"pxelinux.cfg/01-52-54-00-00-00-01", master},
		{"pxelinux.cfg/7F000001", master},
		{"pxelinux.cfg/7F0", master},
		{"pxelinux.cfg/default", ts.root.dfault},
		{"pxelinux.cfg/01-52-54-00-00-00-99", nil},
		{"nothere", nil},
		{ts.root.outRel, nil},
	}
	for name, c := range cliClients {
		t.Run(name, func(t *testing.T) {
			bin, err := exec.LookPath(c.bin)
			if err != nil {
				t.Skipf("SKIP: %s not installed (apt-get install %s)", c.bin, c.pkg)
			}
			dir := t.TempDir()
			for i, f := range fetches {
				out := filepath.Join(dir, "out"+string(rune('a'+i)))
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				cmd := exec.CommandContext(ctx, bin, c.args(host, port, ts.HTTPURL(), f.name, out)...)
				output, err := cmd.CombinedOutput()
				cancel()
				failed := err != nil || (c.failed != nil && c.failed(string(output)))
				if f.want == nil {
					if !failed {
						t.Errorf("%s: fetched, want a failure", f.name)
					}
					if got, _ := os.ReadFile(out); len(got) > 0 {
						t.Errorf("%s: %d bytes written", f.name, len(got))
					}
					continue
				}
				if failed {
					t.Errorf("%s: %v\n%s", f.name, err, output)
					continue
				}
				got, err := os.ReadFile(out)
				if err != nil || !bytes.Equal(got, f.want) {
					t.Errorf("%s: got %d bytes, want %d (err %v)", f.name, len(got), len(f.want), err)
				}
			}
		})
	}
}

// TestCLIClientWriteRefused checks the refusal with tftp-hpa's put.
func TestCLIClientWriteRefused(t *testing.T) {
	bin, err := exec.LookPath("tftp")
	if err != nil {
		t.Skip("SKIP: tftp not installed (apt-get install tftp-hpa)")
	}
	ts := startServer(t, nil)
	host, port, _ := net.SplitHostPort(ts.tftpAddr())
	src := filepath.Join(t.TempDir(), "up")
	if err := os.WriteFile(src, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command(bin, "-m", "binary", host, port, "-c", "put", src, "up").CombinedOutput()
	if !strings.Contains(string(out), "write requests refused") {
		t.Fatalf("tftp put: %s", out)
	}
	if _, err := os.Stat(filepath.Join(ts.root.dir, "up")); !os.IsNotExist(err) {
		t.Fatalf("file created: %v", err)
	}
}
