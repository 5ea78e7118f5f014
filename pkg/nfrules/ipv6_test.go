package nfrules

import (
	"net/netip"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/journey"
)

// An IPv6 packet is explained by the ip6tables rules, an IPv4 one by the
// iptables rules, each from its own counters.
func TestDecideIPv6(t *testing.T) {
	v4 := "*filter\n:FORWARD DROP [0:0]\nCOMMIT\n"
	v6before := "*filter\n:FORWARD ACCEPT [0:0]\n[0:0] -A FORWARD -d fd00:10:244:1::2/128 -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset\nCOMMIT\n"
	v6after := "*filter\n:FORWARD ACCEPT [0:0]\n[1:80] -A FORWARD -d fd00:10:244:1::2/128 -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset\nCOMMIT\n"
	before := &Snapshot{NFT: mustParse(t, v4), NFT6: mustParse(t, v6before)}
	after := &Snapshot{NFT: mustParse(t, v4), NFT6: mustParse(t, v6after)}
	pkt6 := Packet{Tuple: journey.Tuple{Proto: journey.ProtoTCP, Src: netip.MustParseAddr("fd00:10:244::5"),
		Dst: netip.MustParseAddr("fd00:10:244:1::2"), Dport: 80}}
	d, ok := Decide(before, after, journey.HookForward, 0, pkt6)
	if !ok || d.Family != "ip6" || d.Verdict != "REJECT" || d.Table != "filter" || d.Chain != "FORWARD" {
		t.Errorf("IPv6 decision %+v %v, want the ip6tables REJECT rule", d, ok)
	}
	pkt4 := Packet{Tuple: journey.Tuple{Proto: journey.ProtoTCP, Src: netip.MustParseAddr("10.244.0.5"),
		Dst: netip.MustParseAddr("10.244.1.2"), Dport: 80}}
	d, ok = Decide(before, after, journey.HookForward, 0, pkt4)
	if !ok || d.Family != "ip" || d.Verdict != "policy DROP" {
		t.Errorf("IPv4 decision %+v %v, want iptables' FORWARD policy", d, ok)
	}
}
