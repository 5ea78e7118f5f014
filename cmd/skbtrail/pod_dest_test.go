package main

import (
	"net/netip"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/trace"
)

// --pod's source address follows the destination's family.
func TestDestination(t *testing.T) {
	for _, c := range []struct {
		req  trace.Request
		want string
	}{
		{trace.Request{To: "10.96.0.10:53"}, "10.96.0.10"},
		{trace.Request{To: "[fd00::10]:53"}, "fd00::10"},
		{trace.Request{Dst: "fd00::/64"}, "fd00::"},
		{trace.Request{Dst: "10.244.1.7"}, "10.244.1.7"},
		{trace.Request{To: "[::ffff:10.0.0.1]:80"}, "10.0.0.1"},
		{trace.Request{To: "web.default:80"}, ""},
		{trace.Request{}, ""},
	} {
		got := destination(&c.req)
		if (c.want == "" && got.IsValid()) || (c.want != "" && got != netip.MustParseAddr(c.want)) {
			t.Errorf("destination(%+v) = %s, want %q", c.req, got, c.want)
		}
	}
}
