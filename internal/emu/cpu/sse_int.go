package cpu

// Packed integer operations of MMX and SSE2 on 64-bit lanes: an MMX
// register is one lane, an XMM register two. The hot ones of string
// functions (pcmpeqb, padd/psub, the logic operations, pminub, pmovmskb)
// work on whole lanes with SWAR arithmetic.

// SWAR constants: the top bit of each byte, word and doubleword.
const (
	hiBytes = 0x8080808080808080
	hiWords = 0x8000800080008000
	hiDword = 0x8000000080000000
	loBytes = 0x7f7f7f7f7f7f7f7f
)

// addLanes adds elements whose top bits are h (hiBytes, hiWords, hiDword).
func addLanes(d, s, h uint64) uint64 { return ((d &^ h) + (s &^ h)) ^ ((d ^ s) & h) }

// subLanes subtracts elements whose top bits are h.
func subLanes(d, s, h uint64) uint64 { return ((d | h) - (s &^ h)) ^ ((d ^ ^s) & h) }

// eqBytes returns 0xff in each byte where d and s are equal.
func eqBytes(d, s uint64) uint64 {
	x := d ^ s
	nz := (x&loBytes + loBytes | x) & hiBytes // top bit set where x's byte is not 0
	return (^nz & hiBytes >> 7) * 0xff
}

// minBytes returns the unsigned minimum of each byte.
func minBytes(d, s uint64) uint64 {
	var r uint64
	for i := 0; i < 64; i += 8 {
		x, y := d>>i&0xff, s>>i&0xff
		r |= min(x, y) << i
	}
	return r
}

// signBits gathers the top bit of each byte of x (pmovmskb of a lane).
func signBits(x uint64) uint64 { return (x & hiBytes >> 7) * 0x0102040810204080 >> 56 }

// laneOp applies the lane-wise operation of opcode 0F b to d and s.
func laneOp(b uint8, d, s uint64) uint64 {
	switch b {
	case 0xdb: // pand
		return d & s
	case 0xdf: // pandn
		return ^d & s
	case 0xeb: // por
		return d | s
	case 0xef: // pxor
		return d ^ s
	case 0xfc: // paddb
		return addLanes(d, s, hiBytes)
	case 0xfd: // paddw
		return addLanes(d, s, hiWords)
	case 0xfe: // paddd
		return addLanes(d, s, hiDword)
	case 0xd4: // paddq
		return d + s
	case 0xf8: // psubb
		return subLanes(d, s, hiBytes)
	case 0xf9: // psubw
		return subLanes(d, s, hiWords)
	case 0xfa: // psubd
		return subLanes(d, s, hiDword)
	case 0xfb: // psubq
		return d - s
	case 0x74: // pcmpeqb
		return eqBytes(d, s)
	case 0xda: // pminub
		return minBytes(d, s)
	case 0xf4: // pmuludq
		return d & 0xffffffff * (s & 0xffffffff)
	case 0xf5: // pmaddwd
		var r uint64
		for i := 0; i < 64; i += 32 {
			p := int32(int16(d>>i))*int32(int16(s>>i)) + int32(int16(d>>(i+16)))*int32(int16(s>>(i+16)))
			r |= uint64(uint32(p)) << i
		}
		return r
	case 0xf6: // psadbw
		var sum uint64
		for i := 0; i < 64; i += 8 {
			x, y := d>>i&0xff, s>>i&0xff
			sum += max(x, y) - min(x, y)
		}
		return sum
	}
	w := elemWidth(b)
	mask := uint64(1)<<w - 1
	var r uint64
	for i := uint(0); i < 64; i += w {
		r |= elemOp(b, w, d>>i&mask, s>>i&mask) & mask << i
	}
	return r
}

// elemWidth is the element width in bits of the element-wise operation
// of opcode 0F b.
func elemWidth(b uint8) uint {
	switch b {
	case 0x64, 0x74, 0xd8, 0xda, 0xdc, 0xde, 0xe0, 0xe8, 0xec:
		return 8
	case 0x66, 0x76:
		return 32
	}
	return 16
}

// elemOp applies the operation of opcode 0F b to the w-bit elements x and y.
func elemOp(b uint8, w uint, x, y uint64) uint64 {
	sx, sy := sext(x, w), sext(y, w)
	smax, smin := int64(1)<<(w-1)-1, -int64(1)<<(w-1)
	umax := uint64(1)<<w - 1
	switch b {
	case 0x64, 0x65, 0x66: // pcmpgt
		if sx > sy {
			return umax
		}
		return 0
	case 0x74, 0x75, 0x76: // pcmpeq
		if x == y {
			return umax
		}
		return 0
	case 0xd8, 0xd9: // psubus
		if x < y {
			return 0
		}
		return x - y
	case 0xdc, 0xdd: // paddus
		return min(x+y, umax)
	case 0xe8, 0xe9: // psubs
		return uint64(min(max(sx-sy, smin), smax))
	case 0xec, 0xed: // padds
		return uint64(min(max(sx+sy, smin), smax))
	case 0xda: // pminub
		return min(x, y)
	case 0xde: // pmaxub
		return max(x, y)
	case 0xea: // pminsw
		return uint64(min(sx, sy))
	case 0xee: // pmaxsw
		return uint64(max(sx, sy))
	case 0xe0, 0xe3: // pavgb, pavgw
		return (x + y + 1) >> 1
	case 0xd5: // pmullw
		return uint64(sx * sy)
	case 0xe5: // pmulhw
		return uint64(sx*sy) >> 16
	case 0xe4: // pmulhuw
		return x * y >> 16
	}
	panic("sse: no element operation for opcode")
}

func sext(x uint64, w uint) int64 { return int64(x<<(64-w)) >> (64 - w) }

// Shift kinds.
const (
	shiftRL = iota
	shiftRA
	shiftLL
)

// shiftLanes shifts each w-bit element of d by count.
func shiftLanes(kind int, w uint, d, count uint64) uint64 {
	if count >= uint64(w) {
		if kind != shiftRA {
			return 0
		}
		count = uint64(w - 1)
	}
	if w == 64 {
		switch kind {
		case shiftRL:
			return d >> count
		case shiftLL:
			return d << count
		}
	}
	mask := uint64(1)<<w - 1
	var r uint64
	for i := uint(0); i < 64; i += w {
		x := d >> i & mask
		switch kind {
		case shiftRL:
			x >>= count
		case shiftRA:
			x = uint64(sext(x, w) >> count)
		case shiftLL:
			x <<= count
		}
		r |= x & mask << i
	}
	return r
}

// shiftOp returns the kind and element width of the shift by register of
// opcode 0F b (D1-D3, E1-E2, F1-F3), ok=false for another opcode.
func shiftOp(b uint8) (kind int, w uint, ok bool) {
	switch b {
	case 0xd1, 0xd2, 0xd3:
		return shiftRL, 8 << (b - 0xd0), true
	case 0xe1, 0xe2:
		return shiftRA, 8 << (b - 0xe0), true
	case 0xf1, 0xf2, 0xf3:
		return shiftLL, 8 << (b - 0xf0), true
	}
	return 0, 0, false
}

// interleave interleaves the w-bit elements of the low halves of a and b:
// a0 b0 a1 b1 ...
func interleave(w uint, a, b uint64) uint64 {
	mask := uint64(1)<<w - 1
	var r uint64
	for i := uint(0); i < 32; i += w {
		r |= (a>>i&mask)<<(2*i) | (b>>i&mask)<<(2*i+w)
	}
	return r
}

// unpackWidth is the element width in bits of punpckl/punpckh 0F b.
func unpackWidth(b uint8) uint { return 8 << (b & 3) }

// packHalf narrows the elements of lane x for pack opcode 0F b (63
// packsswb, 67 packuswb, 6B packssdw) into the low 32 bits.
func packHalf(b uint8, x uint64) uint64 {
	var r uint64
	switch b {
	case 0x63, 0x67:
		for i := uint(0); i < 4; i++ {
			v := int64(int16(x >> (16 * i)))
			if b == 0x63 {
				v = min(max(v, -128), 127)
			} else {
				v = min(max(v, 0), 255)
			}
			r |= uint64(uint8(v)) << (8 * i)
		}
	default:
		for i := uint(0); i < 2; i++ {
			v := min(max(int64(int32(x>>(32*i))), -32768), 32767)
			r |= uint64(uint16(v)) << (16 * i)
		}
	}
	return r
}

// mmxIntOp applies packed integer opcode 0F b to MMX operands.
func mmxIntOp(b uint8, d, s uint64) uint64 {
	switch {
	case b >= 0x60 && b <= 0x62:
		return interleave(unpackWidth(b), d, s)
	case b >= 0x68 && b <= 0x6a:
		return interleave(unpackWidth(b), d>>32, s>>32)
	case b == 0x63 || b == 0x67 || b == 0x6b:
		return packHalf(b, d) | packHalf(b, s)<<32
	}
	if kind, w, ok := shiftOp(b); ok {
		return shiftLanes(kind, w, d, s)
	}
	return laneOp(b, d, s)
}

// xmmIntOp applies packed integer opcode 0F b to XMM operands.
func xmmIntOp(b uint8, d, s [2]uint64) [2]uint64 {
	switch {
	case b >= 0x60 && b <= 0x62:
		w := unpackWidth(b)
		return [2]uint64{interleave(w, d[0], s[0]), interleave(w, d[0]>>32, s[0]>>32)}
	case b >= 0x68 && b <= 0x6a:
		w := unpackWidth(b)
		return [2]uint64{interleave(w, d[1], s[1]), interleave(w, d[1]>>32, s[1]>>32)}
	case b == 0x6c:
		return [2]uint64{d[0], s[0]}
	case b == 0x6d:
		return [2]uint64{d[1], s[1]}
	case b == 0x63 || b == 0x67 || b == 0x6b:
		return [2]uint64{packHalf(b, d[0]) | packHalf(b, d[1])<<32, packHalf(b, s[0]) | packHalf(b, s[1])<<32}
	}
	if kind, w, ok := shiftOp(b); ok {
		return [2]uint64{shiftLanes(kind, w, d[0], s[0]), shiftLanes(kind, w, d[1], s[0])}
	}
	return [2]uint64{laneOp(b, d[0], s[0]), laneOp(b, d[1], s[1])}
}

// packedIntOp reports whether 0F b is a packed integer operation with an
// MMX form (no prefix) and an XMM form (66), both register or memory.
func packedIntOp(b uint8) bool {
	switch {
	case b >= 0x60 && b <= 0x6b, b >= 0x74 && b <= 0x76, b >= 0xd1 && b <= 0xd5, b >= 0xd8 && b <= 0xe5,
		b >= 0xe8 && b <= 0xef, b >= 0xf1 && b <= 0xf6, b >= 0xf8 && b <= 0xfe:
		return true
	}
	return false
}

// shuffleWords returns the four words of x selected by imm (pshufw).
func shuffleWords(x uint64, imm uint8) uint64 {
	var r uint64
	for i := uint(0); i < 4; i++ {
		r |= (x >> (16 * (imm >> (2 * i) & 3)) & 0xffff) << (16 * i)
	}
	return r
}

// shuffleDwords returns the four doublewords of x selected by imm (pshufd).
func shuffleDwords(x [2]uint64, imm uint8) [2]uint64 {
	var r [2]uint64
	for i := uint(0); i < 4; i++ {
		sel := imm >> (2 * i) & 3
		v := x[sel>>1] >> (32 * (sel & 1)) & 0xffffffff
		r[i>>1] |= v << (32 * (i & 1))
	}
	return r
}

// shiftBytes shifts the 128-bit x left (pslldq) or right (psrldq) by n bytes.
func shiftBytes(x [2]uint64, n uint64, left bool) [2]uint64 {
	if n > 15 {
		return [2]uint64{}
	}
	sh := uint(n * 8)
	if left {
		hi, lo := x[1]<<sh|x[0]>>(64-sh), x[0]<<sh
		if sh >= 64 {
			hi, lo = x[0]<<(sh-64), 0
		}
		return [2]uint64{lo, hi}
	}
	lo, hi := x[0]>>sh|x[1]<<(64-sh), x[1]>>sh
	if sh >= 64 {
		lo, hi = x[1]>>(sh-64), 0
	}
	return [2]uint64{lo, hi}
}
