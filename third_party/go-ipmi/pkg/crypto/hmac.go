package crypto

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"fmt"
	"hash"
	"sync"

	"github.com/bougou/go-ipmi/pkg/types"
)

// HMAC computes a hash-based MAC. Supported algorithms: "md5", "sha1", "sha256".
func HMAC(alg string, data, key []byte) ([]byte, error) {
	switch alg {
	case "md5":
		h := hmac.New(md5.New, key)
		if _, err := h.Write(data); err != nil {
			return nil, fmt.Errorf("hmac md5 failed, err: %w", err)
		}
		return h.Sum(nil), nil
	case "sha1":
		h := hmac.New(sha1.New, key)
		if _, err := h.Write(data); err != nil {
			return nil, fmt.Errorf("hmac sha1 failed, err: %w", err)
		}
		return h.Sum(nil), nil
	case "sha256":
		h := hmac.New(sha256.New, key)
		if _, err := h.Write(data); err != nil {
			return nil, fmt.Errorf("hmac sha256 failed, err: %w", err)
		}
		return h.Sum(nil), nil
	default:
		return nil, fmt.Errorf("not support for hmac algorithm %s", alg)
	}
}

// AuthHMAC selects the HMAC variant based on the RAKP authentication algorithm
// (v2.0§13.28). Returns the full digest (RAKP2/RAKP3 and SIK/K1/K2 use the
// full digest; RAKP4 truncates separately).
func AuthHMAC(alg types.AuthAlg, data, key []byte) ([]byte, error) {
	switch alg {
	case types.AuthAlg_None:
		return nil, nil
	case types.AuthAlg_HMAC_MD5:
		return HMAC("md5", data, key)
	case types.AuthAlg_HMAC_SHA1:
		return HMAC("sha1", data, key)
	case types.AuthAlg_HMAC_SHA256:
		return HMAC("sha256", data, key)
	default:
		return nil, fmt.Errorf("unsupported auth algorithm: %d", alg)
	}
}

// IntegrityHMAC selects the HMAC variant based on the session integrity
// algorithm (v2.0§13.28.4). Returns the full digest; callers truncate.
//
// labctl's patch: the MAC of a key is set up once and reused (keyedMAC),
// not made anew for every packet: hmac.New hashes the key's inner and
// outer pads and allocates two hashes, and an RMCP+ session signs and
// checks every packet with one key (K1).
func IntegrityHMAC(alg types.IntegrityAlg, data, key []byte) ([]byte, error) {
	var newHash func() hash.Hash
	switch alg {
	case types.IntegrityAlg_None:
		return nil, nil
	case types.IntegrityAlg_HMAC_MD5_128:
		newHash = md5.New
	case types.IntegrityAlg_HMAC_SHA1_96:
		newHash = sha1.New
	case types.IntegrityAlg_HMAC_SHA256_128:
		newHash = sha256.New
	default:
		return nil, fmt.Errorf("unsupported integrity algorithm: %d", alg)
	}
	pool := keyedMAC(alg, key, newHash)
	h := pool.Get().(hash.Hash)
	h.Reset()
	h.Write(data) // a hash's Write never fails
	sum := h.Sum(nil)
	pool.Put(h)
	return sum, nil
}

// keyedMACs holds, for each integrity algorithm and key in use, the MACs
// set up for it: at most maxKeyedMACs keys, then it starts again.
var keyedMACs = struct {
	sync.Mutex
	pools map[macKey]*sync.Pool
}{pools: map[macKey]*sync.Pool{}}

type macKey struct {
	alg types.IntegrityAlg
	key string
}

// maxKeyedMACs bounds the keys keyedMACs holds: a key per session, and
// sessions come and go.
const maxKeyedMACs = 4096

// keyedMAC returns the pool of MACs of alg keyed with key.
func keyedMAC(alg types.IntegrityAlg, key []byte, newHash func() hash.Hash) *sync.Pool {
	keyedMACs.Lock()
	defer keyedMACs.Unlock()
	if p := keyedMACs.pools[macKey{alg, string(key)}]; p != nil {
		return p
	}
	if len(keyedMACs.pools) >= maxKeyedMACs {
		clear(keyedMACs.pools)
	}
	k := string(key)
	p := &sync.Pool{New: func() any { return hmac.New(newHash, []byte(k)) }}
	keyedMACs.pools[macKey{alg, k}] = p
	return p
}

// Equal compares two HMACs in constant time.
func Equal(a, b []byte) bool {
	return hmac.Equal(a, b)
}
