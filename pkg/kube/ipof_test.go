package kube

import (
	"net/netip"
	"testing"
)

func TestPodIPOf(t *testing.T) {
	v4, v6 := netip.MustParseAddr("10.244.0.5"), netip.MustParseAddr("fd00:10:244::5")
	dual := Pod{IP: v4, OtherIP: otherIP([]netip.Addr{v4, netip.MustParseAddr("10.244.9.9"), v6})}
	for like, want := range map[string]netip.Addr{"": v4, "10.96.0.10": v4, "fd00:10:96::a": v6, "::ffff:10.96.0.10": v4} {
		var l netip.Addr
		if like != "" {
			l = netip.MustParseAddr(like)
		}
		if got, ok := dual.IPOf(l); !ok || got != want {
			t.Errorf("IPOf(%s) = %v %v, want %v", like, got, ok, want)
		}
	}
	if _, ok := (Pod{IP: v4}).IPOf(v6); ok {
		t.Error("an IPv4-only pod has an IPv6 address")
	}
	if got, ok := (Pod{IP: v6}).IPOf(netip.Addr{}); ok {
		t.Errorf("an IPv6-only pod gave %v for an IPv4 destination", got)
	}
}
