package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/tests/lab"
)

// outcome is what a trace concluded: where and how the journey ended and
// the first (primary) finding.
type outcome struct {
	kind, netns, reason, code string
}

func outcomeOf(j journey.Journey) outcome {
	o := outcome{kind: j.Verdict.Kind, netns: j.Verdict.Netns, reason: j.Verdict.Reason}
	if len(j.Findings) > 0 {
		o.code = j.Findings[0].Code
	}
	return o
}

// passiveCase is one lab fault traced both ways: the traced destination,
// the lab's own traffic that meets the fault, and the outcome both traces
// must report.
type passiveCase struct {
	fault string
	// to returns the filter flags (default: --to the web ClusterIP).
	to func(l *lab.Lab) []string
	// probeArgs are added to the probe trace only (e.g. --probe-size).
	probeArgs []string
	// traffic makes the lab's own packet from pod A (default: a TCP
	// connect to the web ClusterIP).
	traffic func(ctx context.Context, t *testing.T, l *lab.Lab)
	want    func(l *lab.Lab) outcome
	// twoLabs traces each way on a lab of its own, for faults whose
	// first packet leaves state behind that changes the next one.
	twoLabs bool
}

// connectWeb is a client's TCP connect to the web Service from pod A (what
// curl http://10.96.0.100/ does first). Every fault here breaks it.
func connectWeb(ctx context.Context, t *testing.T, l *lab.Lab) {
	t.Helper()
	if err := l.Dial(ctx, l.PodA, l.WebService.Addr(), 2*time.Second); err == nil {
		t.Errorf("connect to %s from %s succeeded through the fault", l.WebService.Addr(), l.PodA)
	} else {
		t.Logf("lab traffic: %v", err)
	}
}

// dnsQuery is a DNS query from pod A to the cluster DNS, sent by a shell
// (the way the lab's README suggests reproducing the DNS incident).
func dnsQuery(_ context.Context, t *testing.T, l *lab.Lab) {
	t.Helper()
	if out, err := l.Run(l.PodA, "bash", "-c", "echo query > /dev/udp/"+l.DNSService.ClusterIP+"/53"); err != nil {
		t.Fatalf("dns query from %s: %v %s", l.PodA, err, out)
	}
}

// Issue 13 item 7: every fault of the flannel lab gives the same verdict
// kind, place, drop reason and first finding whether skbtrail sends the
// first packet itself (--probe) or waits for the lab's own traffic. The
// passive trace runs first on a lab no trace has touched, so its first
// packet reaches every namespace after pod A before any netfilter observer
// joined there (--netfilter reached): only the socket-level delivery signal
// and the rule counters can tell what happened. Both traces use the same
// filter; the probe follows on the same lab (conntrack keeps no state that
// changes a new connection's fate in these faults), except small-mtu.
//
// Faults of the lab not here, and why:
//   - accept-queue-full, udp-rcvbuf-full: the fault is filled by the lab's
//     own connection/datagrams from pod A; a passive trace cannot tell the
//     user's packet from the lab's filler without changing the lab.
//   - qdisc-full: the qdisc is kept full by the lab's filler packets, and
//     how long it stays full depends on timing; not reproducible passively.
//   - pod-dns-upstream: the query comes from a process with its own
//     resolv.conf; the traced path (router drop) is the no-route one.
//   - xdp-*, redirect-peer: tested passively in datapath_test.go where the
//     fault is (TestRedirectPeer); XDP drops are inferences from the
//     router's side, the same for both ways.
//   - flanneld-*: need the real flanneld (flannel_test.go).
//
// TODO(report): ICMP (ping) is not among the lab's traffic here: the test
// machine has no ping binary.
func TestPassiveEqualsProbe(t *testing.T) {
	webTCP := func(l *lab.Lab) []string { return []string{"--to", l.WebService.Addr()} }
	cases := []passiveCase{
		{fault: "forward-drop", want: func(l *lab.Lab) outcome {
			return outcome{journey.Dropped, l.NodeB, "NETFILTER_DROP", "NF_POLICY_DROP"}
		}},
		{fault: "docker-forward-drop", want: func(l *lab.Lab) outcome {
			return outcome{journey.Dropped, l.NodeB, "NETFILTER_DROP", "NF_POLICY_DROP"}
		}},
		{fault: "forward-drop-rule-nft", want: func(l *lab.Lab) outcome {
			return outcome{journey.Dropped, l.NodeB, "NETFILTER_DROP", "NF_RULE_DROP"}
		}},
		{fault: "reject-rst", want: func(l *lab.Lab) outcome {
			return outcome{journey.Rejected, l.NodeB, "NETFILTER_DROP", "NF_REJECT"}
		}},
		{fault: "service-no-endpoints", want: func(l *lab.Lab) outcome {
			return outcome{journey.Rejected, l.NodeA, "NETFILTER_DROP", "SERVICE_NO_ENDPOINTS"}
		}},
		{fault: "service-no-endpoints-nft", want: func(l *lab.Lab) outcome {
			return outcome{journey.Rejected, l.NodeA, "NETFILTER_DROP", "SERVICE_NO_ENDPOINTS"}
		}},
		{fault: "no-dnat", want: func(l *lab.Lab) outcome {
			return outcome{journey.Dropped, l.Router, "IP_INNOROUTES", "SERVICE_NOT_DNATED"}
		}},
		{fault: "no-listener", want: func(l *lab.Lab) outcome {
			return outcome{journey.Rejected, l.PodB, "NO_SOCKET", "NO_LISTENER"}
		}},
		{fault: "listener-loopback", want: func(l *lab.Lab) outcome {
			return outcome{journey.Rejected, l.PodB, "NO_SOCKET", "NO_LISTENER"}
		}},
		{fault: "no-route", want: func(l *lab.Lab) outcome {
			return outcome{journey.Dropped, l.Router, "IP_INNOROUTES", "NO_ROUTE"}
		}},
		{fault: "wrong-src", want: func(l *lab.Lab) outcome {
			return outcome{journey.Dropped, l.Router, "NETFILTER_DROP", "VXLAN_SRC_MISMATCH"}
		}},
		{fault: "wrong-vtep", want: func(l *lab.Lab) outcome {
			return outcome{journey.Dropped, l.Router, "IP_INNOROUTES", "VXLAN_DST_UNKNOWN"}
		}},
		{fault: "rp-filter", want: func(l *lab.Lab) outcome {
			return outcome{journey.Dropped, l.NodeB, "IP_RPFILTER", "RP_FILTER"}
		}},
		{fault: "nic-exit", want: func(l *lab.Lab) outcome {
			return outcome{journey.Left, l.NodeA, "", "LEFT_NODE"}
		}},
		{fault: "tc-drop-tcx", want: func(l *lab.Lab) outcome {
			return outcome{journey.Dropped, l.NodeB, "", "BPF_PROG_DROP"}
		}},
		{fault: "tc-drop-clsact", want: func(l *lab.Lab) outcome {
			return outcome{journey.Dropped, l.NodeB, "", "BPF_PROG_DROP"}
		}},
		{fault: "neigh-missing", want: func(l *lab.Lab) outcome {
			return outcome{journey.Dropped, l.NodeA, "NEIGH_FAILED", "NEIGH_FAILED"}
		}},
		{fault: "silent-dns",
			to:      func(l *lab.Lab) []string { return []string{"--proto", "udp", "--to", l.DNSService.Addr()} },
			traffic: dnsQuery,
			want: func(l *lab.Lab) outcome {
				return outcome{journey.Delivered, l.PodB, "", "NO_REPLY"}
			}},
		// The router refuses the too-big outer packet and node-a learns
		// the path MTU from its ICMP error: a second datagram on the same
		// lab would be refused in pod A already. One lab per way.
		{fault: "small-mtu", twoLabs: true,
			to:        func(l *lab.Lab) []string { return []string{"--proto", "udp", "--to", l.PodBIP + ":53"} },
			probeArgs: []string{"--probe-size", "1400"},
			traffic: func(ctx context.Context, t *testing.T, l *lab.Lab) {
				t.Helper()
				if err := l.SendUDP(ctx, l.PodA, l.PodBIP+":53", 1400, true); err != nil {
					t.Fatal(err)
				}
			},
			want: func(l *lab.Lab) outcome {
				return outcome{journey.Dropped, l.Router, "PKT_TOO_BIG", "MTU_EXCEEDED"}
			}},
	}
	for _, c := range cases {
		if c.to == nil {
			c.to = webTCP
		}
		if c.traffic == nil {
			c.traffic = connectWeb
		}
		t.Run(c.fault, func(t *testing.T) {
			faultyLab := func() *lab.Lab {
				l := lab.NewForTest(t, lab.Config{})
				if err := l.ApplyFault(c.fault); err != nil {
					t.Fatal(err)
				}
				return l
			}
			l := faultyLab()
			want := c.want(l)

			passive, pexit := tracePassive(t, l, c)
			if c.twoLabs {
				l = faultyLab()
			}
			probe, qexit := traceProbe(t, l, c)

			if got := outcomeOf(probe); got != want {
				t.Errorf("probe: %+v, want %+v", got, want)
			}
			if got := outcomeOf(passive); got != want {
				t.Errorf("passive: %+v, want %+v (probe: %+v)", got, want, outcomeOf(probe))
			}
			if pexit != qexit {
				t.Errorf("exit status: passive %d, probe %d", pexit, qexit)
			}
			if probe.Verdict.Device != passive.Verdict.Device || probe.Verdict.Hook != passive.Verdict.Hook {
				t.Errorf("verdict place: passive %s hook %q, probe %s hook %q",
					passive.Verdict.Device, passive.Verdict.Hook, probe.Verdict.Device, probe.Verdict.Hook)
			}
		})
	}
}

// tracePassive starts a trace without --probe, waits until it is tracing,
// makes the lab's own traffic and returns the one journey and the exit
// status.
func tracePassive(t *testing.T, l *lab.Lab, c passiveCase) (journey.Journey, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"--no-daemon", "--from-netns", l.PodA, "--timeout", "10s"}, c.to(l)...)
	tr := startTrace(t, args...)
	c.traffic(ctx, t, l)
	res := tr.wait(t)
	if len(res.journeys) != 1 {
		t.Fatalf("passive trace: %d journeys (exit %d), want 1", len(res.journeys), res.exit)
	}
	return res.journeys[0], res.exit
}

// traceProbe traces one packet skbtrail sends itself.
func traceProbe(t *testing.T, l *lab.Lab, c passiveCase) (journey.Journey, int) {
	t.Helper()
	args := append([]string{"--no-daemon", "--from-netns", l.PodA, "--probe", "--timeout", "5s"}, c.to(l)...)
	res := runTrace(t, append(args, c.probeArgs...)...)
	if len(res.journeys) != 1 {
		t.Fatalf("probe trace: %d journeys (exit %d), want 1", len(res.journeys), res.exit)
	}
	return res.journeys[0], res.exit
}
