package trace

import (
	"net/netip"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/tracer"
)

// The marking rule keeps what NAT leaves alone: the source, not the
// (Service) destination, unless nothing else tells the flow.
func TestMarkMatch(t *testing.T) {
	src := netip.MustParsePrefix("10.244.0.5/32")
	svc := netip.MustParsePrefix("10.96.0.100/32")
	m := markMatch(Options{Filter: tracer.Filter{Proto: journey.ProtoTCP, SYNOnly: true, Src: src, Dst: svc, Dport: 80}})
	if m.Src != src || m.Dst.IsValid() || m.Dport != 0 || !m.SYNOnly || m.Proto != journey.ProtoTCP || m.IPv6 {
		t.Errorf("with a source: %+v", m)
	}
	m = markMatch(Options{Filter: tracer.Filter{Proto: journey.ProtoUDP, Dst: svc, Dport: 53}})
	if m.Dst != svc || m.Dport != 53 || m.Src.IsValid() {
		t.Errorf("without a source: %+v", m)
	}
	m = markMatch(Options{Filter: tracer.Filter{Src: netip.MustParsePrefix("2001:db8::1/128")}})
	if !m.IPv6 {
		t.Errorf("IPv6 source: %+v", m)
	}
}
