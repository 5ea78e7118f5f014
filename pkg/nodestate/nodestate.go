// Package nodestate reads what the network namespaces of a node (or of
// several nodes sharing a kernel, as in kind clusters and labs) are
// configured to do: devices and MTUs, VXLAN devices and their FDB, addresses
// and routes. Diagnosis compares packets with it.
package nodestate

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/skbtrail/skbtrail/netnsutil"
)

// Link is one network device.
type Link struct {
	Index int
	Name  string
	Type  string // netlink's kind: "veth", "bridge", "vxlan", "tuntap", "device" (no kind: a NIC or lo), ...
	MTU   int
	MAC   string
	// Master is the ifindex of the bridge (or bond) it is enslaved to.
	Master int
	// ParentIndex is IFLA_LINK: for a veth its peer's ifindex (in the
	// peer's namespace), for a VLAN its lower device.
	ParentIndex int
	Loopback    bool
	Addrs       []netip.Prefix
	VXLAN       *VXLAN
}

// VXLAN is a VXLAN device's configuration and forwarding database.
type VXLAN struct {
	VNI      int
	Port     int
	Local    netip.Addr // the outer source when set
	Underlay int        // ifindex of the underlay device (0: any)
	Learning bool
	FDB      []FDBEntry
}

// FDBEntry maps an inner MAC to a remote VTEP address.
type FDBEntry struct {
	MAC string
	Dst netip.Addr
}

// Route is one route of the main table (IPv4 or IPv6).
type Route struct {
	Dst     netip.Prefix // 0.0.0.0/0 for the default route
	Gw      netip.Addr
	Dev     string
	PrefSrc netip.Addr
}

// Netns is one namespace's state.
type Netns struct {
	Inode  uint32
	Name   string
	Links  []Link
	Routes []Route
}

// State is the state of every namespace that was read.
type State struct {
	Namespaces map[uint32]*Netns
}

// Read reads every namespace of the registry; namespaces that cannot be
// read are skipped and reported in the error.
func Read(reg *netnsutil.Registry) (*State, error) {
	s := &State{Namespaces: map[uint32]*Netns{}}
	var errs []error
	var mu sync.Mutex
	var wg sync.WaitGroup
	work := make(chan netnsutil.Entry)
	for range readWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range work {
				n, err := ReadNetns(e.Path)
				mu.Lock()
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", e.Name, err))
				} else {
					n.Inode, n.Name = uint32(e.Inode), e.Name
					s.Namespaces[n.Inode] = n
				}
				mu.Unlock()
			}
		}()
	}
	for _, e := range reg.All() {
		work <- e
	}
	close(work)
	wg.Wait()
	if len(errs) > 0 {
		sort.Slice(errs, func(i, k int) bool { return errs[i].Error() < errs[k].Error() })
		return s, fmt.Errorf("read node state: %v", errs)
	}
	return s, nil
}

// readWorkers bounds the namespaces read at once (a dense node has
// hundreds; more workers than a few cores only contend).
const readWorkers = 4

func prefixOf(ipn *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(ipn.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := ipn.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

// ReadNetns reads one namespace through a netlink handle (no thread switch).
func ReadNetns(path string) (*Netns, error) {
	h, err := netnsutil.NewHandle(path, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	// one dump per IP version for every device: IPv4 first (a device's
	// first address is its main one), then IPv6 without link-local ones
	addrs := map[int][]netip.Prefix{}
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		all, err := h.AddrList(nil, family)
		if err != nil {
			continue
		}
		for _, ad := range all {
			if p, ok := prefixOf(ad.IPNet); ok && !p.Addr().IsLinkLocalUnicast() {
				addrs[ad.LinkIndex] = append(addrs[ad.LinkIndex], p)
			}
		}
	}
	n := &Netns{}
	names := map[int]string{}
	for _, l := range links {
		a := l.Attrs()
		names[a.Index] = a.Name
		lk := Link{Index: a.Index, Name: a.Name, Type: l.Type(), MTU: a.MTU, Master: a.MasterIndex,
			ParentIndex: a.ParentIndex, Loopback: a.Flags&net.FlagLoopback != 0}
		if a.HardwareAddr != nil {
			lk.MAC = a.HardwareAddr.String()
		}
		lk.Addrs = addrs[a.Index]
		if vx, ok := l.(*netlink.Vxlan); ok {
			v := &VXLAN{VNI: vx.VxlanId, Port: vx.Port, Underlay: vx.VtepDevIndex, Learning: vx.Learning}
			if vx.SrcAddr != nil {
				v.Local = addrOf(vx.SrcAddr)
			}
			neighs, err := h.NeighList(a.Index, unix.AF_BRIDGE)
			if err == nil {
				for _, ne := range neighs {
					if ne.IP == nil || ne.HardwareAddr == nil {
						continue
					}
					v.FDB = append(v.FDB, FDBEntry{MAC: ne.HardwareAddr.String(), Dst: addrOf(ne.IP)})
				}
			}
			lk.VXLAN = v
		}
		n.Links = append(n.Links, lk)
	}
	routes, err := h.RouteList(nil, unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	routes6, err := h.RouteList(nil, unix.AF_INET6)
	if err != nil {
		return nil, fmt.Errorf("list IPv6 routes: %w", err)
	}
	for _, r := range append(routes, routes6...) {
		def := netip.MustParsePrefix("0.0.0.0/0")
		if r.Family == unix.AF_INET6 {
			def = netip.MustParsePrefix("::/0")
		}
		rt := Route{Dst: def, Dev: names[r.LinkIndex]}
		if r.Dst != nil {
			p, ok := prefixOf(r.Dst)
			if ok && r.Family == unix.AF_INET6 && (p.Addr().IsLinkLocalUnicast() || p.Addr().IsMulticast()) {
				continue // every IPv6 device's fe80::/64: no path to anywhere
			}
			if ok {
				rt.Dst = p
			}
		}
		if r.Gw != nil {
			rt.Gw = addrOf(r.Gw)
		}
		if r.Src != nil {
			rt.PrefSrc = addrOf(r.Src)
		}
		n.Routes = append(n.Routes, rt)
	}
	sort.Slice(n.Links, func(i, k int) bool { return n.Links[i].Index < n.Links[k].Index })
	return n, nil
}

// Link returns the named device.
func (n *Netns) Link(name string) (*Link, bool) {
	for i := range n.Links {
		if n.Links[i].Name == name {
			return &n.Links[i], true
		}
	}
	return nil, false
}

// LinkByIndex returns the device with this ifindex.
func (n *Netns) LinkByIndex(index int) (*Link, bool) {
	for i := range n.Links {
		if n.Links[i].Index == index {
			return &n.Links[i], true
		}
	}
	return nil, false
}

// RouteTo returns the longest-prefix route of the main table for dst.
func (n *Netns) RouteTo(dst netip.Addr) (Route, bool) { return n.route(dst, "") }

// RouteThrough returns the longest-prefix route for dst among the routes
// through dev: what a socket or tunnel bound to dev uses.
func (n *Netns) RouteThrough(dst netip.Addr, dev string) (Route, bool) { return n.route(dst, dev) }

func (n *Netns) route(dst netip.Addr, dev string) (Route, bool) {
	best, found := Route{}, false
	for _, r := range n.Routes {
		if (dev == "" || r.Dev == dev) && r.Dst.Contains(dst) && (!found || r.Dst.Bits() > best.Dst.Bits()) {
			best, found = r, true
		}
	}
	return best, found
}

// VethPeer returns the namespace that holds the peer of veth l (which
// lives in namespace of): a veth there whose index is l's ParentIndex and
// whose own ParentIndex is l's index. False when no namespace that was read
// holds it: the far end is out of sight.
func (s *State) VethPeer(of *Netns, l *Link) (*Netns, *Link, bool) {
	if l.Type != "veth" || l.ParentIndex == 0 {
		return nil, nil, false
	}
	for _, ns := range s.sorted() {
		p, ok := ns.LinkByIndex(l.ParentIndex)
		if !ok || p.Type != "veth" || p.ParentIndex != l.Index || (ns == of && p == l) {
			continue
		}
		return ns, p, true
	}
	return nil, nil, false
}

// VTEP is a VXLAN endpoint some namespace owns.
type VTEP struct {
	Netns  *Netns
	Device *Link
	Addr   netip.Addr // the local address (or the underlay's first address)
}

// VTEPs lists every VXLAN device with its local address.
func (s *State) VTEPs() []VTEP {
	var out []VTEP
	for _, ns := range s.sorted() {
		for i := range ns.Links {
			l := &ns.Links[i]
			if l.VXLAN == nil {
				continue
			}
			addr := l.VXLAN.Local
			if !addr.IsValid() && l.VXLAN.Underlay != 0 {
				for _, u := range ns.Links {
					if u.Index == l.VXLAN.Underlay && len(u.Addrs) > 0 {
						addr = u.Addrs[0].Addr()
					}
				}
			}
			out = append(out, VTEP{Netns: ns, Device: l, Addr: addr})
		}
	}
	return out
}

// KnownAs returns the addresses other namespaces' FDBs use for the VXLAN
// device with this MAC (how the peers know that VTEP).
func (s *State) KnownAs(mac string, except uint32) map[netip.Addr][]string {
	out := map[netip.Addr][]string{}
	for _, ns := range s.sorted() {
		if ns.Inode == except {
			continue
		}
		for _, l := range ns.Links {
			if l.VXLAN == nil {
				continue
			}
			for _, f := range l.VXLAN.FDB {
				if f.MAC == mac {
					out[f.Dst] = append(out[f.Dst], ns.Name)
				}
			}
		}
	}
	return out
}

// OwnerOf returns the namespace and device that hold addr.
func (s *State) OwnerOf(addr netip.Addr) (*Netns, *Link, bool) {
	for _, ns := range s.sorted() {
		for i := range ns.Links {
			for _, p := range ns.Links[i].Addrs {
				if p.Addr() == addr {
					return ns, &ns.Links[i], true
				}
			}
		}
	}
	return nil, nil, false
}

// PodCIDROf finds the bridge subnet (a node's pod CIDR) containing addr.
func (s *State) PodCIDROf(addr netip.Addr) (*Netns, netip.Prefix, bool) {
	for _, ns := range s.sorted() {
		for _, l := range ns.Links {
			if l.Type != "bridge" {
				continue
			}
			for _, p := range l.Addrs {
				if p.Masked().Contains(addr) {
					return ns, p.Masked(), true
				}
			}
		}
	}
	return nil, netip.Prefix{}, false
}

func (s *State) sorted() []*Netns {
	out := make([]*Netns, 0, len(s.Namespaces))
	for _, n := range s.Namespaces {
		out = append(out, n)
	}
	sort.Slice(out, func(i, k int) bool { return out[i].Name < out[k].Name })
	return out
}

// PeerIn reports whether the far end of the veth with this ifindex in the
// namespace at nsPath is in the namespace at peerPath: the id nsPath's
// namespace gives peerPath's (RTM_GETNSID) is the veth's link-netnsid. It
// tells namespaces apart that ifindexes alone cannot (every pod's eth0 is
// ifindex 2).
func PeerIn(nsPath string, ifindex int, peerPath string) (bool, error) {
	h, err := netnsutil.NewHandle(nsPath)
	if err != nil {
		return false, err
	}
	defer h.Close()
	l, err := h.LinkByIndex(ifindex)
	if err != nil {
		return false, fmt.Errorf("device ifindex %d in %s: %w", ifindex, nsPath, err)
	}
	if l.Type() != "veth" || l.Attrs().NetNsID < 0 {
		return false, nil // no peer in another namespace
	}
	f, err := os.Open(peerPath)
	if err != nil {
		return false, fmt.Errorf("open netns %s: %w", peerPath, err)
	}
	defer f.Close()
	id, err := h.GetNetNsIdByFd(int(f.Fd()))
	if err != nil {
		return false, fmt.Errorf("netns id of %s in %s: %w", peerPath, nsPath, err)
	}
	return id >= 0 && id == l.Attrs().NetNsID, nil
}
