package resolvconf

import (
	"net/netip"
	"slices"
	"testing"
)

func TestParse(t *testing.T) {
	c := Parse(`# kubelet's
search default.svc.cluster.local svc.cluster.local cluster.local
nameserver 10.96.0.10
nameserver  fd00::10 ; v6
nameserver not-an-address
options ndots:5 timeout:1
options attempts:2
`)
	want := []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00::10")}
	if !slices.Equal(c.Nameservers, want) {
		t.Errorf("nameservers %v, want %v", c.Nameservers, want)
	}
	if !slices.Equal(c.Search, []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"}) {
		t.Errorf("search %v", c.Search)
	}
	if !slices.Equal(c.Options, []string{"ndots:5", "timeout:1", "attempts:2"}) {
		t.Errorf("options %v", c.Options)
	}
	if c := Parse("domain example.org\nnameserver 203.0.113.53\n"); !slices.Equal(c.Search, []string{"example.org"}) || len(c.Nameservers) != 1 {
		t.Errorf("domain: %+v", c)
	}
}
