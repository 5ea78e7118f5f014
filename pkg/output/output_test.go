package output

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/journey"
)

func TestSummaryLeft(t *testing.T) {
	j := &journey.Journey{
		Packet:  journey.Packet{Proto: "tcp", Src: "10.244.0.5", Sport: 4000, Dst: "10.96.0.100", Dport: 80, TCPFlags: "SYN"},
		Verdict: journey.Verdict{Kind: journey.Left, Netns: "node-a", Device: "nic0"},
		Encaps:  []journey.Encap{{Kind: "vxlan", Netns: "node-a", Device: "flannel.1", Underlay: "nic0", OuterDst: "198.51.100.20"}},
	}
	if got, want := Summary(j), "LEFT in node-a at nic0 toward 198.51.100.20 (VXLAN outer destination)"; got != want {
		t.Errorf("Summary = %q, want %q", got, want)
	}
	j.Encaps = nil
	if got, want := Summary(j), "LEFT in node-a at nic0 toward 10.96.0.100:80"; got != want {
		t.Errorf("Summary = %q, want %q", got, want)
	}
	var b bytes.Buffer
	if err := NewText(&b).Write(j); err != nil || !strings.Contains(b.String(), "  verdict: LEFT in node-a at nic0 toward") {
		t.Errorf("text %q (%v)", b.String(), err)
	}
	if got := Summary(&journey.Journey{Verdict: journey.Verdict{Kind: journey.Dropped, Netns: "node-b", Device: "flannel.1", Reason: "NETFILTER_DROP"}}); got != "DROPPED in node-b at flannel.1: NETFILTER_DROP" {
		t.Errorf("other verdicts render as before: %q", got)
	}
}

func TestTextClusterJourney(t *testing.T) {
	j := &journey.Journey{
		Packet:   journey.Packet{Proto: "tcp", Src: "10.244.0.5", Sport: 40000, Dst: "10.96.0.100", Dport: 80, TCPFlags: "SYN"},
		Verdict:  journey.Verdict{Kind: journey.Dropped, Node: "node-b", Netns: "host", Device: "flannel.1", Reason: "NETFILTER_DROP"},
		Rewrites: []journey.Rewrite{{Kind: "DNAT", Node: "node-a", Netns: "host", Hook: "PREROUTING"}},
		Hops:     []journey.Hop{{TUs: 0, Node: "node-a", Netns: "pod-a", Device: "eth0", Event: "tx"}, {TUs: 200, Node: "node-b", Netns: "host", Device: "eth0", Event: "rx"}},
		Nodes:    []journey.NodeObserved{{Name: "node-a", Observed: true}, {Name: "node-b", Observed: true}, {Name: "node-c", Why: "no daemon"}},
	}
	var b strings.Builder
	if err := NewText(&b).Write(j); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"verdict: DROPPED on node node-b in host at flannel.1", "nodes: node-a, node-b, node-c (not observed)", "DNAT in node-a/host PREROUTING"} {
		if !strings.Contains(out, want) {
			t.Errorf("text lacks %q:\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`200\s+node-b\s+host\s+eth0\s+rx`).MatchString(out) {
		t.Errorf("hop lines do not name the node:\n%s", out)
	}
}
