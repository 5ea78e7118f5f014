package cluster

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/skbtrail/skbtrail/pkg/journey"
)

// Finding codes of the contract this package raises or replaces.
const (
	CodeLeftNode         = "LEFT_NODE"
	CodeNodeUnobserved   = "NODE_UNOBSERVED"
	CodeVXLANDstUnknown  = "VXLAN_DST_UNKNOWN"
	CodeVXLANSrcMismatch = "VXLAN_SRC_MISMATCH"
)

// Diagnose adds what only the cluster's view tells: VXLAN outer addresses
// compared with every node's addresses as the API knows them, and the
// nodes on the path whose daemon could not be asked.
func Diagnose(j *journey.Journey, p *Plan) {
	for _, e := range j.Encaps {
		if e.Node != p.Node {
			continue // only the source node encapsulates toward the endpoint's node
		}
		p.vxlanDst(j, e)
		p.vxlanSrc(j, e)
	}
	for _, n := range j.Nodes {
		if n.Observed {
			continue
		}
		j.Findings = append(j.Findings, journey.Finding{
			Code: CodeNodeUnobserved, Severity: journey.SeverityWarning, Node: n.Name,
			Message: fmt.Sprintf("node %s is on the path but its skbtrail daemon could not be asked: %s; what happened there is not in this journey", n.Name, n.Why),
			Advice:  fmt.Sprintf("check the skbtrail DaemonSet on %s (kubectl -n skbtrail get pods -o wide --field-selector spec.nodeName=%s), or run skbtrail trace on that node", n.Name, n.Name),
		})
	}
}

// replace puts f in place of the node-local finding with the same code
// (the cluster's view is the more exact one) or appends it.
func replace(j *journey.Journey, f journey.Finding) {
	for i := range j.Findings {
		if j.Findings[i].Code == f.Code {
			j.Findings[i] = f
			return
		}
	}
	j.Findings = append([]journey.Finding{f}, j.Findings...)
}

// innerDst is the destination the encapsulated packet was meant for.
func innerDst(j *journey.Journey, e journey.Encap) netip.Addr {
	for _, r := range j.Rewrites {
		if r.Node == e.Node {
			if a, err := netip.ParseAddr(r.After.Dst); err == nil {
				return a
			}
		}
	}
	a, _ := netip.ParseAddr(j.Packet.Dst)
	return a
}

// ownerOf names the node an inner address should be delivered on: an
// endpoint's node, else the node whose pod CIDR holds it.
func (p *Plan) ownerOf(dst netip.Addr) string {
	for _, ep := range p.Endpoints {
		if ep.IP == dst && ep.Node != "" {
			return ep.Node
		}
	}
	for name, n := range p.NodeObjects {
		for _, c := range append([]string{n.Spec.PodCIDR}, n.Spec.PodCIDRs...) {
			if pfx, err := netip.ParsePrefix(c); err == nil && pfx.Contains(dst) {
				return name
			}
		}
	}
	return ""
}

func (p *Plan) knownAs(node string) string {
	n := p.NodeObjects[node]
	if n == nil {
		return "no address the API knows"
	}
	var s []string
	for _, a := range NodeAddresses(n) {
		s = append(s, a.String())
	}
	if len(s) == 0 {
		return "no address the API knows"
	}
	return strings.Join(s, ", ")
}

func (p *Plan) vxlanDst(j *journey.Journey, e journey.Encap) {
	outer, err := netip.ParseAddr(e.OuterDst)
	if err != nil {
		return
	}
	dst := innerDst(j, e)
	owner, want := p.NodeAddrs[outer], p.ownerOf(dst)
	if owner != "" && (want == "" || owner == want) {
		return // the VTEP of the node that owns the destination
	}
	msg := fmt.Sprintf("%s encapsulated %s for %s toward %s, which is the address of no node the API knows", e.Node, strings.ToUpper(e.Kind), dst, outer)
	if owner != "" {
		msg = fmt.Sprintf("%s encapsulated %s for %s toward %s, the address of node %s", e.Node, strings.ToUpper(e.Kind), dst, outer, owner)
	}
	advice := fmt.Sprintf("check the VTEP address %s has for the destination's node (bridge fdb show dev %s; ip neigh show dev %s)", e.Node, e.Device, e.Device)
	if want != "" {
		msg += fmt.Sprintf("; %s is on node %s, known as %s", dst, want, p.knownAs(want))
		advice = fmt.Sprintf("node %s must be reached at one of %s: fix the address it announces (flannel: --public-ip / --iface on %s, annotation %s; Calico: the node's IPv4 address autodetection), then let %s relearn it (bridge fdb show dev %s)", want, p.knownAs(want), want, FlannelPublicIP, e.Node, e.Device)
	}
	replace(j, journey.Finding{Code: CodeVXLANDstUnknown, Severity: journey.SeverityError, Node: e.Node, Netns: e.Netns, Message: msg, Advice: advice})
}

func (p *Plan) vxlanSrc(j *journey.Journey, e journey.Encap) {
	src, err := netip.ParseAddr(e.OuterSrc)
	if err != nil || p.NodeObjects[e.Node] == nil {
		return
	}
	if slices.Contains(NodeAddresses(p.NodeObjects[e.Node]), src) {
		return
	}
	replace(j, journey.Finding{Code: CodeVXLANSrcMismatch, Severity: journey.SeverityError, Node: e.Node, Netns: e.Netns,
		Message: fmt.Sprintf("%s sends %s with outer source %s, but the cluster knows node %s as %s: peers send their answers and FDB entries to that address", e.Node, strings.ToUpper(e.Kind), src, e.Node, p.knownAs(e.Node)),
		Advice:  fmt.Sprintf("make %s's VTEP use the address the cluster knows (flannel: --public-ip / --iface, annotation %s; or set the VXLAN device's local address), or fix the node's InternalIP", e.Node, FlannelPublicIP),
	})
}
