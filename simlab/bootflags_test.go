package simlab

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/binary"
	"testing"
)

// rmcpPacket wraps payload in an RMCP+ session header.
func rmcpPacket(ptype byte, sid uint32, payload []byte) []byte {
	b := []byte{0x06, 0x00, 0xff, 0x07, 0x06, ptype}
	b = binary.LittleEndian.AppendUint32(b, sid)
	b = binary.LittleEndian.AppendUint32(b, 1)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(payload)))
	return append(b, payload...)
}

// A session as a client sets it up, then Set System Boot Options with
// the EFI bit: the reader derives the key from the password and the
// exchange alone and reads the flags. The client side is written from the
// specification here; TestLabUEFIFirmware checks it against ipmitool.
func TestBootFlagReader(t *testing.T) {
	const consoleSID, bmcSID = 0xa0a1a2a3, 0x01020304
	r := newBootFlagReader("secret")
	rm := bytesOf(0x11, 16)
	rc := bytesOf(0x22, 16)
	name := []byte("admin")

	osr := make([]byte, 12)
	binary.LittleEndian.PutUint32(osr[4:], consoleSID)
	binary.LittleEndian.PutUint32(osr[8:], bmcSID)
	r.fromBMC(rmcpPacket(payloadOpenSessRsp, 0, osr))
	rakp1 := make([]byte, 28)
	binary.LittleEndian.PutUint32(rakp1[4:], bmcSID)
	copy(rakp1[8:], rm)
	rakp1[24] = 0x14
	rakp1[27] = byte(len(name))
	r.fromClient(rmcpPacket(payloadRAKP1, 0, append(rakp1, name...)))
	rakp2 := make([]byte, 60)
	binary.LittleEndian.PutUint32(rakp2[4:], consoleSID)
	copy(rakp2[8:], rc)
	r.fromBMC(rmcpPacket(payloadRAKP2, 0, rakp2))

	mac := hmac.New(sha1.New, []byte("secret"))
	mac.Write(rm)
	mac.Write(rc)
	mac.Write([]byte{0x14, byte(len(name))})
	mac.Write(name)
	k2 := hmac.New(sha1.New, mac.Sum(nil))
	k2.Write(bytesOf(0x02, 20))
	key := k2.Sum(nil)[:16]

	// Set System Boot Options: chassis netFn 0, cmd 8, param 5, EFI + valid, PXE.
	msg := []byte{0x20, 0x00, 0xe0, 0x81, 0x04, 0x08, 0x05, 0xa0, 0x04, 0x00, 0x00, 0x00, 0x7f}
	plain := append(msg, 0x01, 0x02) // confidentiality pad
	for (len(plain)+1)%16 != 0 {
		plain = append(plain, byte(len(plain)-len(msg)+1))
	}
	plain = append(plain, byte(len(plain)-len(msg)))
	iv := bytesOf(0x33, 16)
	block, _ := aes.NewCipher(key)
	ct := make([]byte, len(plain))
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, plain)
	r.fromClient(rmcpPacket(0x80|payloadIPMI, bmcSID, append(iv, ct...)))

	got := r.last()
	want := BootFlags{Set: true, Valid: true, EFI: true, Device: 1}
	if got != want {
		t.Errorf("flags = %+v, want %+v", got, want)
	}

	// Another session's message, and garbage, change nothing.
	r.fromClient(rmcpPacket(0x80|payloadIPMI, 0x99, append(iv, ct...)))
	r.fromClient([]byte{0x06, 0x00, 0xff, 0x07, 0x06})
	if r.last() != want {
		t.Errorf("flags changed by another session or garbage: %+v", r.last())
	}
}

func FuzzBootFlagReader(f *testing.F) {
	f.Add(rmcpPacket(payloadRAKP1, 0, make([]byte, 40)), true)
	f.Add(rmcpPacket(0x80|payloadIPMI, 1, make([]byte, 48)), true)
	f.Add(rmcpPacket(payloadRAKP2, 0, make([]byte, 60)), false)
	f.Fuzz(func(t *testing.T, b []byte, client bool) {
		r := newBootFlagReader("pw")
		r.keys[1] = bytesOf(0x01, 16)
		if client {
			r.fromClient(b)
		} else {
			r.fromBMC(b)
		}
	})
}
