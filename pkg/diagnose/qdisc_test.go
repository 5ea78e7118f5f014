package diagnose

import (
	"strings"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/qdisc"
)

func TestQdiscDrop(t *testing.T) {
	syn := tcp("10.244.0.5", "10.244.1.2", 4000, 80)
	dropped := func(reason string) *journey.Journey {
		j := build(t, ev(journey.KindTx, podA, "eth0", syn), ev(journey.KindRx, nodeA, "vethpoda", syn), ev(journey.KindDrop, nodeA, "eth0", syn))
		j.Verdict.Kind, j.Verdict.Reason = journey.Dropped, reason
		return j
	}
	tbf := qdisc.Qdisc{Kind: "tbf", Handle: "8001:", Root: true, Limit: 3000, LimitUnit: "bytes", Rate: 1, QLen: 32, Backlog: 2976, Drops: 3, Overlimits: 35}
	child := qdisc.Qdisc{Kind: "bfifo", Handle: "0:", Drops: 3}
	cases := []struct {
		name        string
		reason      string
		qs          []qdisc.Qdisc
		msg, advice []string
		code        string
	}{
		{"tbf full", "QDISC_DROP", []qdisc.Qdisc{child, tbf}, []string{"tbf qdisc 8001: at the root of eth0 in node-a", "queue was full", "2976 bytes in 32 packets, limit 3000 bytes, rate 8 bit/s", "3 packets dropped"},
			[]string{"tc -s qdisc show dev eth0 in node-a", "tc qdisc change dev eth0 root tbf"}, CodeQdiscDrop},
		{"qdiscs unknown", "QDISC_OVERLIMIT", nil, []string{"queueing discipline of eth0 in node-a", "over its limit"}, []string{"tc -s qdisc show dev eth0"}, CodeQdiscDrop},
		{"cpu backlog", "CPU_BACKLOG", nil, []string{"CPU input backlog was full when eth0 in node-a received", "net.core.netdev_max_backlog"}, []string{"RPS"}, CodeQdiscDrop},
		{"other", "NO_SOCKET", []qdisc.Qdisc{tbf}, nil, nil, ""},
	}
	for _, c := range cases {
		d := New(Config{})
		d.qdiscs = func(ino uint32, dev string) ([]qdisc.Qdisc, error) {
			if ino != nodeA || dev != "eth0" {
				t.Errorf("%s: qdiscs of %d/%s, want node-a's eth0", c.name, ino, dev)
			}
			return c.qs, nil
		}
		j := dropped(c.reason)
		d.Diagnose(j)
		if c.code == "" {
			for _, f := range j.Findings {
				if f.Code == CodeQdiscDrop {
					t.Errorf("%s: unexpected %+v", c.name, f)
				}
			}
			continue
		}
		if len(j.Findings) == 0 || j.Findings[0].Code != c.code || j.Findings[0].Netns != "node-a" {
			t.Fatalf("%s: findings %+v", c.name, j.Findings)
		}
		f := j.Findings[0]
		for _, w := range c.msg {
			if !strings.Contains(f.Message, w) {
				t.Errorf("%s: message %q lacks %q", c.name, f.Message, w)
			}
		}
		for _, w := range c.advice {
			if !strings.Contains(f.Advice, w) {
				t.Errorf("%s: advice %q lacks %q", c.name, f.Advice, w)
			}
		}
	}
}
