package netboot

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pin/tftp/v3"

	"github.com/labctl/labctl/netboot/tftp/tftptest"
)

var (
	testMAC         = "52:54:00:00:00:01"
	testMasterEntry = MasterEntry("master/vmlinuz", "master/initrd.gz", "console=ttyS0,115200 panic=10")
	testLocalEntry  = LocalEntry("COM32 chain.c32\nAPPEND hd0 0")
)

func TestTFTPServesRootFiles(t *testing.T) {
	ts := startServer(t, nil)
	tests := map[string]struct {
		name    string
		blksize int
		want    []byte
	}{
		"nbp, default block":      {name: "pxelinux.0", want: ts.root.nbp},
		"nbp, 1468":               {name: "pxelinux.0", blksize: 1468, want: ts.root.nbp},
		"kernel, exact multiple":  {name: "master/vmlinuz", blksize: 512, want: ts.root.kernel},
		"big block capped":        {name: "master/initrd.gz", blksize: 8192, want: ts.root.initrd},
		"symlink inside the root": {name: ts.root.inLink, blksize: 1468, want: ts.root.nbp},
		"dot prefix":              {name: "./pxelinux.0", want: ts.root.nbp},
		"leading slash (GRUB)":    {name: "/master/vmlinuz", want: ts.root.kernel},
		"static default":          {name: "pxelinux.cfg/default", want: ts.root.dfault},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, tsize, err := tftptest.Get(ts.tftpAddr(), tt.name, tt.blksize)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("got %d bytes, want %d (content differs)", len(got), len(tt.want))
			}
			if tsize != int64(len(tt.want)) {
				t.Fatalf("tsize %d, want %d", tsize, len(tt.want))
			}
		})
	}
	// One log line per transfer, with client, file, bytes and duration.
	waitFor(t, "transfer log line", 30*time.Second, func() bool {
		return strings.Contains(ts.logs.String(), fmt.Sprintf("proto=tftp client=127.0.0.1 file=master/vmlinuz bytes=%d duration=", len(ts.root.kernel)))
	})
}

// TestTFTPBlockSizeCap checks the negotiated block size with a raw client:
// a client asking for 8192 gets the 1468 cap (and the OACK says so).
func TestTFTPBlockSizeCap(t *testing.T) {
	ts := startServer(t, nil)
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv := ts.TFTPAddr().(*net.UDPAddr)
	if _, err := c.WriteToUDP(tftptest.RRQ("master/vmlinuz", "blksize", "8192", "tsize", "0"), srv); err != nil {
		t.Fatal(err)
	}
	p, err := tftptest.Read(c, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if p.Op != 6 {
		t.Fatalf("want OACK, got op %d", p.Op)
	}
	opts := map[string]string{}
	fields := strings.Split(strings.TrimRight(string(p.Data), "\x00"), "\x00")
	for i := 0; i+1 < len(fields); i += 2 {
		opts[fields[i]] = fields[i+1]
	}
	if opts["blksize"] != "1468" || opts["tsize"] != fmt.Sprint(len(ts.root.kernel)) {
		t.Fatalf("OACK options %v, want blksize 1468 and tsize %d", opts, len(ts.root.kernel))
	}
	c.WriteToUDP([]byte{0, 4, 0, 0}, p.From) // ACK 0
	p, err = tftptest.Read(c, 2*time.Second)
	if err != nil || p.Op != 3 || p.Block != 1 || len(p.Data) != 1468 {
		t.Fatalf("first DATA: op %d block %d len %d err %v", p.Op, p.Block, len(p.Data), err)
	}
	c.WriteToUDP([]byte{0, 5, 0, 0, 'b', 'y', 'e', 0}, p.From) // ERROR: client gives up
}

func TestTFTPRefusesEscapes(t *testing.T) {
	ts := startServer(t, nil)
	rel, err := filepath.Rel(ts.root.dir, ts.root.secret)
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		name    string
		message string
	}{
		"dot dot":              {name: rel, message: "invalid file name"},
		"dot dot deep":         {name: "pxelinux.cfg/../../outside/secret", message: "invalid file name"},
		"dot dot to root file": {name: "master/../pxelinux.0", message: "invalid file name"},
		// One leading '/' is the root: a host path names nothing there.
		"absolute":               {name: ts.root.secret, message: "file not found"},
		"absolute root file":     {name: filepath.Join(ts.root.dir, "pxelinux.0"), message: "file not found"},
		"double slash":           {name: "//pxelinux.0", message: "invalid file name"},
		"relative symlink out":   {name: ts.root.outRel, message: "file not found"},
		"absolute symlink out":   {name: ts.root.outAbs, message: "file not found"},
		"very long":              {name: strings.Repeat("a/", 200) + "pxelinux.0", message: "invalid file name"},
		"control character":      {name: "pxelinux.0\n", message: "invalid file name"},
		"fifo":                   {name: ts.root.fifo, message: "file not found"},
		"directory":              {name: ts.root.subdir, message: "file not found"},
		"missing":                {name: "nothere", message: "file not found"},
		"unknown mac config":     {name: "pxelinux.cfg/01-52-54-00-99-99-99", message: "file not found"},
		"unknown hex config":     {name: "pxelinux.cfg/C000025B", message: "file not found"},
		"backslash is not a dir": {name: `master\vmlinuz`, message: "file not found"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, _, err := tftptest.Get(ts.tftpAddr(), tt.name, 0)
			if err == nil {
				t.Fatalf("served %d bytes", len(got))
			}
			if !strings.Contains(err.Error(), "code: 1, message: "+tt.message) {
				t.Fatalf("error %q, want message %q", err, tt.message)
			}
		})
	}
}

// TestTFTPNULInName sends requests whose name has a NUL in the middle.
// TFTP ends the name at the first NUL, so the rest is read as the mode and
// options: the request is for the part before the NUL (or refused for its
// mode), and a name ending in "../" tricks cannot ride along.
func TestTFTPNULInName(t *testing.T) {
	ts := startServer(t, nil)
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for pkt, want := range map[string]string{
		"\x00\x01nothere\x00../outside/secret\x00octet\x00": `unknown transfer mode "../outside/secret": octet only`,
		"\x00\x01nothere\x00octet\x00../outside/secret\x00": "file not found",
	} {
		if _, err := c.WriteToUDP([]byte(pkt), ts.TFTPAddr().(*net.UDPAddr)); err != nil {
			t.Fatal(err)
		}
		p, err := tftptest.Read(c, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if p.Op != 5 || p.Msg != want {
			t.Fatalf("%q: got op %d %q, want ERROR %q", pkt, p.Op, p.Msg, want)
		}
	}
}

func TestTFTPRefusesWrites(t *testing.T) {
	ts := startServer(t, nil)
	c, err := tftp.NewClient(ts.tftpAddr())
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(2 * time.Second)
	rf, err := c.Send("uploaded.bin", "octet")
	if err == nil {
		_, err = rf.ReadFrom(bytes.NewReader([]byte("data")))
	}
	if err == nil || !strings.Contains(err.Error(), "read-only boot server") {
		t.Fatalf("write request: err = %v, want refusal", err)
	}
	if _, err := os.Stat(filepath.Join(ts.root.dir, "uploaded.bin")); !os.IsNotExist(err) {
		t.Fatalf("file created in the root: %v", err)
	}
	waitFor(t, "refusal in the log", 30*time.Second, func() bool {
		return strings.Contains(ts.logs.String(), "tftp write refused")
	})
}

// TestPerNodeConfig walks the names pxelinux asks for, over TFTP and HTTP,
// for a node registered by MAC and IP, while its entry changes.
func TestPerNodeConfig(t *testing.T) {
	ts := startServer(t, nil)
	mac := mustMAC(t, testMAC)
	// The test client is 127.0.0.1 = 7F000001.
	if err := ts.SetNode(mac, net.IPv4(127, 0, 0, 1), testLocalEntry); err != nil {
		t.Fatal(err)
	}
	other := mustMAC(t, "52:54:00:00:00:02")
	if err := ts.SetNode(other, net.ParseIP("192.0.2.91"), testMasterEntry); err != nil {
		t.Fatal(err)
	}
	base := ts.HTTPURL()
	master := "# labctl: master entry for 52:54:00:00:00:01\nDEFAULT labctl\nPROMPT 0\nLABEL labctl\n" +
		"  KERNEL " + base + "/master/vmlinuz\n" +
		"  APPEND initrd=" + base + "/master/initrd.gz console=ttyS0,115200 panic=10\n"
	local := "# labctl: local boot for 52:54:00:00:00:01\nDEFAULT local\nPROMPT 0\nLABEL local\n  COM32 chain.c32\n  APPEND hd0 0\n"

	fetch := func(name string) (tftpBody string, httpBody string) {
		t.Helper()
		b, tsize, err := tftptest.Get(ts.tftpAddr(), name, 1468)
		if err != nil {
			t.Fatalf("tftp %s: %v", name, err)
		}
		if tsize != int64(len(b)) {
			t.Fatalf("tftp %s: tsize %d for %d bytes", name, tsize, len(b))
		}
		status, hb := httpGet(t, base+"/"+name)
		if status != http.StatusOK {
			t.Fatalf("http %s: status %d", name, status)
		}
		return string(b), string(hb)
	}
	names := []string{"pxelinux.cfg/01-52-54-00-00-00-01", "pxelinux.cfg/01-52-54-00-00-00-01", "pxelinux.cfg/7F000001", "pxelinux.cfg/7F00000", "pxelinux.cfg/7F", "pxelinux.cfg/7"}
	for _, n := range names {
		if tb, hb := fetch(n); tb != local || hb != local {
			t.Fatalf("%s before the job:\ntftp:\n%s\nhttp:\n%s\nwant:\n%s", n, tb, hb, local)
		}
	}
	// A job starts: master entry.
	if err := ts.SetNode(mac, net.IPv4(127, 0, 0, 1), testMasterEntry); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if tb, hb := fetch(n); tb != master || hb != master {
			t.Fatalf("%s during the job:\ntftp:\n%s\nhttp:\n%s\nwant:\n%s", n, tb, hb, master)
		}
	}
	// The job ends: back to local.
	ts.ClearNode(mac)
	if tb, _ := fetch("pxelinux.cfg/7F000001"); tb != local {
		t.Fatalf("after ClearNode:\n%s", tb)
	}
	// The other node by its full hex IP, from any client.
	if tb, _ := fetch("pxelinux.cfg/C000025B"); !strings.Contains(tb, "master entry for 52:54:00:00:00:02") {
		t.Fatalf("C000025B:\n%s", tb)
	}
	// ...but its prefixes are not ours to answer from 127.0.0.1.
	if _, _, err := tftptest.Get(ts.tftpAddr(), "pxelinux.cfg/C000025", 0); err == nil {
		t.Fatal("prefix of another node's IP served")
	}
	// An unknown node walks on to the static default, as pxelinux does.
	ts.RemoveNode(mac)
	for _, n := range names {
		if _, _, err := tftptest.Get(ts.tftpAddr(), n, 0); err == nil {
			t.Fatalf("%s served after RemoveNode", n)
		}
	}
	if tb, hb := fetch("pxelinux.cfg/default"); tb != string(ts.root.dfault) || hb != tb {
		t.Fatalf("default:\n%s", tb)
	}
	waitFor(t, "node in the log", 30*time.Second, func() bool {
		return strings.Contains(ts.logs.String(), `node="52:54:00:00:00:01 master"`)
	})
}

// TestConfigOverTFTPEntry checks the TFTP-path form of the master entry.
func TestConfigOverTFTPEntry(t *testing.T) {
	ts := startServer(t, nil)
	e := testMasterEntry
	e.OverTFTP = true
	if err := ts.SetNode(mustMAC(t, testMAC), nil, e); err != nil {
		t.Fatal(err)
	}
	b, _, err := tftptest.Get(ts.tftpAddr(), "pxelinux.cfg/01-52-54-00-00-00-01", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "  KERNEL master/vmlinuz\n  APPEND initrd=master/initrd.gz console=") {
		t.Fatalf("config:\n%s", b)
	}
	// The paths it names are there to fetch.
	for _, p := range []string{"master/vmlinuz", "master/initrd.gz"} {
		if _, _, err := tftptest.Get(ts.tftpAddr(), p, 1468); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	}
}

// TestConfigsWhileEntriesChange runs TFTP and HTTP config fetches while
// another goroutine flips the node between master and local: every fetch
// must see one whole config, never a torn mix. Run with -race.
func TestConfigsWhileEntriesChange(t *testing.T) {
	ts := startServer(t, nil)
	mac := mustMAC(t, testMAC)
	if err := ts.SetNode(mac, net.IPv4(127, 0, 0, 1), testLocalEntry); err != nil {
		t.Fatal(err)
	}
	master, _ := renderEntry(testMasterEntry, ts.HTTPURL(), mac.String())
	local, _ := renderEntry(testLocalEntry, ts.HTTPURL(), mac.String())

	stop := make(chan struct{})
	flipped := make(chan int)
	go func() {
		n := 0
		defer func() { flipped <- n }()
		for ; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			e := testLocalEntry
			if n%2 == 0 {
				e = testMasterEntry
			}
			if err := ts.SetNode(mac, net.IPv4(127, 0, 0, 1), e); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()

	var fetchers sync.WaitGroup
	errs := make(chan error, 4)
	seen := make(chan string, 4*25)
	for w := 0; w < 4; w++ {
		fetchers.Add(1)
		go func() {
			defer fetchers.Done()
			client := &http.Client{Timeout: 5 * time.Second}
			for i := 0; i < 25; i++ {
				var b []byte
				var err error
				if (w+i)%2 == 0 {
					b, _, err = tftptest.Get(ts.tftpAddr(), "pxelinux.cfg/7F000001", 0)
				} else {
					var resp *http.Response
					if resp, err = client.Get(ts.HTTPURL() + "/pxelinux.cfg/01-52-54-00-00-00-01"); err == nil {
						var buf bytes.Buffer
						_, err = buf.ReadFrom(resp.Body)
						resp.Body.Close()
						b = buf.Bytes()
					}
				}
				switch {
				case err != nil:
					errs <- err
					return
				case bytes.Equal(b, master):
					seen <- "master"
				case bytes.Equal(b, local):
					seen <- "local"
				default:
					errs <- fmt.Errorf("torn config:\n%s", b)
					return
				}
			}
		}()
	}
	fetchers.Wait()
	close(stop)
	n := <-flipped
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	close(seen)
	kinds := map[string]int{}
	for k := range seen {
		kinds[k]++
	}
	t.Logf("%d entry changes during %d fetches: %v", n, kinds["master"]+kinds["local"], kinds)
	if n < 10 {
		t.Errorf("only %d entry changes happened during the fetches", n)
	}
}

// TestTFTPBadRequestsAnswered: the boot server answers requests it cannot
// take with an ERROR: an empty name, a name longer than an Ethernet frame
// (read whole, refused as an invalid name), netascii (octet only).
func TestTFTPBadRequestsAnswered(t *testing.T) {
	ts := startServer(t, nil)
	long := strings.Repeat("pxelinux.cfg/", 150) + "default" // 1,957 bytes
	for _, tt := range []struct {
		pkt []byte
		msg string
	}{
		{[]byte("\x00\x01\x00octet\x00"), "invalid file name: empty"},
		{tftptest.RRQ(long), "invalid file name"},
		{[]byte("\x00\x01pxelinux.0\x00netascii\x00"), "netascii mode not supported: octet only"},
	} {
		c := dialRaw(t)
		if _, err := c.WriteToUDP(tt.pkt, ts.TFTPAddr().(*net.UDPAddr)); err != nil {
			t.Fatal(err)
		}
		p, err := tftptest.Read(c, 2*time.Second)
		if err != nil {
			t.Fatalf("%.40q: %v", tt.pkt, err)
		}
		if p.Op != 5 || p.Msg != tt.msg {
			t.Fatalf("%.40q: got op %d %q, want ERROR %q", tt.pkt, p.Op, p.Msg, tt.msg)
		}
	}
}
