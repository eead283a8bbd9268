package simlab

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/binary"
	"sync"
)

// bootFlagReader reads the boot flags clients set (Set System Boot Options,
// parameter 5) from the IPMI traffic passing through the front. ipmi_sim
// hands its chassis hook only the boot device and drops byte 1 of the flags
// (valid, persistent, EFI), so this is the only way the relay learns
// whether a boot override asked for EFI, as real firmware reads it from its
// BMC.
//
// lanplus messages are encrypted (AES-CBC-128 with cipher suite 3). The
// front knows the BMC password, so it derives each session's keys from the
// RAKP exchange it relays, as the BMC does (IPMI v2.0 section 13.31-13.32):
// SIK = HMAC-SHA1(password, Rm | Rc | role | name length | name), the AES
// key the first 16 bytes of HMAC-SHA1(SIK, 20 x 0x02). It only reads:
// every datagram is forwarded unchanged. Sessions with other cipher suites
// or a BMC key (Kg) are not read; their flags stay unknown.
type bootFlagReader struct {
	password []byte

	mu    sync.Mutex
	open  map[uint32]uint32 // console session ID -> BMC session ID (Open Session Response)
	rakp1 map[uint32]rakp1  // by BMC session ID, until RAKP 2
	keys  map[uint32][]byte // BMC session ID -> AES key
	flags BootFlags         // the last boot flags a client set
}

type rakp1 struct {
	rm   []byte // the console's random number
	role byte
	name []byte
}

// BootFlags are the boot flags (boot option parameter 5, byte 1 and the
// device selector) a client last set through the BMC.
type BootFlags struct {
	Set        bool `json:"set"`
	Valid      bool `json:"valid"`
	Persistent bool `json:"persistent"`
	EFI        bool `json:"efi"`
	// Device is the boot device selector (bits 2-5 of byte 2): 1 PXE, 2 disk.
	Device int `json:"device"`
}

// maxSessions bounds the sessions the reader keeps keys for.
const maxSessions = 64

func newBootFlagReader(password string) *bootFlagReader {
	return &bootFlagReader{
		password: []byte(password),
		open:     map[uint32]uint32{},
		rakp1:    map[uint32]rakp1{},
		keys:     map[uint32][]byte{},
	}
}

// RMCP+ payload types.
const (
	payloadIPMI        = 0x00
	payloadOpenSessRsp = 0x11
	payloadRAKP1       = 0x12
	payloadRAKP2       = 0x13
)

// rmcpPlus splits an RMCP+ (IPMI v2.0) datagram: payload type, whether it
// is encrypted, session ID and payload.
func rmcpPlus(b []byte) (ptype byte, encrypted bool, sid uint32, payload []byte, ok bool) {
	if len(b) < 16 || b[0] != 0x06 || b[3]&0x1f != 0x07 || b[4] != 0x06 {
		return 0, false, 0, nil, false
	}
	pt := b[5]
	i := 6
	if pt&0x3f == 0x02 { // OEM explicit: IANA + payload ID
		i += 6
	}
	if len(b) < i+10 {
		return 0, false, 0, nil, false
	}
	sid = binary.LittleEndian.Uint32(b[i:])
	n := int(binary.LittleEndian.Uint16(b[i+8:]))
	i += 10
	if len(b) < i+n {
		return 0, false, 0, nil, false
	}
	return pt & 0x3f, pt&0x80 != 0, sid, b[i : i+n], true
}

// fromClient reads a datagram a client sent to the BMC.
func (r *bootFlagReader) fromClient(b []byte) {
	pt, enc, sid, p, ok := rmcpPlus(b)
	if !ok {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch pt {
	case payloadRAKP1:
		if len(p) < 28 || len(p) < 28+int(p[27]) {
			return
		}
		bmcSID := binary.LittleEndian.Uint32(p[4:])
		r.trim()
		r.rakp1[bmcSID] = rakp1{
			rm:   append([]byte(nil), p[8:24]...),
			role: p[24],
			name: append([]byte(nil), p[28:28+int(p[27])]...),
		}
	case payloadIPMI:
		key := r.keys[sid]
		if !enc || key == nil {
			return
		}
		msg := decryptPayload(key, p)
		// rsAddr, netFn/LUN, checksum, rqAddr, rqSeq/LUN, cmd, data..., checksum
		if len(msg) < 9 || msg[1]>>2 != 0x00 || msg[5] != 0x08 {
			return
		}
		data := msg[6 : len(msg)-1]
		if len(data) < 3 || data[0]&0x7f != 5 {
			return
		}
		r.flags = BootFlags{
			Set:        true,
			Valid:      data[1]&0x80 != 0,
			Persistent: data[1]&0x40 != 0,
			EFI:        data[1]&0x20 != 0,
			Device:     int(data[2]>>2) & 0x0f,
		}
	}
}

// fromBMC reads a datagram the BMC sent to a client.
func (r *bootFlagReader) fromBMC(b []byte) {
	pt, _, _, p, ok := rmcpPlus(b)
	if !ok {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch pt {
	case payloadOpenSessRsp:
		if len(p) < 12 || p[1] != 0 {
			return
		}
		r.trim()
		r.open[binary.LittleEndian.Uint32(p[4:])] = binary.LittleEndian.Uint32(p[8:])
	case payloadRAKP2:
		if len(p) < 24 || p[1] != 0 {
			return
		}
		bmcSID, ok := r.open[binary.LittleEndian.Uint32(p[4:])]
		if !ok {
			return
		}
		m, ok := r.rakp1[bmcSID]
		if !ok {
			return
		}
		delete(r.rakp1, bmcSID)
		mac := hmac.New(sha1.New, r.password)
		mac.Write(m.rm)
		mac.Write(p[8:24]) // Rc
		mac.Write([]byte{m.role, byte(len(m.name))})
		mac.Write(m.name)
		sik := mac.Sum(nil)
		k2 := hmac.New(sha1.New, sik)
		k2.Write(bytesOf(0x02, 20))
		r.keys[bmcSID] = k2.Sum(nil)[:16]
	}
}

// last returns the boot flags a client set last.
func (r *bootFlagReader) last() BootFlags {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.flags
}

// trim keeps the maps bounded: past maxSessions entries, all are dropped
// (sessions in use then get no new flags read until they log in again).
func (r *bootFlagReader) trim() {
	if len(r.open)+len(r.rakp1)+len(r.keys) > 3*maxSessions {
		clear(r.open)
		clear(r.rakp1)
		clear(r.keys)
	}
}

// decryptPayload decrypts an AES-CBC-128 payload (16-byte IV, then
// ciphertext) and strips the confidentiality trailer; nil if malformed.
func decryptPayload(key, p []byte) []byte {
	if len(p) < 32 || (len(p)-16)%aes.BlockSize != 0 {
		return nil
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil
	}
	plain := make([]byte, len(p)-16)
	cipher.NewCBCDecrypter(block, p[:16]).CryptBlocks(plain, p[16:])
	pad := int(plain[len(plain)-1])
	if pad+1 > len(plain) {
		return nil
	}
	return plain[:len(plain)-1-pad]
}

func bytesOf(b byte, n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = b
	}
	return out
}
