package diagnose

import (
	"net/netip"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/nodestate"
)

// A node with an IPv6 underlay has two VXLAN devices: the one holding an
// address of the packet's IP version carries it; over an IPv4 underlay
// flannel.1 carries both.
func TestOverlayFor(t *testing.T) {
	vx := &nodestate.VXLAN{VNI: 1}
	dual := &nodestate.Netns{Links: []nodestate.Link{
		{Name: "eth0", Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.10/24"), netip.MustParsePrefix("2001:db8:a::10/64")}},
		{Name: "flannel.1", VXLAN: vx, Addrs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/32")}},
		{Name: "flannel-v6.1", VXLAN: vx, Addrs: []netip.Prefix{netip.MustParsePrefix("fd00:10:244::/128")}},
	}}
	overV4 := &nodestate.Netns{Links: []nodestate.Link{
		{Name: "flannel.1", VXLAN: vx, Addrs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/32"), netip.MustParsePrefix("fd00:10:244::/128")}},
	}}
	for _, c := range []struct {
		ns   *nodestate.Netns
		dst  string
		want string
	}{
		{dual, "10.244.1.2", "flannel.1"},
		{dual, "fd00:10:244:1::2", "flannel-v6.1"},
		{overV4, "fd00:10:244:1::2", "flannel.1"},
		{overV4, "10.244.1.2", "flannel.1"},
		{&nodestate.Netns{Links: []nodestate.Link{{Name: "eth0"}}}, "10.244.1.2", ""},
	} {
		if got := overlayFor(c.ns, netip.MustParseAddr(c.dst)); got != c.want {
			t.Errorf("overlay for %s: %q, want %q", c.dst, got, c.want)
		}
	}
}
