package diagnose

import (
	"fmt"
	"net/netip"

	"github.com/skbtrail/skbtrail/netnsutil"
	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/nodestate"
)

// VethPeers confirms in which namespace the far end of a veth is.
type VethPeers interface {
	// PeerIn reports whether the peer of the veth with this ifindex in
	// namespace netnsInode is in namespace peerInode.
	PeerIn(netnsInode uint32, ifindex int, peerInode uint32) (bool, error)
}

type kernelPeers struct{ reg *netnsutil.Registry }

func (k kernelPeers) PeerIn(ino uint32, ifindex int, peer uint32) (bool, error) {
	path, ok := k.reg.Path(netnsutil.Inode(ino))
	peerPath, pok := k.reg.Path(netnsutil.Inode(peer))
	if !ok || !pok {
		return false, fmt.Errorf("netns inode %d or %d is gone", ino, peer)
	}
	return nodestate.PeerIn(path, ifindex, peerPath)
}

// redirectedDelivery places a delivery the kernel gave no place for. The
// packet was received on a device of namespace X and then freed by a
// socket with neither device nor socket left to name a namespace, so the
// builder put the free in X. When the packet's destination is no address
// of X but of a namespace Y at the far end of one of X's veths, a tc
// program on the receiving device moved it into Y inside the receive path
// (bpf_redirect_peer, Cilium's way into pods), where no observer saw it:
// the verdict and the last hop move to Y, after a redirect hop.
func (d *Diagnoser) redirectedDelivery(j *journey.Journey) {
	st, evs := d.state, j.Events
	n := len(evs)
	if st == nil || j.Verdict.Kind != journey.Delivered || n < 2 {
		return
	}
	end, rx := evs[n-1], evs[n-2]
	if end.Kind != journey.KindConsume || !end.Inherited || rx.Kind != journey.KindRx || rx.Netns != end.Netns {
		return
	}
	x := st.Namespaces[rx.Netns]
	if x == nil || holds(x, rx.Pkt.Dst) {
		return // delivered where it was received
	}
	y, l, ok := d.vethNeighbourHolding(st, x, rx.Pkt.Dst)
	if !ok {
		return
	}
	j.Verdict.Netns, j.Verdict.Device, j.Verdict.NetnsInode, j.Verdict.Ifindex = y.Name, l.Name, y.Inode, uint32(l.Index)
	if j.Names != nil {
		j.Names[y.Inode] = y.Name
	}
	if h := len(j.Hops); h > 0 && j.Hops[h-1].Event == journey.KindConsume.String() {
		last := &j.Hops[h-1]
		last.Netns, last.Device = y.Name, l.Name
		redirect := journey.Hop{TUs: last.TUs, Netns: y.Name, Device: l.Name, Event: journey.HopRedirect, Node: last.Node}
		j.Hops = append(j.Hops[:h-1], redirect, *last)
	}
}

func holds(ns *nodestate.Netns, addr netip.Addr) bool {
	for i := range ns.Links {
		if holdsOn(&ns.Links[i], addr) {
			return true
		}
	}
	return false
}

// vethNeighbourHolding finds the one namespace that holds addr on a veth
// whose peer is in x, confirmed by the kernel's namespace ids when it can
// be asked (ifindexes repeat across namespaces).
func (d *Diagnoser) vethNeighbourHolding(st *nodestate.State, x *nodestate.Netns, addr netip.Addr) (*nodestate.Netns, *nodestate.Link, bool) {
	var found *nodestate.Netns
	var link *nodestate.Link
	for _, y := range st.Namespaces {
		if y == x {
			continue
		}
		for i := range y.Links {
			l := &y.Links[i]
			if l.Type != "veth" || !holdsOn(l, addr) {
				continue
			}
			v, ok := x.LinkByIndex(l.ParentIndex)
			if !ok || v.Type != "veth" || v.ParentIndex != l.Index {
				continue
			}
			if d.peers != nil {
				if ok, err := d.peers.PeerIn(x.Inode, v.Index, y.Inode); err != nil || !ok {
					continue
				}
			}
			if found != nil {
				return nil, nil, false // ambiguous: say nothing
			}
			found, link = y, l
		}
	}
	return found, link, found != nil
}

func holdsOn(l *nodestate.Link, addr netip.Addr) bool {
	for _, p := range l.Addrs {
		if p.Addr() == addr {
			return true
		}
	}
	return false
}
