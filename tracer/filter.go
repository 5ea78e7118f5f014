package tracer

import (
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
	if f.Src.IsValid() && !prefixContains(f.Src, t.Src) {
		return false
	}
	if f.Dst.IsValid() && !prefixContains(f.Dst, t.Dst) {
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

// kernel converts the filter to the struct the programs read.
func (f Filter) kernel() (bpfFilter, error) {
	if f.Snaplen < 0 || f.Snaplen > MaxSnaplen {
		return bpfFilter{}, fmt.Errorf("snaplen %d: want 0 to %d bytes", f.Snaplen, MaxSnaplen)
	}
	var k bpfFilter
	var sfam, dfam uint8
	var err error
	if k.Saddr, k.Smask, sfam, err = prefixWords(f.Src); err != nil {
		return k, err
	}
	if k.Daddr, k.Dmask, dfam, err = prefixWords(f.Dst); err != nil {
		return k, err
	}
	if sfam != 0 && dfam != 0 && sfam != dfam {
		return k, fmt.Errorf("source %s and destination %s are of different IP versions: no packet matches", f.Src, f.Dst)
	}
	k.Family = max(sfam, dfam)
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

// prefixContains is p.Contains(a), an IPv4-mapped prefix standing for the
// IPv4 prefix it names (as in the kernel's filter).
func prefixContains(p netip.Prefix, a netip.Addr) bool {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Contains(a.Unmap())
}
