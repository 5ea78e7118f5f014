// Package picture draws a journey for people who would rather look than
// read: the namespaces it crossed in order, the devices in each, the NAT
// and encapsulation steps, and where it ended. The same picture renders as
// a few lines of text (in the report) and as SVG (trace --svg, show --svg).
// It is built from the journey's JSON form only, so saved journeys draw
// the same.
package picture

import (
	"fmt"
	"strings"

	"github.com/skbtrail/skbtrail/pkg/journey"
)

// Picture is a journey as boxes: one per stay in a network namespace.
type Picture struct {
	Title    string // the packet
	Verdict  string // the one-line end ("dropped: NETFILTER_DROP ...")
	Kind     string // verdict kind
	Segments []Segment
	Reply    string // the reply's fate, when one was seen
}

// Segment is one stay of the packet in one network namespace.
type Segment struct {
	Node    string
	Netns   string
	Pod     string
	Devices []string // in the order the packet met them
	Notes   []string // NAT and encapsulation done here
	// End is set on the segment where the journey ended.
	End string
	Bad bool // End is a failure (dropped, rejected, lost, left without reply)
}

// Label names a segment's place: "node/netns (pod)".
func (s Segment) Label() string {
	l := s.Netns
	if s.Node != "" {
		l = s.Node + "/" + l
	}
	if s.Pod != "" {
		l += " (pod " + s.Pod + ")"
	}
	return l
}

func endpoint(addr string, port uint16) string { return journey.HostPort(addr, port) }

// Build turns a journey into its picture.
func Build(j *journey.Journey) Picture {
	p := j.Packet
	pic := Picture{
		Title: strings.TrimSpace(fmt.Sprintf("%s %s %s -> %s", p.Proto, p.TCPFlags, endpoint(p.Src, p.Sport), endpoint(p.Dst, p.Dport))),
		Kind:  j.Verdict.Kind,
	}
	for _, h := range j.Hops {
		n := len(pic.Segments)
		if n == 0 || pic.Segments[n-1].Netns != h.Netns || pic.Segments[n-1].Node != h.Node {
			pic.Segments = append(pic.Segments, Segment{Node: h.Node, Netns: h.Netns})
			n++
		}
		s := &pic.Segments[n-1]
		if h.Pod != "" {
			s.Pod = h.Pod
		}
		if h.Device != "" && (len(s.Devices) == 0 || s.Devices[len(s.Devices)-1] != h.Device) {
			s.Devices = append(s.Devices, h.Device)
		}
	}
	for _, r := range j.Rewrites {
		note := fmt.Sprintf("%s %s -> %s", r.Kind, endpoint(r.Before.Dst, r.Before.Dport), endpoint(r.After.Dst, r.After.Dport))
		if r.Kind == "SNAT" {
			note = fmt.Sprintf("SNAT %s -> %s", endpoint(r.Before.Src, r.Before.Sport), endpoint(r.After.Src, r.After.Sport))
		}
		if r.Hook != "" {
			note += " at " + r.Hook
		}
		pic.note(r.Node, r.Netns, note)
	}
	for _, e := range j.Encaps {
		note := fmt.Sprintf("%s vni %d: outer %s -> %s", strings.ToUpper(e.Kind), e.VNI, e.OuterSrc, e.OuterDst)
		if e.Device != "" {
			note = e.Device + " " + note
		}
		pic.note(e.Node, e.Netns, note)
	}
	pic.Verdict = verdictLine(j)
	if len(pic.Segments) == 0 {
		pic.Segments = []Segment{{Node: j.Verdict.Node, Netns: j.Verdict.Netns}}
	}
	end := len(pic.Segments) - 1
	// the verdict's namespace, searched from the end (a packet can pass a
	// namespace twice)
	for i := len(pic.Segments) - 1; i >= 0; i-- {
		if j.Verdict.Netns != "" && pic.Segments[i].Netns == j.Verdict.Netns && pic.Segments[i].Node == j.Verdict.Node {
			end = i
			break
		}
	}
	pic.Segments[end].End = pic.Verdict
	pic.Segments[end].Bad = j.Failed()
	if r := j.Reply; r != nil {
		pic.Reply = fmt.Sprintf("reply %s", r.Verdict)
		if r.Packet.TCPFlags != "" {
			pic.Reply = fmt.Sprintf("reply %s %s", r.Packet.TCPFlags, r.Verdict)
		}
	}
	return pic
}

// note adds a note to the first segment in (node, netns).
func (p *Picture) note(node, netns, note string) {
	for i := range p.Segments {
		if p.Segments[i].Netns == netns && p.Segments[i].Node == node {
			p.Segments[i].Notes = append(p.Segments[i].Notes, note)
			return
		}
	}
}

func verdictLine(j *journey.Journey) string {
	v := j.Verdict
	s := v.Kind
	if v.Device != "" {
		s += " at " + v.Device
	}
	if v.Reason != "" {
		s += ": " + v.Reason
	}
	var nf []string
	for _, x := range []string{v.Hook, v.Table + "/" + v.Chain, v.Rule} {
		if x != "" && x != "/" {
			nf = append(nf, x)
		}
	}
	if len(nf) > 0 {
		s += " (" + strings.Join(nf, " ") + ")"
	}
	for _, f := range j.Findings {
		if f.Severity == journey.SeverityError {
			s += " [" + f.Code + "]"
			break
		}
	}
	return s
}

// Text renders the picture as indented lines, each ending with a newline.
func (p Picture) Text(indent string) string {
	var b strings.Builder
	width := 0
	for _, s := range p.Segments {
		width = max(width, len(s.Label()))
	}
	for i, s := range p.Segments {
		if i > 0 {
			fmt.Fprintf(&b, "%s  |\n", indent)
		}
		line := fmt.Sprintf("%s[%-*s]  %s", indent, width, s.Label(), strings.Join(s.Devices, " > "))
		if len(s.Notes) > 0 {
			line += "   " + strings.Join(s.Notes, "; ")
		}
		if s.End != "" {
			mark := "=="
			if s.Bad {
				mark = "XX"
			}
			line += "   " + mark + " " + s.End
		}
		b.WriteString(strings.TrimRight(line, " ") + "\n")
	}
	if p.Reply != "" {
		fmt.Fprintf(&b, "%s  (%s)\n", indent, p.Reply)
	}
	return b.String()
}
