package cpu

import "encoding/binary"

// The x87 environment (fnstenv, fldenv) and state (fnsave, frstor)
// images. Four layouts, chosen by the operand size and the mode:
//
//	32-bit protected (28 bytes), each field in a dword:
//	  0 FCW  4 FSW  8 FTW (full tag word)  12 FIP  16 FCS | FOP<<16
//	  20 FDP  24 FDS
//	16-bit protected (14 bytes), each field in a word:
//	  0 FCW  2 FSW  4 FTW  6 FIP  8 FCS  10 FDP  12 FDS
//	32-bit real and virtual-8086 (28 bytes), pointers as linear addresses:
//	  0 FCW  4 FSW  8 FTW  12 FIP[15:0]  16 FOP | FIP[31:16]<<12
//	  20 FDP[15:0]  24 FDP[31:16]<<12
//	16-bit real and virtual-8086 (14 bytes):
//	  0 FCW  2 FSW  4 FTW  6 FIP[15:0]  8 FOP | FIP[19:16]<<12
//	  10 FDP[15:0]  12 FDP[19:16]<<12
//
// The unused upper halves of the dwords holding 16-bit fields are stored
// as ones, as this host does in the protected-mode layout (the real-mode
// layouts cannot be seen from user mode; they get the same). The state image is the environment and then
// ST(0) to ST(7), 10 bytes each (94 or 108 bytes). In 64-bit mode the
// 32-bit protected layout holds the low 32 bits of FIP and FDP.

// envLayout returns the size of the environment image of the current
// instruction and whether it is a real-mode layout.
func (c *CPU) envLayout() (size int, real bool) {
	size = 28
	if c.cur.osz == 2 {
		size = 14
	}
	return size, c.cr0&cr0PE == 0 || c.flags&flagVM != 0
}

// fullTag returns the tag word of fnstenv and fnsave: per physical
// register 00 valid, 01 zero, 10 special (NaN, infinity, denormal,
// unsupported), 11 empty.
func (f *fpuState) fullTag() uint16 {
	var t uint16
	for i, r := range f.st {
		tag := uint16(3)
		if f.ftw&(1<<i) != 0 {
			switch e := r.exp(); {
			case e == 0 && r.mant == 0:
				tag = 1
			case e == 0 || e == f80MaxExp || r.mant&integerBit == 0:
				tag = 2
			default:
				tag = 0
			}
		}
		t |= tag << (2 * i)
	}
	return t
}

// envImage writes the environment into b (size bytes).
func (f *fpuState) envImage(b []byte, size int, real bool) {
	le := binary.LittleEndian
	if size == 14 {
		le.PutUint16(b[0:], f.fcw)
		le.PutUint16(b[2:], f.fsw)
		le.PutUint16(b[4:], f.fullTag())
		if real {
			ip := f.fip + uint64(f.fcs)<<4
			dp := f.fdp + uint64(f.fds)<<4
			le.PutUint16(b[6:], uint16(ip))
			le.PutUint16(b[8:], f.fop&0x7ff|uint16(ip>>16&15)<<12)
			le.PutUint16(b[10:], uint16(dp))
			le.PutUint16(b[12:], uint16(dp>>16&15)<<12)
			return
		}
		le.PutUint16(b[6:], uint16(f.fip))
		le.PutUint16(b[8:], f.fcs)
		le.PutUint16(b[10:], uint16(f.fdp))
		le.PutUint16(b[12:], f.fds)
		return
	}
	const ones = 0xffff0000
	le.PutUint32(b[0:], ones|uint32(f.fcw))
	le.PutUint32(b[4:], ones|uint32(f.fsw))
	le.PutUint32(b[8:], ones|uint32(f.fullTag()))
	if real {
		ip := uint32(f.fip + uint64(f.fcs)<<4)
		dp := uint32(f.fdp + uint64(f.fds)<<4)
		le.PutUint32(b[12:], ones|ip&0xffff)
		le.PutUint32(b[16:], uint32(f.fop&0x7ff)|ip>>16<<12)
		le.PutUint32(b[20:], ones|dp&0xffff)
		le.PutUint32(b[24:], dp>>16<<12)
		return
	}
	le.PutUint32(b[12:], uint32(f.fip))
	le.PutUint32(b[16:], uint32(f.fcs)|uint32(f.fop&0x7ff)<<16)
	le.PutUint32(b[20:], uint32(f.fdp))
	le.PutUint32(b[24:], ones|uint32(f.fds))
}

// loadEnv loads the environment from b (size bytes). Tags other than
// empty become valid; FSW is taken as it is.
func (f *fpuState) loadEnv(b []byte, size int, real bool) {
	le := binary.LittleEndian
	var tag uint16
	if size == 14 {
		f.fcw, f.fsw, tag = le.Uint16(b[0:]), le.Uint16(b[2:]), le.Uint16(b[4:])
		if real {
			f.fip = uint64(le.Uint16(b[6:])) | uint64(le.Uint16(b[8:])>>12)<<16
			f.fop = le.Uint16(b[8:]) & 0x7ff
			f.fdp = uint64(le.Uint16(b[10:])) | uint64(le.Uint16(b[12:])>>12)<<16
			f.fcs, f.fds = 0, 0
		} else {
			f.fip, f.fcs = uint64(le.Uint16(b[6:])), le.Uint16(b[8:])
			f.fdp, f.fds = uint64(le.Uint16(b[10:])), le.Uint16(b[12:])
			f.fop = 0 // not in this layout
		}
	} else {
		f.fcw, f.fsw, tag = le.Uint16(b[0:]), le.Uint16(b[4:]), le.Uint16(b[8:])
		if real {
			f.fip = uint64(le.Uint16(b[12:])) | uint64(le.Uint32(b[16:])>>12&0xffff)<<16
			f.fop = le.Uint16(b[16:]) & 0x7ff
			f.fdp = uint64(le.Uint16(b[20:])) | uint64(le.Uint32(b[24:])>>12&0xffff)<<16
			f.fcs, f.fds = 0, 0
		} else {
			f.fip, f.fdp = uint64(le.Uint32(b[12:])), uint64(le.Uint32(b[20:]))
			f.fcs, f.fop = le.Uint16(b[16:]), le.Uint16(b[18:])&0x7ff
			f.fds = le.Uint16(b[24:])
		}
	}
	f.ftw = 0
	for i := range 8 {
		if tag>>(2*i)&3 != 3 {
			f.ftw |= 1 << i
		}
	}
	f.setFCW(f.fcw)
}

// envChunk is the access size for an image: the size of its fields.
func envChunk(size int) int {
	if size == 14 || size == 94 {
		return 2
	}
	return 4
}

// writeImage writes b at seg:off, checking all of it first.
func (c *CPU) writeImage(seg int, off uint64, b []byte) {
	lin := c.blockLin(seg, off, len(b), 1, true)
	n, user := envChunk(len(b)), c.user()
	for i := 0; i < len(b); i += n {
		var v uint64
		for j := range n {
			v |= uint64(b[i+j]) << (8 * j)
		}
		c.writeLin(lin+uint64(i), n, v, user)
	}
}

// readImage reads len(b) bytes at seg:off, checking all of them first.
func (c *CPU) readImage(seg int, off uint64, b []byte) {
	lin := c.blockLin(seg, off, len(b), 1, false)
	n, user := envChunk(len(b)), c.user()
	for i := 0; i < len(b); i += n {
		v := c.readLin(lin+uint64(i), n, user)
		for j := range n {
			b[i+j] = byte(v >> (8 * j))
		}
	}
}

// fnstenv stores the environment, then masks every exception.
func (c *CPU) fnstenv(seg int, off uint64) {
	size, real := c.envLayout()
	var b [28]byte
	c.fpu.envImage(b[:], size, real)
	c.writeImage(seg, off, b[:size])
	c.fpu.setFCW(c.fpu.fcw | fswExc)
}

// fldenv loads the environment.
func (c *CPU) fldenv(seg int, off uint64) {
	size, real := c.envLayout()
	var b [28]byte
	c.readImage(seg, off, b[:size])
	c.fpu.loadEnv(b[:], size, real)
}

// fnsave stores the environment and the registers, then initialises the
// x87 as fninit does.
func (c *CPU) fnsave(seg int, off uint64) {
	size, real := c.envLayout()
	var b [108]byte
	c.fpu.envImage(b[:], size, real)
	for i := range 8 {
		r := c.st(i)
		o := size + 10*i
		binary.LittleEndian.PutUint64(b[o:], r.mant)
		binary.LittleEndian.PutUint16(b[o+8:], r.se)
	}
	c.writeImage(seg, off, b[:size+80])
	c.fpu.fninit()
}

// frstor loads the environment and the registers.
func (c *CPU) frstor(seg int, off uint64) {
	size, real := c.envLayout()
	var b [108]byte
	c.readImage(seg, off, b[:size+80])
	c.fpu.loadEnv(b[:], size, real)
	for i := range 8 {
		o := size + 10*i
		c.fpu.st[c.phys(i)] = f80{mant: binary.LittleEndian.Uint64(b[o:]), se: binary.LittleEndian.Uint16(b[o+8:])}
	}
}
