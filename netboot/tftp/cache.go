package tftp

import (
	"fmt"
	"os"
	"sync"
	"time"
)

// fileCache keeps whole boot files in memory for the server, so that a
// storm of nodes asking for the same NBP or initrd reads it from disk once
// and every block after that is a copy from memory instead of a system call.
// An entry is keyed by the file's identity (device, inode, size,
// modification time): a file rebuilt in place, or replaced by rename, is a
// new entry, and the old one ages out.
type fileCache struct {
	maxFile  int64 // larger files are not cached (read block by block)
	maxTotal int64 // evict the least recently used entries beyond this

	mu      sync.Mutex
	entries map[fileKey]*cacheEntry
	total   int64
}

type fileKey struct {
	dev, ino uint64
	size     int64
	mtime    int64
}

type cacheEntry struct {
	ready   chan struct{} // closed once data or err is set
	data    []byte
	err     error
	lastUse time.Time // under fileCache.mu
}

func newFileCache(maxFile, maxTotal int64) *fileCache {
	return &fileCache{maxFile: maxFile, maxTotal: maxTotal, entries: map[fileKey]*cacheEntry{}}
}

// get returns the whole content of f (size bytes, as fi says), from memory
// if it is there, else read now; ok is false when the file is too big to
// cache (the caller reads it block by block). Concurrent gets of the same
// file read it once.
func (c *fileCache) get(f *os.File, fi os.FileInfo) (data []byte, ok bool, err error) {
	if fi.Size() > c.maxFile {
		return nil, false, nil
	}
	dev, ino, ok := fileID(fi)
	if !ok {
		return nil, false, nil
	}
	key := fileKey{dev: dev, ino: ino, size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	c.mu.Lock()
	e := c.entries[key]
	if e == nil {
		e = &cacheEntry{ready: make(chan struct{})}
		c.entries[key] = e
		c.total += key.size
		c.evictLocked(key)
		c.mu.Unlock()
		e.data, e.err = readWhole(f, key.size)
		if e.err != nil {
			c.mu.Lock()
			if c.entries[key] == e {
				delete(c.entries, key)
				c.total -= key.size
			}
			c.mu.Unlock()
		}
		close(e.ready)
	} else {
		c.mu.Unlock()
	}
	<-e.ready
	if e.err != nil {
		return nil, false, e.err
	}
	c.mu.Lock()
	e.lastUse = time.Now()
	c.mu.Unlock()
	return e.data, true, nil
}

// evictLocked drops least recently used entries (not keep, not loading)
// until the total fits. Transfers that still hold an evicted entry's data
// keep it alive until they end.
func (c *fileCache) evictLocked(keep fileKey) {
	for c.total > c.maxTotal {
		var oldest fileKey
		var oldestE *cacheEntry
		for k, e := range c.entries {
			if k == keep {
				continue
			}
			select {
			case <-e.ready:
			default:
				continue // loading
			}
			if oldestE == nil || e.lastUse.Before(oldestE.lastUse) {
				oldest, oldestE = k, e
			}
		}
		if oldestE == nil {
			return
		}
		delete(c.entries, oldest)
		c.total -= oldest.size
	}
}

// readWhole reads exactly size bytes from the start of f.
func readWhole(f *os.File, size int64) ([]byte, error) {
	b := make([]byte, size)
	if _, err := f.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	return b, nil
}
