package diagnose

import (
	"os"
	"strings"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/journey"
)

// A recorded drop with the conntrack table full (not reproducible in a
// lab: nf_conntrack_max is one limit for the whole machine).
func TestConntrackFull(t *testing.T) {
	syn := tcp("10.244.0.5", "10.96.0.100", 4000, 80)
	cases := []struct {
		name         string
		rule         string
		count, limit int
		want         bool
	}{
		{"full", "", 262144, 262144, true},
		{"room left", "", 1000, 262144, false},
		{"a rule decided", "policy DROP", 262144, 262144, false},
	}
	for _, c := range cases {
		d := New(Config{})
		d.conntrackUse = func(ns uint32) (int, int, bool) {
			if ns != nodeA {
				t.Errorf("%s: conntrack of netns %d, want node-a's", c.name, ns)
			}
			return c.count, c.limit, true
		}
		j := build(t, ev(journey.KindTx, podA, "eth0", syn), ev(journey.KindRx, nodeA, "vethpoda", syn), ev(journey.KindDrop, nodeA, "vethpoda", syn))
		j.Verdict.Kind, j.Verdict.Reason, j.Verdict.Hook, j.Verdict.Rule = journey.Dropped, "NETFILTER_DROP", "PREROUTING", c.rule
		d.Diagnose(j)
		got := len(j.Findings) > 0 && j.Findings[0].Code == CodeConntrackFull
		if got != c.want {
			t.Errorf("%s: findings %+v, want CONNTRACK_FULL first: %v", c.name, j.Findings, c.want)
			continue
		}
		if got {
			f := j.Findings[0]
			for _, w := range []string{"connection tracking table of node-a is full", "262144 entries", "nf_conntrack_max = 262144", "at PREROUTING"} {
				if !strings.Contains(f.Message, w) {
					t.Errorf("message %q lacks %q", f.Message, w)
				}
			}
			if !strings.Contains(f.Advice, "conntrack -C") || !strings.Contains(f.Advice, "NOTRACK") || f.Netns != "node-a" {
				t.Errorf("finding %+v", f)
			}
		}
	}
}

// readConntrackUse reads this process's namespace (read-only).
func TestReadConntrackUse(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("SKBTRAIL_REQUIRE_PRIVILEGED") == "1" {
			t.Fatal("needs root (netnsutil.Do)")
		}
		t.Skip("needs root (netnsutil.Do)")
	}
	if _, err := os.Stat(conntrackCount); err != nil {
		t.Skipf("no conntrack in this kernel or namespace: %v", err)
	}
	count, limit, ok := readConntrackUse("/proc/self/ns/net")
	if !ok || limit <= 0 || count < 0 {
		t.Errorf("readConntrackUse = %d, %d, %v", count, limit, ok)
	}
}
