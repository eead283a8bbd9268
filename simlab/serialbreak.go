package simlab

// breakFilter takes the serial breaks ipmi_sim sends out of the console
// input. For a break a SOL client asks for (ipmitool's ~B), ipmi_sim
// writes telnet's break command, IAC BRK (FFh F3h), to its "tcp:" SOL
// device, taking it for a telnet port. QEMU's serial port here is a plain
// socket and cannot receive a break, and the two bytes passed on as
// characters would land on the node's command line (busybox then reads
// them with what is typed next: "-sh: \xff\xf3ck-5: not found" for
// "echo back-5"). They are dropped, as a machine whose console ignores
// breaks would; nothing else is interpreted as telnet.
type breakFilter struct {
	iac bool // the last chunk ended in IAC (FFh), held back
}

const (
	telnetIAC = 0xff
	telnetBRK = 0xf3
)

// filter appends p to dst without the break commands in it (one may span
// two chunks) and returns how many it dropped.
func (f *breakFilter) filter(dst, p []byte) ([]byte, int) {
	dropped := 0
	for _, b := range p {
		if f.iac {
			f.iac = false
			if b == telnetBRK {
				dropped++
				continue
			}
			dst = append(dst, telnetIAC)
		}
		if b == telnetIAC {
			f.iac = true
			continue
		}
		dst = append(dst, b)
	}
	return dst, dropped
}
