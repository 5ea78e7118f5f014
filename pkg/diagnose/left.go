package diagnose

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/nodestate"
)

// exitKinds are the device types whose far end is outside the node: what
// they transmit is gone from this node's sight (a NIC's driver frees the
// skb once it is on the wire, a tun/tap hands it to a process).
var exitKinds = map[string]string{
	"tuntap":    "a tun/tap device",
	"device":    "a physical NIC",
	"bond":      "a bond",
	"vlan":      "a VLAN device",
	"wireguard": "a WireGuard tunnel",
}

// exitDevice says whether a transmission on l (in ns) hands the packet to
// something this node cannot see, and what l is.
func exitDevice(st *nodestate.State, ns *nodestate.Netns, l *nodestate.Link) (string, bool) {
	if l.Loopback {
		return "", false
	}
	if l.Type == "veth" {
		if _, _, seen := st.VethPeer(ns, l); seen || l.ParentIndex == 0 {
			return "", false // its far end is observed, or unknown
		}
		return fmt.Sprintf("a veth whose peer (ifindex %d) is in no namespace this skbtrail observes", l.ParentIndex), true
	}
	what, ok := exitKinds[l.Type]
	return what, ok
}

// lastObservedTx is the last transmission of the packet in a namespace the
// node state covers, provided nothing after it shows the packet again in
// such a namespace (a consume where it was is the driver or the tun reader
// freeing it).
func lastObservedTx(st *nodestate.State, evs []journey.Event) (journey.Event, bool) {
	for i := len(evs) - 1; i >= 0; i-- {
		e := evs[i]
		if st.Namespaces[e.Netns] == nil || e.Kind == journey.KindConsume {
			continue // out of sight, or the free at the end
		}
		return e, e.Kind == journey.KindTx
	}
	return journey.Event{}, false
}

// leftNode: the packet's last observed transmission handed it to a device
// whose far end this node cannot see, and it was never seen again here: it
// left the node (verdict left), it was not delivered, and no "no reply"
// may claim it was.
func (d *Diagnoser) leftNode(j *journey.Journey) {
	st := d.state
	if st == nil || (j.Verdict.Kind != journey.Lost && j.Verdict.Kind != journey.Delivered) {
		return
	}
	tx, ok := lastObservedTx(st, j.Events)
	if !ok {
		return
	}
	ns := st.Namespaces[tx.Netns]
	dev, ok := ns.LinkByIndex(int(tx.Ifindex))
	if !ok || (tx.Ifname != "" && dev.Name != tx.Ifname) {
		if dev, ok = ns.Link(tx.Ifname); !ok {
			return // created after the state was read: cannot tell
		}
	}
	what, exit := exitDevice(st, ns, dev)
	if !exit {
		return
	}
	j.Verdict = journey.Verdict{Kind: journey.Left, Netns: ns.Name, Device: dev.Name, Node: j.Verdict.Node,
		NetnsInode: tx.Netns, Ifindex: uint32(dev.Index)}
	toward, towardWhat := tx.Pkt.Dst, "its destination"
	if tx.Encap {
		toward, towardWhat = tx.Outer.Dst, "the VXLAN outer destination"
	}
	msg := fmt.Sprintf("%s left the node: %s sent it through %s (%s) toward %s (%s%s)%s",
		flowText(journey.PacketOf(tx.Pkt)), ns.Name, dev.Name, what, toward, towardWhat, nextHop(ns, toward, dev.Name), d.ownerText(toward))
	msg += "; this node cannot see what happens after " + dev.Name
	switch {
	case j.ReplyCameBack():
		msg += "; the reply came back"
	case j.Reply != nil:
		msg += fmt.Sprintf("; the reply was %s in %s", j.Reply.Verdict, j.Reply.Netns)
	default:
		msg += "; no reply came back before the trace ended"
	}
	d.add(j, journey.Finding{Code: CodeLeftNode, Severity: journey.SeverityInfo, Netns: ns.Name,
		Message: msg, Advice: d.leftAdvice(j, tx, toward)})
}

// nextHop describes the route toward addr through dev (a socket or
// tunnel bound to dev skips the other routes), else the table's route for
// addr.
func nextHop(ns *nodestate.Netns, addr netip.Addr, dev string) string {
	r, ok := ns.RouteThrough(addr, dev)
	if !ok {
		if r, ok = ns.RouteTo(addr); !ok {
			return ""
		}
	}
	route := r.Dst.String()
	if r.Dst.Bits() == 0 {
		route = "default"
	}
	if r.Gw.IsValid() {
		return fmt.Sprintf(", next hop %s: route %s via %s dev %s", r.Gw, route, r.Gw, r.Dev)
	}
	return fmt.Sprintf(", no gateway: route %s dev %s", route, r.Dev)
}

// ownerOf names the node that owns addr: from the cluster's node
// addresses when known, else a namespace of this kernel that holds it
// (several "nodes" sharing a kernel, as in kind and labs).
func (d *Diagnoser) ownerOf(addr netip.Addr) (node, netns string) {
	if n, ok := d.cfg.NodeAddrs[addr]; ok {
		return n, ""
	}
	if d.state != nil {
		if ns, _, ok := d.state.OwnerOf(addr); ok {
			return "", ns.Name
		}
	}
	return "", ""
}

func (d *Diagnoser) ownerText(addr netip.Addr) string {
	switch node, netns := d.ownerOf(addr); {
	case node != "":
		return ", which node " + node + " owns"
	case netns != "":
		return ", an address of namespace " + netns
	}
	return ""
}

// leftAdvice says how to see the rest of the path: the cluster-wide trace,
// or a trace on the node the packet went to, filtered on the packet as
// that node will see it (after this node's NAT, inside any tunnel).
func (d *Diagnoser) leftAdvice(j *journey.Journey, tx journey.Event, toward netip.Addr) string {
	p := tx.Pkt
	args := []string{"--src", p.Src.String(), "--dst", p.Dst.String()}
	if name := journey.ProtoName(p.Proto); name != "other" {
		args = append(args, "--proto", name)
	}
	if p.Dport != 0 {
		args = append(args, "--dport", fmt.Sprint(p.Dport))
	}
	where := "the host that owns " + toward.String()
	switch node, netns := d.ownerOf(toward); {
	case node != "":
		where = "node " + node
	case netns != "":
		where += " (namespace " + netns + " here)"
	}
	target := j.Packet.Dst
	if j.Packet.Dport != 0 {
		target += fmt.Sprintf(":%d", j.Packet.Dport)
	}
	return fmt.Sprintf("see the rest of the path with `kubectl skbtrail trace <pod> --to %s --proto %s`, or run `skbtrail trace %s` on %s",
		target, j.Packet.Proto, strings.Join(args, " "), where)
}
