package diagnose

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/sockdiag"
)

func withSockets(d *Diagnoser, socks ...sockdiag.Socket) {
	d.sockets = func(uint32) ([]sockdiag.Socket, error) { return socks, nil }
	d.process = func(ino uint32) (sockdiag.Process, bool) {
		return sockdiag.Process{PID: 42, Comm: "coredns"}, ino == 99
	}
}

func TestSocketQueueFull(t *testing.T) {
	udp := journey.Tuple{Proto: journey.ProtoUDP, Src: netip.MustParseAddr("10.244.0.5"), Dst: netip.MustParseAddr("10.244.1.2"), Sport: 4000, Dport: 53}
	syn := tcp("10.244.0.5", "10.244.1.2", 4000, 80)
	dropped := func(pkt journey.Tuple, reason string) *journey.Journey {
		j := build(t, ev(journey.KindTx, podA, "eth0", pkt), ev(journey.KindRx, podB, "eth0", pkt), ev(journey.KindDrop, podB, "eth0", pkt))
		j.Verdict.Kind, j.Verdict.Reason = journey.Dropped, reason
		return j
	}
	consumed := func() *journey.Journey {
		j := build(t, ev(journey.KindTx, podA, "eth0", syn), ev(journey.KindRx, podB, "eth0", syn), ev(journey.KindConsume, podB, "eth0", syn))
		if j.Verdict.Kind != journey.Delivered {
			t.Fatalf("verdict %+v, want delivered", j.Verdict)
		}
		return j
	}
	rcv := sockdiag.Socket{Proto: "udp", Local: addrPort("10.244.1.2:53"), RmemAlloc: 2304, RcvBuf: 2304, Drops: 7, Inode: 99}
	wild := sockdiag.Socket{Proto: "udp", Local: addrPort("0.0.0.0:53"), Inode: 5}
	full := sockdiag.Socket{Proto: "tcp", Local: addrPort("0.0.0.0:80"), RQueue: 129, WQueue: 128, Inode: 99}
	roomy := sockdiag.Socket{Proto: "tcp", Local: addrPort("0.0.0.0:80"), RQueue: 3, WQueue: 128, Inode: 99}
	cases := []struct {
		name   string
		j      *journey.Journey
		socks  []sockdiag.Socket
		want   bool
		phrase []string
	}{
		{"udp receive buffer", dropped(udp, "SOCKET_RCVBUFF"), []sockdiag.Socket{wild, rcv}, true,
			[]string{"receive buffer of the udp socket 10.244.1.2:53 in pod-b (held by coredns (pid 42))", "2304 of 2304 bytes (SO_RCVBUF)", "7 packets dropped", "(SOCKET_RCVBUFF)"}},
		{"reason without the socket", dropped(udp, "SOCKET_RCVBUFF"), nil, true,
			[]string{"receive buffer of the udp socket 10.244.1.2:53 in pod-b is full; the kernel dropped"}},
		{"listen overflow", dropped(syn, "TCP_LISTEN_OVERFLOW"), []sockdiag.Socket{full}, true,
			[]string{"accept queue of the tcp socket 0.0.0.0:80", "129 connections wait for accept()", "is 128"}},
		{"backlog", dropped(syn, "SOCKET_BACKLOG"), nil, true, []string{"backlog of the tcp socket 10.244.1.2:80"}},
		{"SYN at a full accept queue", consumed(), []sockdiag.Socket{full}, true,
			[]string{"accept queue", "held by coredns", "ListenOverflows"}},
		{"SYN at a listener with room", consumed(), []sockdiag.Socket{roomy}, false, nil},
		{"other drop", dropped(udp, "NETFILTER_DROP"), []sockdiag.Socket{rcv}, false, nil},
	}
	for _, c := range cases {
		d := New(Config{})
		withSockets(d, c.socks...)
		d.Diagnose(c.j)
		var f *journey.Finding
		for i := range c.j.Findings {
			if c.j.Findings[i].Code == CodeSocketQueueFull {
				f = &c.j.Findings[i]
			}
		}
		if (f != nil) != c.want {
			t.Errorf("%s: findings %+v, want SOCKET_QUEUE_FULL: %v", c.name, c.j.Findings, c.want)
			continue
		}
		if f == nil {
			continue
		}
		if c.j.Findings[0].Code != CodeSocketQueueFull || f.Netns != "pod-b" || f.Severity != journey.SeverityError || f.Advice == "" {
			t.Errorf("%s: findings %+v", c.name, c.j.Findings)
		}
		for _, p := range c.phrase {
			if !strings.Contains(f.Message, p) {
				t.Errorf("%s: message %q lacks %q", c.name, f.Message, p)
			}
		}
	}
}
