package diagnose

import (
	"net/netip"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/nftrace"
)

func TestSameFlow(t *testing.T) {
	a, b := netip.MustParseAddr("10.244.0.5"), netip.MustParseAddr("10.244.1.2")
	j := journey.Tuple{Proto: journey.ProtoTCP, Src: a, Dst: b, Sport: 40000, Dport: 80, TCPFlags: 2}
	if !sameFlow(nftrace.Tuple{Proto: journey.ProtoTCP, Src: a, Dst: b, Sport: 40000, Dport: 80}, j) {
		t.Error("the same packet did not match")
	}
	if sameFlow(nftrace.Tuple{Proto: journey.ProtoTCP, Src: a, Dst: b, Sport: 40001, Dport: 80}, j) {
		t.Error("another source port matched")
	}
	icmp := journey.Tuple{Proto: journey.ProtoICMP, Src: a, Dst: b, Sport: 7}
	if !sameFlow(nftrace.Tuple{Proto: journey.ProtoICMP, Src: a, Dst: b}, icmp) {
		t.Error("ICMP is matched by addresses")
	}
}

func TestRuleStatsLine(t *testing.T) {
	s := RuleStats{Traced: 4, NoRules: 12, Legacy: 1, Failed: 2}
	if got, want := s.String(), "nftrace in 4 namespaces with nf_tables rules (12 without rules skipped), iptables-legacy counters in 1, 2 failed"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
	if got, want := (RuleStats{NoRules: 3, NoMatching: true}).String(), "3 namespaces without rules skipped"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
}
