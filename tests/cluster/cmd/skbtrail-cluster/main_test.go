package main

import (
	"bytes"
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/skbtrail/skbtrail/tests/lab"
)

func TestParseNodeCounts(t *testing.T) {
	got, err := parseNodeCounts("8, 2,4,4")
	if err != nil || !slices.Equal(got, []int{2, 4, 8}) {
		t.Errorf("parseNodeCounts: %v %v, want [2 4 8]", got, err)
	}
	for _, bad := range []string{"", "1", "19", "x", ",,"} {
		if _, err := parseNodeCounts(bad); err == nil {
			t.Errorf("parseNodeCounts(%q): no error", bad)
		}
	}
}

func TestMedianAndTable(t *testing.T) {
	r := benchRow{nodes: 4, samples: []time.Duration{9 * time.Second, 7 * time.Second, 8 * time.Second, 10 * time.Second}}
	if m := r.median(); m != 8500*time.Millisecond {
		t.Errorf("median %s, want 8.5s", m)
	}
	if r.min() != 7*time.Second || r.max() != 10*time.Second {
		t.Errorf("min %s max %s", r.min(), r.max())
	}
	var b bytes.Buffer
	rows := []benchRow{{nodes: 2, samples: []time.Duration{600 * time.Millisecond}}, r}
	if err := writeTable(&b, rows); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "median ms") ||
		strings.Join(strings.Fields(lines[1]), " ") != "2 600 600 600 1" ||
		strings.Join(strings.Fields(lines[2]), " ") != "4 8500 7000 10000 4" {
		t.Errorf("table:\n%s", b.String())
	}
}

func TestExtraNodeAddresses(t *testing.T) {
	net := netip.MustParsePrefix(extraNet)
	seen := map[netip.Addr]bool{}
	for i := range maxExtra {
		x, err := newExtraNode("st123456", i)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range []netip.Addr{x.ip, x.routerIP} {
			if !net.Contains(a) || seen[a] {
				t.Errorf("extra %d: address %s outside %s or used twice", i, a, net)
			}
			seen[a] = true
		}
		if netip.PrefixFrom(x.ip, 30).Masked() != netip.PrefixFrom(x.routerIP, 30).Masked() {
			t.Errorf("extra %d: %s and %s not in one /30", i, x.ip, x.routerIP)
		}
		// never the lab's pod CIDRs, the BogusVTEP or the ctl link
		if strings.HasPrefix(x.podCIDR, "10.244.0.") || strings.HasPrefix(x.podCIDR, "10.244.1.") ||
			net.Contains(netip.MustParseAddr(lab.BogusVTEP)) || net.Contains(netip.MustParseAddr("203.0.113.2")) {
			t.Errorf("extra %d: pod CIDR %s or %s overlaps the lab", i, x.podCIDR, net)
		}
		if len(x.netns) > 15 || len(x.routerIf) > 15 {
			t.Errorf("extra %d: names %q %q too long", i, x.netns, x.routerIf)
		}
	}
	if _, err := newExtraNode("p", maxExtra); err == nil {
		t.Error("no error beyond maxExtra")
	}
	if x, _ := newExtraNode("p", 0); x.ip.String() != "203.0.113.130" || x.routerIP.String() != "203.0.113.129" || x.podIP != "10.244.2.2" || x.name != "node-x1" {
		t.Errorf("first extra node %+v", x)
	}
}

func TestRunUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run(context.Background(), nil, &out, &errb); err == nil || !strings.Contains(errb.String(), "skbtrail-cluster demo") {
		t.Errorf("no args: %v %q", err, errb.String())
	}
	if err := run(context.Background(), []string{"demo", "--fault", "nope", "--skbtrail", "x", "--plugin", "y"}, &out, &errb); err == nil || !strings.Contains(err.Error(), "unknown fault") {
		t.Errorf("unknown fault: %v", err)
	}
	if err := run(context.Background(), []string{"bench", "--nodes", "1"}, &out, &errb); err == nil || !strings.Contains(err.Error(), "--nodes") {
		t.Errorf("bad --nodes: %v", err)
	}
	if err := run(context.Background(), []string{"demo", "--plugin", "y"}, &out, &errb); err == nil || !strings.Contains(err.Error(), "--skbtrail PATH is required") {
		t.Errorf("missing --skbtrail: %v", err)
	}
}
