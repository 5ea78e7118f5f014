package trace

import (
	"net/netip"

	"github.com/skbtrail/skbtrail/netnsutil"
	"github.com/skbtrail/skbtrail/pkg/nftrace"
)

// markMatch is what skbtrail's nftrace marking rule matches for a trace:
// the part of the filter that NAT leaves alone (protocol, source address
// and port, SYN), so the packet stays marked in every namespace it reaches
// after a DNAT. Without a source in the filter, the source netns's route
// toward the destination gives the source address; failing that the
// destination is matched (then the packet is not traced after a DNAT).
func markMatch(o Options) nftrace.Match {
	f := o.Filter
	m := nftrace.Match{Proto: f.Proto, SYNOnly: f.SYNOnly, Src: f.Src, Sport: f.Sport}
	if !m.Src.IsValid() && o.FromNetns != "" && f.Dst.IsValid() && f.Dst.IsSingleIP() {
		if src, ok := routeSource(o.FromNetns, f.Dst.Addr()); ok {
			m.Src = netip.PrefixFrom(src, src.BitLen())
		}
	}
	if !m.Src.IsValid() && m.Sport == 0 {
		m.Dst, m.Dport = f.Dst, f.Dport
	}
	for _, p := range []netip.Prefix{m.Src, m.Dst} {
		if p.IsValid() && p.Addr().Is6() && !p.Addr().Is4In6() {
			m.IPv6 = true
		}
	}
	return m
}

// routeSource is the address the namespace named ns sends from toward dst.
func routeSource(ns string, dst netip.Addr) (netip.Addr, bool) {
	path, _, err := netnsutil.ResolveName(ns)
	if err != nil {
		return netip.Addr{}, false
	}
	h, err := netnsutil.NewHandle(path)
	if err != nil {
		return netip.Addr{}, false
	}
	defer h.Close()
	routes, err := h.RouteGet(dst.AsSlice())
	if err != nil || len(routes) == 0 {
		return netip.Addr{}, false
	}
	src, ok := netip.AddrFromSlice(routes[0].Src)
	return src.Unmap(), ok && src.IsValid()
}
