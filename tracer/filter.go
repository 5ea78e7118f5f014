package tracer

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/skbtrail/skbtrail/pkg/journey"
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
	// Snaplen > 0 asks for the first Snaplen bytes of the packet at every
	// event of a tracked skb (at most MaxSnaplen). It is not part of the
	// match: while any active filter asks, every tracked skb's events
	// carry bytes.
	Snaplen int
}

// MaxSnaplen is the most packet bytes an event can carry.
const MaxSnaplen = len(bpfEventCap{}.Data)

// Settings apply to all programs.
type Settings struct {
	// TunnelPorts are the UDP ports parsed as VXLAN (nil: DefaultTunnelPorts).
	TunnelPorts []uint16
	// DropMonitor reports every drop whose reason is not ignored, tracked
	// or not.
	DropMonitor bool
}

// Match reports whether a packet (as first seen, in netns) matches the
// filter: the same test the kernel makes, for telling concurrent traces'
// journeys apart.
func (f Filter) Match(t journey.Tuple, netns uint32) bool {
	if f.Netns != 0 && f.Netns != netns {
		return false
	}
	if f.Proto != 0 && f.Proto != t.Proto {
		return false
	}
	if f.Src.IsValid() && !f.Src.Contains(t.Src) {
		return false
	}
	if f.Dst.IsValid() && !f.Dst.Contains(t.Dst) {
		return false
	}
	if (f.Sport != 0 && f.Sport != t.Sport) || (f.Dport != 0 && f.Dport != t.Dport) {
		return false
	}
	if f.SYNOnly && (t.Proto != journey.ProtoTCP || t.TCPFlags&0x12 != 0x02) {
		return false
	}
	return true
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
	if f.Snaplen < 0 || f.Snaplen > MaxSnaplen {
		return bpfFilter{}, fmt.Errorf("snaplen %d: want 0 to %d bytes", f.Snaplen, MaxSnaplen)
	}
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
	k.Enabled = 1
	return k, nil
}

func (s Settings) kernel(active uint32) (bpfSettings, error) {
	k := bpfSettings{ActiveFilters: active}
	if s.DropMonitor {
		k.DropMonitor = 1
	}
	ports := s.TunnelPorts
	if ports == nil {
		ports = DefaultTunnelPorts
	}
	if len(ports) > len(k.TunnelPorts) {
		return k, fmt.Errorf("at most %d tunnel ports, got %d", len(k.TunnelPorts), len(ports))
	}
	copy(k.TunnelPorts[:], ports)
	return k, nil
}
