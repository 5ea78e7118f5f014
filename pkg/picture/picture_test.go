package picture

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/journey"
)

func dropped() *journey.Journey {
	return &journey.Journey{
		Schema: journey.Schema,
		Packet: journey.Packet{Proto: "tcp", Src: "10.244.0.5", Sport: 40000, Dst: "10.96.0.100", Dport: 80, TCPFlags: "SYN"},
		Verdict: journey.Verdict{Kind: journey.Dropped, Netns: "node-b", Device: "flannel.1", Reason: "NETFILTER_DROP",
			Hook: "FORWARD", Table: "filter", Chain: "FORWARD", Rule: "policy DROP"},
		Hops: []journey.Hop{
			{Netns: "pod-a", Device: "eth0", Event: "tx", Pod: "default/client"},
			{Netns: "node-a", Device: "veth1", Event: "rx"},
			{Netns: "node-a", Device: "cni0", Event: "nf:PREROUTING"},
			{Netns: "node-a", Device: "cni0", Event: "rx"},
			{Netns: "node-a", Device: "flannel.1", Event: "tx"},
			{Netns: "node-a", Device: "eth0", Event: "tx"},
			{Netns: "node-b", Device: "eth0", Event: "rx"},
			{Netns: "node-b", Device: "flannel.1", Event: "rx"},
			{Netns: "node-b", Device: "flannel.1", Event: "drop"},
		},
		Rewrites: []journey.Rewrite{{Kind: "DNAT", Netns: "node-a", Hook: "PREROUTING",
			Before: journey.TupleJSON{Src: "10.244.0.5", Sport: 40000, Dst: "10.96.0.100", Dport: 80},
			After:  journey.TupleJSON{Src: "10.244.0.5", Sport: 40000, Dst: "10.244.1.2", Dport: 80}}},
		Encaps:   []journey.Encap{{Kind: "vxlan", Netns: "node-a", Device: "flannel.1", VNI: 1, OuterSrc: "192.0.2.10", OuterDst: "198.51.100.20"}},
		Findings: []journey.Finding{{Code: "NF_POLICY_DROP", Severity: journey.SeverityError, Message: "m"}},
	}
}

// TestBuild: one segment per stay in a namespace, devices in order without
// repeats, NAT and VXLAN noted where they happened, the end where the
// verdict says.
func TestBuild(t *testing.T) {
	p := Build(dropped())
	var labels []string
	for _, s := range p.Segments {
		labels = append(labels, s.Label())
	}
	if got := strings.Join(labels, " | "); got != "pod-a (pod default/client) | node-a | node-b" {
		t.Fatalf("segments %q", got)
	}
	if got := strings.Join(p.Segments[1].Devices, ">"); got != "veth1>cni0>flannel.1>eth0" {
		t.Errorf("node-a devices %q", got)
	}
	notes := strings.Join(p.Segments[1].Notes, "; ")
	if !strings.Contains(notes, "DNAT 10.96.0.100:80 -> 10.244.1.2:80 at PREROUTING") || !strings.Contains(notes, "VXLAN vni 1: outer 192.0.2.10 -> 198.51.100.20") {
		t.Errorf("node-a notes %q", notes)
	}
	end := p.Segments[2]
	if !end.Bad || !strings.Contains(end.End, "dropped at flannel.1: NETFILTER_DROP") || !strings.Contains(end.End, "NF_POLICY_DROP") || p.Segments[0].End != "" {
		t.Errorf("end %+v", end)
	}
	text := p.Text("  ")
	if n := strings.Count(text, "\n"); n != 5 {
		t.Errorf("text has %d lines, want 5 (3 segments, 2 links):\n%s", n, text)
	}
	if !strings.Contains(text, "XX dropped") {
		t.Errorf("text does not mark the drop:\n%s", text)
	}
}

// TestBuildDelivered: a delivered journey ends well, in the verdict's
// namespace even when the packet passed it earlier; a journey without
// hops still has the verdict's place.
func TestBuildDelivered(t *testing.T) {
	j := &journey.Journey{Verdict: journey.Verdict{Kind: journey.Delivered, Netns: "a"},
		Hops:  []journey.Hop{{Netns: "a", Device: "x"}, {Netns: "b", Device: "y"}, {Netns: "a", Device: "z"}},
		Reply: &journey.Reply{Verdict: journey.Delivered, Packet: journey.Packet{TCPFlags: "SYN|ACK"}}}
	p := Build(j)
	if len(p.Segments) != 3 || p.Segments[2].End == "" || p.Segments[2].Bad || p.Segments[0].End != "" {
		t.Fatalf("segments %+v", p.Segments)
	}
	if !strings.Contains(p.Text(""), "reply SYN|ACK delivered") {
		t.Errorf("text lacks the reply:\n%s", p.Text(""))
	}
	empty := Build(&journey.Journey{Verdict: journey.Verdict{Kind: journey.Unknown, Netns: "c"}})
	if len(empty.Segments) != 1 || empty.Segments[0].Netns != "c" {
		t.Errorf("no-hop journey segments %+v", empty.Segments)
	}
}

// svgText parses an SVG document and returns its root element and text.
func svgText(t *testing.T, doc []byte) (string, string) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(doc))
	root := ""
	var text strings.Builder
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return root, text.String()
		}
		if err != nil {
			t.Fatalf("not well-formed: %v\n%s", err, doc)
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = tk.Name.Local
			}
		case xml.CharData:
			text.Write(tk)
		}
	}
}

// TestSVG: well-formed SVG naming every namespace, device and the drop;
// names that need escaping are escaped.
func TestSVG(t *testing.T) {
	j := dropped()
	j.Hops[0].Pod = `ns/<evil & "pod">`
	var b bytes.Buffer
	if err := Build(j).SVG(&b); err != nil {
		t.Fatal(err)
	}
	root, text := svgText(t, b.Bytes())
	if root != "svg" {
		t.Fatalf("root %q", root)
	}
	for _, w := range []string{"pod-a", "node-a", "node-b", "veth1", "cni0", "flannel.1", "NETFILTER_DROP", "DNAT", "VXLAN", `<evil & "pod">`, "\u2717 dropped"} {
		if !strings.Contains(text, w) {
			t.Errorf("SVG text lacks %q", w)
		}
	}
	if !strings.Contains(b.String(), `class="ns end-bad"`) {
		t.Errorf("the ending box is not marked bad")
	}
}

// FuzzSVG: journeys from saved JSON are outside input: any names give a
// well-formed document.
func FuzzSVG(f *testing.F) {
	f.Add("pod-a", "eth0", "node-b", "NETFILTER_DROP", 3)
	f.Add("<", "&", "\x00", "]]>", 40)
	f.Fuzz(func(t *testing.T, netns, dev, vnetns, reason string, n int) {
		j := &journey.Journey{Verdict: journey.Verdict{Kind: journey.Dropped, Netns: vnetns, Reason: reason}}
		for i := 0; i < n%64; i++ {
			j.Hops = append(j.Hops, journey.Hop{Netns: netns + string(rune('a'+i%3)), Device: dev + string(rune('0'+i%7))})
		}
		var b bytes.Buffer
		if err := Build(j).SVG(&b); err != nil {
			t.Fatal(err)
		}
		if root, _ := svgText(t, b.Bytes()); root != "svg" {
			t.Fatalf("root %q", root)
		}
	})
}
