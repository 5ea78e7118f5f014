package output

import (
	"bytes"
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
