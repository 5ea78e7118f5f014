package diagnose

import (
	"net/netip"
	"strings"
	"testing"
)

// The MTU advice: shrink the overlay, unless IPv6 would need it below 1280.
func TestMTUAdvice(t *testing.T) {
	for _, c := range []struct {
		name        string
		limit, size uint32
		src         string
		want        []string
		not         string
	}{
		{"IPv4 over a small underlay", 1400, 1500, "10.244.0.5",
			[]string{"overlay MTU at most 1350", "flannel.1", "at least 1500"}, "IPv6"},
		{"IPv6 with room above 1280", 1400, 1500, "fd00:10:244::5",
			[]string{"overlay MTU at most 1350", "at least 1500"}, "IPv6 needs"},
		{"IPv6 below the 1280 minimum", 1300, 1350, "fd00:10:244::5",
			[]string{"raise the underlay MTU to at least 1350", "IPv6 needs an MTU of at least 1280", "cannot go below 1280"}, "overlay MTU at most"},
		{"IPv6, a big packet below the minimum", 1200, 1500, "fd00:10:244::5",
			[]string{"at least 1500"}, "overlay MTU at most"},
		{"v4-mapped is IPv4", 1300, 1350, "::ffff:10.244.0.5",
			[]string{"overlay MTU at most 1250"}, "IPv6 needs"},
	} {
		got := mtuAdvice(c.limit, c.size, vxlanOverhead, c.src, "flannel.1")
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: %q lacks %q", c.name, got, w)
			}
		}
		if strings.Contains(got, c.not) {
			t.Errorf("%s: %q has %q", c.name, got, c.not)
		}
	}
}

// Over an IPv6 underlay VXLAN takes 70 bytes: the overlay's room and the
// 1280 floor move with it.
func TestMTUAdviceIPv6Underlay(t *testing.T) {
	if got := overheadFor(netip.MustParseAddr("2001:db8:b::20")); got != 70 {
		t.Fatalf("overhead over IPv6 %d, want 70", got)
	}
	if got := overheadFor(netip.MustParseAddr("198.51.100.20")); got != 50 {
		t.Fatalf("overhead over IPv4 %d, want 50", got)
	}
	got := mtuAdvice(1400, 1500, vxlanOverhead6, "fd00:10:244::5", "flannel-v6.1")
	if !strings.Contains(got, "overlay MTU at most 1330") || !strings.Contains(got, "flannel-v6.1") {
		t.Errorf("%q, want the overlay at most 1400 - 70 on flannel-v6.1", got)
	}
	// 1280 + 70 = 1350 is the least an IPv6 underlay may carry
	got = mtuAdvice(1340, 1400, vxlanOverhead6, "fd00:10:244::5", "flannel-v6.1")
	if !strings.Contains(got, "must carry 1280 + 70 bytes") || strings.Contains(got, "overlay MTU at most") {
		t.Errorf("%q, want the underlay raised (1280 + 70)", got)
	}
}
