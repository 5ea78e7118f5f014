// Package output renders journeys for people (text) and for programs
// (NDJSON, one contract object per line).
package output

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/picture"
)

// Writer renders journeys to one stream.
type Writer interface {
	Write(j *journey.Journey) error
}

// NDJSON writes one JSON object per line.
type NDJSON struct{ enc *json.Encoder }

// NewNDJSON returns a writer of the contract's JSON lines.
func NewNDJSON(w io.Writer) *NDJSON {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return &NDJSON{enc: enc}
}

// Write encodes the journey on one line.
func (n *NDJSON) Write(j *journey.Journey) error {
	j.Normalize()
	if err := n.enc.Encode(j); err != nil {
		return fmt.Errorf("write journey JSON: %w", err)
	}
	return nil
}

// Text writes journeys for a person.
type Text struct{ w io.Writer }

// NewText returns a human-readable writer.
func NewText(w io.Writer) *Text { return &Text{w: w} }

func endpoint(addr string, port uint16) string { return journey.HostPort(addr, port) }

func flow(t journey.TupleJSON) string {
	return endpoint(t.Src, t.Sport) + " -> " + endpoint(t.Dst, t.Dport)
}

// place names a namespace, with its node in cluster mode ("node-a/cni0 netns").
func place(node, netns string) string {
	if node == "" {
		return netns
	}
	return node + "/" + netns
}

// Summary is the one-line verdict of a journey.
func Summary(j *journey.Journey) string {
	v := j.Verdict
	var b strings.Builder
	b.WriteString(strings.ToUpper(v.Kind))
	if v.Node != "" {
		b.WriteString(" on node " + v.Node)
	}
	if v.Netns != "" {
		b.WriteString(" in " + v.Netns)
	}
	if v.Device != "" {
		b.WriteString(" at " + v.Device)
	}
	if v.Reason != "" {
		b.WriteString(": " + v.Reason)
	}
	if v.Kind == journey.Left {
		to, encap := j.Toward()
		b.WriteString(" toward " + to)
		if encap != "" {
			b.WriteString(" (" + strings.ToUpper(encap) + " outer destination)")
		}
	}
	var nf []string
	for _, s := range []string{v.Table, v.Chain, v.Hook} {
		if s != "" && (len(nf) == 0 || nf[len(nf)-1] != s) {
			nf = append(nf, s)
		}
	}
	if len(nf) > 0 {
		b.WriteString(" (" + strings.Join(nf, "/"))
		if v.Rule != "" {
			b.WriteString(", " + v.Rule)
		}
		b.WriteString(")")
	}
	return b.String()
}

// Write renders one journey.
func (t *Text) Write(j *journey.Journey) error {
	var b strings.Builder
	p := j.Packet
	head := p.Proto
	if p.TCPFlags != "" {
		head += " " + p.TCPFlags
	}
	fmt.Fprintf(&b, "%s %s -> %s\n", head, endpoint(p.Src, p.Sport), endpoint(p.Dst, p.Dport))
	fmt.Fprintf(&b, "  verdict: %s\n", Summary(j))
	if j.LostEvents > 0 {
		fmt.Fprintf(&b, "  warning: %d trace events were lost; this journey may be incomplete\n", j.LostEvents)
	}
	if len(j.Nodes) > 0 {
		var ns []string
		for _, n := range j.Nodes {
			if n.Observed {
				ns = append(ns, n.Name)
			} else {
				ns = append(ns, n.Name+" (not observed)")
			}
		}
		fmt.Fprintf(&b, "  nodes: %s\n", strings.Join(ns, ", "))
	}
	if len(j.Hops) > 0 {
		b.WriteString("  picture:\n")
		b.WriteString(picture.Build(j).Text("    "))
		b.WriteString("  path (t in µs):\n")
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		for _, h := range j.Hops {
			dev := h.Device
			if dev == "" {
				dev = "-"
			}
			where := h.Netns
			if len(j.Nodes) > 0 {
				where = h.Node + "\t" + h.Netns // cluster mode: which node's namespace
			}
			fmt.Fprintf(tw, "    %7d\t%s\t%s\t%s\n", h.TUs, where, dev, h.Event)
		}
		tw.Flush()
	}
	for _, r := range j.Rewrites {
		hook := r.Hook
		if r.Between != "" {
			hook += " (inferred: " + r.Between + ")"
		}
		fmt.Fprintf(&b, "  %s in %s %s: %s  =>  %s\n", r.Kind, place(r.Node, r.Netns), hook, flow(r.Before), flow(r.After))
	}
	for _, e := range j.Encaps {
		dport := ""
		if e.OuterDport != 0 {
			dport = fmt.Sprintf(":%d", e.OuterDport)
		}
		via := ""
		if e.Underlay != "" {
			via = " via " + e.Underlay
		}
		fmt.Fprintf(&b, "  %s encap in %s on %s vni %d: outer %s -> %s%s%s\n", e.Kind, place(e.Node, e.Netns), e.Device, e.VNI, e.OuterSrc, e.OuterDst, dport, via)
	}
	if j.Reply != nil {
		r := j.Reply
		fmt.Fprintf(&b, "  reply %s %s -> %s: %s", r.Packet.TCPFlags, endpoint(r.Packet.Src, r.Packet.Sport), endpoint(r.Packet.Dst, r.Packet.Dport), r.Verdict)
		if r.Netns != "" {
			fmt.Fprintf(&b, " in %s", r.Netns)
		}
		b.WriteString("\n")
	}
	for _, f := range j.Findings {
		fmt.Fprintf(&b, "  %s %s: %s\n", strings.ToUpper(f.Severity), f.Code, f.Message)
		if f.Advice != "" {
			fmt.Fprintf(&b, "      fix: %s\n", f.Advice)
		}
	}
	b.WriteString("\n")
	_, err := io.WriteString(t.w, b.String())
	return err
}
