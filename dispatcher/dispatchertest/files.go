package dispatchertest

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/labctl/labctl"
)

// fileServer is the simulated node's boot server: it serves published
// images and accepts uploads, on 127.0.0.1.
type fileServer struct {
	srv  *http.Server
	base string

	mu      sync.Mutex
	images  map[string]*image
	uploads map[string]string
	corrupt int64 // the offset of the byte flipped in every image served; -1 for none
}

func newFileServer() (*fileServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	fs := &fileServer{base: "http://" + ln.Addr().String(), images: map[string]*image{}, uploads: map[string]string{}, corrupt: -1}
	fs.srv = &http.Server{Handler: fs}
	go fs.srv.Serve(ln)
	return fs, nil
}

func (fs *fileServer) close() { fs.srv.Close() }

func token() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (fs *fileServer) publish(f *os.File) (labctl.PublishedImage, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	img := &image{fs: fs, file: f, size: st.Size(), token: token()}
	fs.mu.Lock()
	fs.images[img.token] = img
	fs.mu.Unlock()
	return img, nil
}

func (fs *fileServer) acceptUploads(dir string) (string, func(), error) {
	t := token()
	fs.mu.Lock()
	fs.uploads[t] = dir
	fs.mu.Unlock()
	return fs.base + "/uploads/" + t + "/", func() {
		fs.mu.Lock()
		delete(fs.uploads, t)
		fs.mu.Unlock()
	}, nil
}

func (fs *fileServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if len(parts) != 3 {
		http.NotFound(w, r)
		return
	}
	fs.mu.Lock()
	img := fs.images[parts[1]]
	dir, upload := fs.uploads[parts[1]]
	corrupt := fs.corrupt
	fs.mu.Unlock()
	switch {
	case parts[0] == "images" && img != nil && r.Method == http.MethodGet:
		var src io.Reader = io.NewSectionReader(img.file, 0, img.size)
		if corrupt >= 0 && corrupt < img.size {
			src = &flipReader{r: src, at: corrupt}
		}
		n, _ := io.Copy(w, src)
		img.served.Add(n)
	case parts[0] == "uploads" && upload && r.Method == http.MethodPost:
		// The dispatcher's protocol: base64 body, size checked.
		body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		data, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(string(body)), ""))
		if err != nil || r.URL.Query().Get("encoding") != "base64" || r.URL.Query().Get("size") != strconv.Itoa(len(data)) {
			http.Error(w, "bad upload", http.StatusBadRequest)
			return
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(parts[2])), data, 0o644); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	default:
		http.NotFound(w, r)
	}
}

type image struct {
	fs     *fileServer
	file   *os.File // the caller's, open until Close
	size   int64
	token  string
	served atomic.Int64
}

func (i *image) URL() string {
	return i.fs.base + "/images/" + i.token + "/" + filepath.Base(i.file.Name())
}
func (i *image) Size() int64        { return i.size }
func (i *image) BytesServed() int64 { return i.served.Load() }
func (i *image) Close() error {
	i.fs.mu.Lock()
	delete(i.fs.images, i.token)
	i.fs.mu.Unlock()
	return nil
}

// flipReader inverts the byte at offset at of what r reads.
type flipReader struct {
	r   io.Reader
	at  int64
	off int64
}

func (f *flipReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if i := f.at - f.off; i >= 0 && i < int64(n) {
		p[i] ^= 0xff
	}
	f.off += int64(n)
	return n, err
}
