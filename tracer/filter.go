package tracer

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// DefaultTunnelPorts are the UDP ports parsed as VXLAN: flannel (8472) and
// the IANA port used by Calico and Cilium (4789).
var DefaultTunnelPorts = []uint16{8472, 4789}

// Filter selects the packets that start a journey. Zero fields match anything.
type Filter struct {
	Src, Dst     netip.Prefix
	Sport, Dport uint16
	Proto        uint8
	SYNOnly      bool
	Netns        uint32 // netns inode where the packet must first appear
	TunnelPorts  []uint16
	// Enabled: packets matching the filter start journeys. When false only
	// the drop monitor (if on) reports.
	Enabled bool
	// DropMonitor: report every drop whose reason is not ignored.
	DropMonitor bool
}

// be32 returns the IPv4 address as the kernel's __be32 read on this host.
func be32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

func maskBE(bits int) uint32 {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], ^uint32(0)<<(32-bits))
	if bits == 0 {
		return 0
	}
	return binary.NativeEndian.Uint32(b[:])
}

func prefixBE(p netip.Prefix) (addr, mask uint32, err error) {
	if !p.IsValid() {
		return 0, 0, nil
	}
	if !p.Addr().Is4() {
		return 0, 0, fmt.Errorf("%s: only IPv4 is traced", p)
	}
	m := maskBE(p.Bits())
	return be32(p.Masked().Addr()) & m, m, nil
}

// kernel converts the filter to the struct the programs read.
func (f Filter) kernel() (bpfFilter, error) {
	var k bpfFilter
	var err error
	if k.Saddr, k.Smask, err = prefixBE(f.Src); err != nil {
		return k, err
	}
	if k.Daddr, k.Dmask, err = prefixBE(f.Dst); err != nil {
		return k, err
	}
	k.Sport, k.Dport, k.Proto, k.Netns = f.Sport, f.Dport, f.Proto, f.Netns
	if f.SYNOnly {
		k.SynOnly = 1
	}
	if f.Enabled {
		k.Enabled = 1
	}
	if f.DropMonitor {
		k.DropMonitor = 1
	}
	ports := f.TunnelPorts
	if ports == nil {
		ports = DefaultTunnelPorts
	}
	if len(ports) > len(k.TunnelPorts) {
		return k, fmt.Errorf("at most %d tunnel ports, got %d", len(k.TunnelPorts), len(ports))
	}
	copy(k.TunnelPorts[:], ports)
	return k, nil
}
