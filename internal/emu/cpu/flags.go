package cpu

// Lazy flags: arithmetic instructions record their kind, operands and
// result; CF/PF/AF/ZF/SF/OF are computed only when read.

const (
	lfNone  = iota // flags holds the arithmetic bits
	lfAdd          // res = dst + src (+ cin)
	lfSub          // res = dst - src (- cin)
	lfLogic        // CF=OF=AF=0
	lfInc          // CF kept in flags
	lfDec          // CF kept in flags
)

type lazyFlags struct {
	op            uint8
	size          uint8 // operand size in bytes
	cin           uint8 // carry-in for adc/sbb
	dst, src, res uint64
}

func sizeMask(size uint8) uint64 {
	if size == 8 {
		return ^uint64(0)
	}
	return 1<<(uint(size)*8) - 1
}

func signBit(size uint8) uint64 { return 1 << (uint(size)*8 - 1) }

var parityTable = func() (t [256]bool) {
	for i := range t {
		n := 0
		for b := i; b != 0; b >>= 1 {
			n += b & 1
		}
		t[i] = n%2 == 0
	}
	return
}()

// arith computes the arithmetic flags from the lazy state.
func (l *lazyFlags) arith(old uint64) uint64 {
	m := sizeMask(l.size)
	sb := signBit(l.size)
	res, dst, src := l.res&m, l.dst&m, l.src&m
	var f uint64
	if res == 0 {
		f |= flagZF
	}
	if res&sb != 0 {
		f |= flagSF
	}
	if parityTable[uint8(res)] {
		f |= flagPF
	}
	switch l.op {
	case lfAdd:
		if l.cin != 0 {
			if res <= dst {
				f |= flagCF
			}
		} else if res < dst {
			f |= flagCF
		}
		if (dst^res)&(src^res)&sb != 0 {
			f |= flagOF
		}
		f |= (dst ^ src ^ res) & flagAF
	case lfSub:
		if l.cin != 0 {
			if dst <= src {
				f |= flagCF
			}
		} else if dst < src {
			f |= flagCF
		}
		if (dst^src)&(dst^res)&sb != 0 {
			f |= flagOF
		}
		f |= (dst ^ src ^ res) & flagAF
	case lfInc:
		f |= old & flagCF
		if res == sb {
			f |= flagOF
		}
		f |= (dst ^ 1 ^ res) & flagAF
	case lfDec:
		f |= old & flagCF
		if res == sb-1 {
			f |= flagOF
		}
		f |= (dst ^ 1 ^ res) & flagAF
	}
	return f
}

// getFlags returns RFLAGS with the arithmetic bits materialised.
func (c *CPU) getFlags() uint64 {
	if c.lf.op != lfNone {
		c.flags = c.flags&^flagsArith | c.lf.arith(c.flags)
		c.lf.op = lfNone
	}
	return c.flags | 2
}

// setFlags sets RFLAGS wholesale.
func (c *CPU) setFlags(v uint64) {
	c.lf.op = lfNone
	c.flags = v&0x3f7fd5 | 2
}

// cf returns CF without materialising the other flags.
func (c *CPU) cf() bool {
	l := &c.lf
	m := sizeMask(l.size)
	switch l.op {
	case lfAdd:
		if l.cin != 0 {
			return l.res&m <= l.dst&m
		}
		return l.res&m < l.dst&m
	case lfSub:
		if l.cin != 0 {
			return l.dst&m <= l.src&m
		}
		return l.dst&m < l.src&m
	case lfLogic:
		return false
	}
	return c.flags&flagCF != 0
}

func (c *CPU) zf() bool {
	if c.lf.op != lfNone {
		return c.lf.res&sizeMask(c.lf.size) == 0
	}
	return c.flags&flagZF != 0
}

// setLazy records an arithmetic result.
func (c *CPU) setLazy(op, size uint8, dst, src, res uint64, cin uint8) {
	if (op == lfInc || op == lfDec) && c.lf.op != lfInc && c.lf.op != lfDec {
		// CF survives inc/dec: keep it in flags.
		c.flags = c.flags&^flagCF | boolU(c.cf())*flagCF
	}
	l := &c.lf
	l.op, l.size, l.cin = op, size, cin
	l.dst, l.src, l.res = dst, src, res
}

// setArith sets the arithmetic flags eagerly (shifts, multiplies...).
func (c *CPU) setArith(f uint64) {
	c.getFlags()
	c.flags = c.flags&^flagsArith | f&flagsArith
}

// szp returns ZF, SF and PF for res of size bytes.
func szp(res uint64, size uint8) uint64 {
	res &= sizeMask(size)
	var f uint64
	if res == 0 {
		f |= flagZF
	}
	if res&signBit(size) != 0 {
		f |= flagSF
	}
	if parityTable[uint8(res)] {
		f |= flagPF
	}
	return f
}

// cond evaluates condition code cc (the low nibble of jcc/setcc/cmovcc).
func (c *CPU) cond(cc uint8) bool {
	var r bool
	switch cc >> 1 {
	case 0: // O
		r = c.getFlags()&flagOF != 0
	case 1: // B
		r = c.getFlags()&flagCF != 0
	case 2: // Z
		r = c.zf()
	case 3: // BE
		f := c.getFlags()
		r = f&(flagCF|flagZF) != 0
	case 4: // S
		r = c.getFlags()&flagSF != 0
	case 5: // P
		r = c.getFlags()&flagPF != 0
	case 6: // L
		f := c.getFlags()
		r = (f&flagSF != 0) != (f&flagOF != 0)
	case 7: // LE
		f := c.getFlags()
		r = f&flagZF != 0 || (f&flagSF != 0) != (f&flagOF != 0)
	}
	if cc&1 != 0 {
		return !r
	}
	return r
}
