package tracer

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// The kernel's tuples hold an address as four 32-bit words in network byte
// order: an IPv4 address in word 0 (the rest 0), an IPv6 address in all
// four. Family (4 or 6) says which.

// words returns a's kernel form as read on this host.
func words(a netip.Addr) [4]uint32 {
	var w [4]uint32
	if a.Is4() || a.Is4In6() {
		b := a.Unmap().As4()
		w[0] = binary.NativeEndian.Uint32(b[:])
		return w
	}
	b := a.As16()
	for i := range w {
		w[i] = binary.NativeEndian.Uint32(b[4*i:])
	}
	return w
}

// addrOf reads a kernel address of the given family (0: not parsed, read
// as IPv4 as it always was).
func addrOf(w [4]uint32, family uint8) netip.Addr {
	if family == uint8(bpfAddrFamilyFAMILY_IPV6) {
		var b [16]byte
		for i, x := range w {
			binary.NativeEndian.PutUint32(b[4*i:], x)
		}
		return netip.AddrFrom16(b)
	}
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], w[0])
	return netip.AddrFrom4(b)
}

// familyOf is the kernel's family number of an address.
func familyOf(a netip.Addr) uint8 {
	if a.Is4() || a.Is4In6() {
		return uint8(bpfAddrFamilyFAMILY_IPV4)
	}
	return uint8(bpfAddrFamilyFAMILY_IPV6)
}

// prefixWords is p (masked) and its mask in the kernel's form. An IPv4
// prefix written in IPv6 form (::ffff:10.0.0.0/104) is taken as the IPv4
// prefix it names.
func prefixWords(p netip.Prefix) (addr, mask [4]uint32, family uint8, err error) {
	if !p.IsValid() {
		return addr, mask, 0, nil
	}
	a, bits := p.Addr(), p.Bits()
	if a.Is4In6() {
		if bits < 96 {
			return addr, mask, 0, fmt.Errorf("%s: an IPv4-mapped prefix needs at least 96 bits", p)
		}
		a, bits = a.Unmap(), bits-96
	}
	family = familyOf(a)
	var m [16]byte
	for i := 0; i < bits; i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	if a.Is4() {
		mb := [4]byte(m[:4])
		mask[0] = binary.NativeEndian.Uint32(mb[:])
	} else {
		for i := range mask {
			mask[i] = binary.NativeEndian.Uint32(m[4*i:])
		}
	}
	aw := words(netip.PrefixFrom(a, bits).Masked().Addr())
	for i := range addr {
		addr[i] = aw[i] & mask[i]
	}
	return addr, mask, family, nil
}
