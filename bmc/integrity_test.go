package bmc

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"hash"
	"sync"
	"testing"

	"github.com/bougou/go-ipmi/pkg/crypto"
	"github.com/bougou/go-ipmi/pkg/types"
)

// The patched go-ipmi reuses each key's MAC across packets: every packet's
// integrity code is still the HMAC of its own bytes under its session's
// key, with many sessions signing at once, and after more keys than it
// keeps (4096) come and go.
func TestIntegrityHMACReused(t *testing.T) {
	algs := []struct {
		alg     types.IntegrityAlg
		newHash func() hash.Hash
	}{
		{types.IntegrityAlg_HMAC_MD5_128, md5.New},
		{types.IntegrityAlg_HMAC_SHA1_96, sha1.New},
		{types.IntegrityAlg_HMAC_SHA256_128, sha256.New},
	}
	const sessions, packets = 16, 300
	var wg sync.WaitGroup
	for s := range sessions {
		wg.Go(func() {
			a := algs[s%len(algs)]
			key := make([]byte, 20)
			rand.Read(key)
			for i := range packets {
				if i == packets/2 {
					// Another session's key now and then: the
					// MACs of many keys in use at once.
					rand.Read(key)
				}
				data := make([]byte, 1+i%97)
				rand.Read(data)
				got, err := crypto.IntegrityHMAC(a.alg, data, key)
				want := hmac.New(a.newHash, key)
				want.Write(data)
				if err != nil || !hmac.Equal(got, want.Sum(nil)) {
					t.Errorf("alg %d, packet %d: %x, %v; want %x", a.alg, i, got, err, want.Sum(nil))
					return
				}
			}
		})
	}
	wg.Wait()
	// More keys than are kept, then the first again.
	first := []byte("the first key")
	data := []byte("a packet")
	for i := range 5000 {
		key := []byte{byte(i), byte(i >> 8), 1, 2, 3}
		if i == 0 {
			key = first
		}
		if _, err := crypto.IntegrityHMAC(types.IntegrityAlg_HMAC_SHA1_96, data, key); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := crypto.IntegrityHMAC(types.IntegrityAlg_HMAC_SHA1_96, data, first)
	want := hmac.New(sha1.New, first)
	want.Write(data)
	if !hmac.Equal(got, want.Sum(nil)) {
		t.Errorf("after 5000 keys, the first key's MAC is %x, want %x", got, want.Sum(nil))
	}
}
