package cluster

import (
	"github.com/skbtrail/skbtrail/pkg/journey"
)

// Part is one node's journey of the traced packet, as its daemon sent it.
type Part struct {
	Node    string
	Journey *journey.Journey
	Start   int64 // wall-clock time of its first hop, Unix ns (0: unknown)
}

// ExitTuple is the packet as it left a node's part: the tuple after the
// part's last address rewrite.
func ExitTuple(j *journey.Journey) journey.TupleJSON {
	if n := len(j.Rewrites); n > 0 {
		return j.Rewrites[n-1].After
	}
	p := j.Packet
	return journey.TupleJSON{Src: p.Src, Sport: p.Sport, Dst: p.Dst, Dport: p.Dport}
}

// Continues reports whether next's journey is the continuation of prev's on
// another node: the same inner packet (after prev's NAT) and, when both saw
// it encapsulated, the same outer addresses and VNI.
func Continues(prev, next *journey.Journey) bool {
	t, p := ExitTuple(prev), next.Packet
	if p.Proto != prev.Packet.Proto || p.Src != t.Src || p.Dst != t.Dst || p.Sport != t.Sport || p.Dport != t.Dport {
		return false
	}
	if len(prev.Encaps) == 0 || len(next.Encaps) == 0 {
		return true
	}
	a, b := prev.Encaps[len(prev.Encaps)-1], next.Encaps[0]
	return a.VNI == b.VNI && a.OuterSrc == b.OuterSrc && a.OuterDst == b.OuterDst
}

// label sets the node of every part of a journey that has a place.
func label(j *journey.Journey, node string) {
	j.Verdict.Node = node
	for i := range j.Hops {
		j.Hops[i].Node = node
	}
	for i := range j.Rewrites {
		j.Rewrites[i].Node = node
	}
	for i := range j.Encaps {
		j.Encaps[i].Node = node
	}
	for i := range j.Findings {
		j.Findings[i].Node = node
	}
}

// Stitch joins the source node's part with the part, among next, that
// continues it, into one journey (on the source's time line). It returns
// the part it used (nil: none continues it). Both parts' journeys are
// taken over.
func Stitch(src *Part, next []*Part) (*journey.Journey, *Part) {
	j := src.Journey
	label(j, src.Node)
	var m *Part
	for _, p := range next {
		if p.Journey != nil && Continues(j, p.Journey) {
			m = p
			break
		}
	}
	if m == nil {
		return j, nil
	}
	n := m.Journey
	label(n, m.Node)
	var last uint64
	if len(j.Hops) > 0 {
		last = j.Hops[len(j.Hops)-1].TUs
	}
	// the other node's clock may be off: its part cannot start before the
	// packet left this one
	offset := last
	if src.Start != 0 && m.Start != 0 && m.Start > src.Start {
		offset = max(offset, uint64(m.Start-src.Start)/1000)
	}
	for _, h := range n.Hops {
		h.TUs += offset
		j.Hops = append(j.Hops, h)
	}
	j.Rewrites = append(j.Rewrites, n.Rewrites...)
	for _, e := range n.Encaps {
		if !sameOuter(j.Encaps, e) { // the decapsulation of what the source encapsulated
			j.Encaps = append(j.Encaps, e)
		}
	}
	j.Verdict = n.Verdict
	kept := j.Findings[:0]
	for _, f := range j.Findings {
		if f.Code != CodeLeftNode {
			kept = append(kept, f)
		}
	}
	j.Findings = kept
	for _, f := range n.Findings {
		j.AddFinding(f)
	}
	if j.Reply == nil {
		j.Reply = n.Reply
	}
	j.LostEvents += n.LostEvents
	return j, m
}

func sameOuter(list []journey.Encap, e journey.Encap) bool {
	for _, x := range list {
		if x.VNI == e.VNI && x.OuterSrc == e.OuterSrc && x.OuterDst == e.OuterDst {
			return true
		}
	}
	return false
}
