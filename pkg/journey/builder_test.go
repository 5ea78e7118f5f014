package journey

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

const (
	nsPodA  = 101
	nsNodeA = 102
	nsRtr   = 103
	nsNodeB = 104
	nsPodB  = 105
)

var names = map[uint32]string{nsPodA: "pod-a", nsNodeA: "node-a", nsRtr: "router", nsNodeB: "node-b", nsPodB: "pod-b"}

func tcp(src string, sport uint16, dst string, dport uint16, flags uint8) Tuple {
	return Tuple{Proto: ProtoTCP, Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Sport: sport, Dport: dport, TCPFlags: flags}
}

var (
	synSvc = tcp("10.244.0.5", 40000, "10.96.0.100", 80, 0x02)
	synPod = tcp("10.244.0.5", 40000, "10.244.1.2", 80, 0x02)
	outer  = Tuple{Proto: ProtoUDP, Src: netip.MustParseAddr("192.0.2.10"), Dst: netip.MustParseAddr("198.51.100.20"), Sport: 51000, Dport: 8472}
)

// recorder builds the events of one skb step by step.
type recorder struct {
	t    uint64
	skb  uint64
	jid  uint64
	evts []Event
}

func (r *recorder) add(kind Kind, ns uint32, dev string, pkt Tuple, mod ...func(*Event)) *recorder {
	r.t += 5000
	e := Event{TimeNs: r.t, Skb: r.skb, Journey: r.jid, Netns: ns, Ifname: dev, Kind: kind, Source: SourceTracepoint, Pkt: pkt}
	for _, m := range mod {
		m(&e)
	}
	r.evts = append(r.evts, e)
	return r
}

func encap(e *Event) { e.Encap, e.Outer, e.VNI = true, outer, 1 }

func nf(hook, stage uint8) func(*Event) {
	return func(e *Event) { e.Hook, e.Stage, e.Source = hook, stage, SourceNetfilter }
}

// forwardPath is pod-a -> node-a (DNAT) -> vxlan -> router -> node-b.
func forwardPath() *recorder {
	r := &recorder{t: 1_000_000, skb: 0xffff1, jid: 0x1000}
	r.add(KindTx, nsPodA, "eth0", synSvc).
		add(KindRx, nsNodeA, "vethpoda", synSvc).
		add(KindRx, nsNodeA, "cni0", synSvc).
		add(KindNF, nsNodeA, "cni0", synSvc, nf(HookPreRouting, 0)).
		add(KindNF, nsNodeA, "cni0", synPod, nf(HookPreRouting, 2)).
		add(KindTx, nsNodeA, "flannel.1", synPod).
		add(KindTx, nsNodeA, "eth0", synPod, encap).
		add(KindRx, nsRtr, "ra", synPod, encap).
		add(KindTx, nsRtr, "rb", synPod, encap).
		add(KindRx, nsNodeB, "eth0", synPod, encap).
		add(KindRx, nsNodeB, "flannel.1", synPod)
	return r
}

func newTestBuilder() *Builder {
	return NewBuilder(Options{
		NetnsName: func(ino uint32) string { return names[ino] },
		ReasonName: func(r uint32) string {
			return map[uint32]string{12: "NETFILTER_DROP", 2: "NOT_SPECIFIED", 3: "NO_SOCKET", 19: "IP_INNOROUTES"}[r]
		},
		Grace: 100 * time.Millisecond,
		Idle:  time.Second,
	})
}

func build(t *testing.T, evs []Event, now uint64) []*Journey {
	t.Helper()
	b := newTestBuilder()
	for _, e := range evs {
		b.Add(e)
	}
	return b.Expire(now)
}

func TestDeliveredWithDNATAndEncap(t *testing.T) {
	r := forwardPath()
	r.add(KindTx, nsNodeB, "cni0", synPod).
		add(KindRx, nsPodB, "eth0", synPod).
		add(KindConsume, 0, "", synPod)
	js := build(t, r.evts, r.t+uint64(time.Second))
	if len(js) != 1 {
		t.Fatalf("got %d journeys", len(js))
	}
	j := js[0]
	if j.Verdict.Kind != Delivered || j.Verdict.Netns != "pod-b" || j.Verdict.Device != "eth0" {
		t.Errorf("verdict %+v", j.Verdict)
	}
	if j.Packet.Dst != "10.96.0.100" || j.Packet.TCPFlags != "SYN" || j.Packet.Proto != "tcp" {
		t.Errorf("packet %+v", j.Packet)
	}
	if len(j.Rewrites) != 1 || j.Rewrites[0].Kind != "DNAT" || j.Rewrites[0].Hook != "PREROUTING" || j.Rewrites[0].Netns != "node-a" || j.Rewrites[0].Between != "" ||
		j.Rewrites[0].After.Dst != "10.244.1.2" || j.Rewrites[0].Before.Dst != "10.96.0.100" {
		t.Errorf("rewrites %+v", j.Rewrites)
	}
	if len(j.Encaps) != 1 {
		t.Fatalf("encaps %+v", j.Encaps)
	}
	e := j.Encaps[0]
	if e.Device != "flannel.1" || e.Netns != "node-a" || e.OuterSrc != "192.0.2.10" || e.OuterDst != "198.51.100.20" || e.OuterDport != 8472 || e.VNI != 1 || e.Underlay != "eth0" {
		t.Errorf("encap %+v", e)
	}
	// nf stages of one hook visit collapse into one hop
	var nfHops int
	for _, h := range j.Hops {
		if h.Event == "nf:PREROUTING" {
			nfHops++
		}
	}
	if nfHops != 1 {
		t.Errorf("%d nf:PREROUTING hops, want 1: %+v", nfHops, j.Hops)
	}
	if last := j.Hops[len(j.Hops)-1]; last.Netns != "pod-b" || last.Event != "consume" {
		t.Errorf("last hop %+v (a free without device inherits the netns)", last)
	}
	if j.Hops[0].TUs != 0 || j.Hops[1].TUs != 5 {
		t.Errorf("hop times %d %d, want 0 5", j.Hops[0].TUs, j.Hops[1].TUs)
	}
}

func TestDroppedAttributedToHookAndTable(t *testing.T) {
	r := forwardPath()
	r.add(KindNF, nsNodeB, "flannel.1", synPod, nf(HookPreRouting, 2)).
		add(KindNF, nsNodeB, "flannel.1", synPod, nf(HookForward, 0)).
		add(KindDrop, nsNodeB, "flannel.1", synPod, func(e *Event) { e.Reason = 12 })
	js := build(t, r.evts, r.t+uint64(time.Second))
	v := js[0].Verdict
	// FORWARD has one observer: the drop is after it, in one of its tables
	// (the rule counters name the table and rule: pkg/diagnose)
	if v.Kind != Dropped || v.Netns != "node-b" || v.Device != "flannel.1" || v.Reason != "NETFILTER_DROP" || v.Hook != "FORWARD" || v.Table != "mangle/filter/security" {
		t.Errorf("verdict %+v, want dropped node-b flannel.1 NETFILTER_DROP FORWARD mangle/filter/security", v)
	}
}

func TestLostWhenLastSeenLeaving(t *testing.T) {
	r := forwardPath()
	r.evts = r.evts[:7] // last event: tx on node-a eth0, encapsulated
	b := newTestBuilder()
	for _, e := range r.evts {
		b.Add(e)
	}
	if js := b.Expire(r.t + uint64(50*time.Millisecond)); len(js) != 0 {
		t.Fatalf("journey closed before idle: %+v", js[0].Verdict)
	}
	js := b.Close()
	if len(js) != 1 || js[0].Verdict.Kind != Lost || js[0].Verdict.Netns != "node-a" || js[0].Verdict.Device != "eth0" {
		t.Fatalf("verdict %+v, want lost at node-a eth0", js[0].Verdict)
	}
}

func TestRejectedByReset(t *testing.T) {
	r := forwardPath()
	r.add(KindDrop, nsNodeB, "flannel.1", synPod, func(e *Event) { e.Reason = 12 })
	rst := &recorder{t: r.t, skb: 0xbbbb, jid: r.jid | 1}
	rst.add(KindTx, nsNodeB, "flannel.1", tcp("10.244.1.2", 80, "10.244.0.5", 40000, 0x14))
	js := build(t, append(r.evts, rst.evts...), rst.t+uint64(time.Second))
	if js[0].Verdict.Kind != Rejected || js[0].Verdict.Reason != "NETFILTER_DROP" {
		t.Errorf("verdict %+v, want rejected", js[0].Verdict)
	}
	if js[0].Reply == nil || js[0].Reply.Packet.TCPFlags != "ACK|RST" {
		t.Errorf("reply %+v", js[0].Reply)
	}
}

// A UDP datagram to a closed port: the destination frees it (NO_SOCKET)
// and answers ICMP (ICMPv6) port unreachable, quoting it: rejected. A
// router's "no route" for a packet it drops is no refusal: dropped.
func TestRejectedByPortUnreachable(t *testing.T) {
	for _, c := range []struct {
		name             string
		src, dst         string
		proto, typ, code uint8
		dropNs           uint32
		reason           uint32
		want             string
	}{
		{"ipv4 port unreachable", "10.244.0.5", "10.244.1.2", ProtoICMP, 3, 3, nsPodB, 3, Rejected},
		{"ipv6 port unreachable", "fd00:10:244::5", "fd00:10:244:1::2", ProtoICMPv6, 1, 4, nsPodB, 3, Rejected},
		{"ipv4 router no route", "10.244.0.5", "10.244.1.2", ProtoICMP, 3, 1, nsRtr, 19, Dropped},
		{"ipv6 router no route", "fd00:10:244::5", "fd00:10:244:1::2", ProtoICMPv6, 1, 0, nsRtr, 19, Dropped},
	} {
		dgram := Tuple{Proto: ProtoUDP, Src: netip.MustParseAddr(c.src), Dst: netip.MustParseAddr(c.dst), Sport: 40000, Dport: 9}
		r := &recorder{t: 1000, skb: 0xaaaa, jid: 0x4000}
		r.add(KindTx, nsPodA, "eth0", dgram).add(KindDrop, c.dropNs, "eth0", dgram, func(e *Event) { e.Reason = c.reason })
		errPkt := Tuple{Proto: c.proto, Src: netip.MustParseAddr(c.dst), Dst: netip.MustParseAddr(c.src), ICMPType: c.typ, ICMPCode: c.code}
		q := &recorder{t: r.t, skb: 0xbbbb, jid: r.jid}
		quote := func(e *Event) { e.Quote = true }
		q.add(KindTx, c.dropNs, "eth0", errPkt, quote).add(KindRx, nsPodA, "eth0", errPkt, quote)
		js := build(t, append(r.evts, q.evts...), q.t+uint64(time.Second))
		if len(js) != 1 || js[0].Verdict.Kind != c.want {
			t.Errorf("%s: %+v, want %s", c.name, js[0].Verdict, c.want)
		}
	}
}

// An echo reply back in the sender's namespace is delivered even though
// IPv4 frees it with NO_SOCKET when no ping socket (only a raw one) wants
// it.
func TestEchoReplyDeliveredToRawSocket(t *testing.T) {
	echo := Tuple{Proto: ProtoICMP, Src: netip.MustParseAddr("10.244.0.5"), Dst: netip.MustParseAddr("10.244.1.2"), ICMPType: 8}
	reply := Tuple{Proto: ProtoICMP, Src: echo.Dst, Dst: echo.Src, ICMPType: 0}
	r := &recorder{t: 1000, skb: 0xaaaa, jid: 0x6000}
	r.add(KindTx, nsPodA, "eth0", echo).add(KindRx, nsPodB, "eth0", echo).add(KindConsume, nsPodB, "", echo)
	back := &recorder{t: r.t, skb: 0xbbbb, jid: r.jid | 1}
	back.add(KindTx, nsPodB, "eth0", reply).add(KindRx, nsPodA, "eth0", reply).add(KindDrop, nsPodA, "eth0", reply, func(e *Event) { e.Reason = 3 })
	js := build(t, append(r.evts, back.evts...), back.t+uint64(time.Second))
	if len(js) != 1 || js[0].Reply == nil || js[0].Reply.Verdict != Delivered || js[0].Reply.Reason != "" {
		t.Fatalf("reply %+v, want delivered", js[0].Reply)
	}
	// freed elsewhere with NO_SOCKET it stays a drop
	back2 := &recorder{t: r.t, skb: 0xcccc, jid: r.jid | 1}
	back2.add(KindTx, nsPodB, "eth0", reply).add(KindDrop, nsNodeB, "cni0", reply, func(e *Event) { e.Reason = 3 })
	js = build(t, append(r.evts, back2.evts...), back2.t+uint64(time.Second))
	if len(js) != 1 || js[0].Reply == nil || js[0].Reply.Verdict != Dropped {
		t.Fatalf("reply %+v, want dropped", js[0].Reply)
	}
}

func TestReusedSkbAddressStartsAnotherPacket(t *testing.T) {
	r := &recorder{t: 1000, skb: 0xabc, jid: 0x2000}
	r.add(KindTx, nsPodA, "eth0", synSvc).
		add(KindRx, nsNodeA, "vethpoda", synSvc)
	// the kernel freed it without a tracepoint and reused the address for the ACK
	ack := synSvc
	ack.TCPFlags = 0x10
	r.add(KindTx, nsPodA, "eth0", ack)
	b := newTestBuilder()
	for _, e := range r.evts {
		b.Add(e)
	}
	j := b.Close()[0]
	if len(j.Hops) != 2 {
		t.Errorf("hops %+v: the ACK on the reused address must not join the SYN's path", j.Hops)
	}
}

func TestLostEventsCountedPerOpenJourney(t *testing.T) {
	b := newTestBuilder()
	r := forwardPath()
	b.Add(r.evts[0])
	b.AddLost(7)
	for _, e := range r.evts[1:] {
		b.Add(e)
	}
	j := b.Close()[0]
	if j.LostEvents != 7 || b.LostTotal != 7 {
		t.Errorf("lost %d (total %d), want 7", j.LostEvents, b.LostTotal)
	}
}

func TestLateEventsOfClosedJourneyAreCounted(t *testing.T) {
	r := forwardPath()
	r.add(KindDrop, nsNodeB, "flannel.1", synPod, func(e *Event) { e.Reason = 12 })
	b := newTestBuilder()
	for _, e := range r.evts {
		b.Add(e)
	}
	if js := b.Expire(r.t + uint64(time.Second)); len(js) != 1 {
		t.Fatalf("got %d journeys", len(js))
	}
	b.Add(r.evts[0])
	if b.Late != 1 || b.Open() != 0 {
		t.Errorf("late %d open %d, want 1 0", b.Late, b.Open())
	}
}

func TestUntrackedDropIsOwnJourney(t *testing.T) {
	b := newTestBuilder()
	b.Add(Event{TimeNs: 5, Skb: 9, Netns: nsNodeB, Ifname: "eth0", Kind: KindDrop, Reason: 12, Pkt: synPod})
	js := b.Expire(6)
	if len(js) != 1 || js[0].Verdict.Kind != Dropped || js[0].Verdict.Netns != "node-b" {
		t.Fatalf("%+v", js)
	}
}

func TestMaxOpenClosesOldest(t *testing.T) {
	b := NewBuilder(Options{MaxOpen: 2})
	for i := uint64(1); i <= 3; i++ {
		b.Add(Event{TimeNs: i, Skb: i, Journey: i * 2, Kind: KindTx, Pkt: synSvc})
	}
	if b.Open() != 2 {
		t.Fatalf("open %d, want 2", b.Open())
	}
	js := b.Expire(4)
	if len(js) != 1 || js[0].ID != 2 {
		t.Fatalf("closed %+v, want the oldest (id 2)", js)
	}
}

func TestTCPFlagsString(t *testing.T) {
	for f, want := range map[uint8]string{0x02: "SYN", 0x12: "SYN|ACK", 0x14: "ACK|RST", 0x11: "ACK|FIN", 0: ""} {
		if got := TCPFlagsString(f); got != want {
			t.Errorf("TCPFlagsString(%#x) = %q, want %q", f, got, want)
		}
	}
}

func TestDeliveredWaitsForReply(t *testing.T) {
	udp := Tuple{Proto: ProtoUDP, Src: netip.MustParseAddr("10.244.0.5"), Dst: netip.MustParseAddr("10.244.1.2"), Sport: 5000, Dport: 53}
	r := &recorder{t: 1000, skb: 0x77, jid: 0x3000}
	r.add(KindTx, nsPodA, "eth0", udp).add(KindRx, nsPodB, "eth0", udp).add(KindConsume, nsPodB, "", udp)
	b := NewBuilder(Options{Grace: 100 * time.Millisecond, ReplyWait: time.Second})
	for _, e := range r.evts {
		b.Add(e)
	}
	if js := b.Expire(r.t + uint64(500*time.Millisecond)); len(js) != 0 {
		t.Fatal("delivered request closed before its reply could come")
	}
	js := b.Expire(r.t + uint64(1100*time.Millisecond))
	if len(js) != 1 || js[0].Reply != nil || js[0].Verdict.Kind != Delivered {
		t.Fatalf("journeys %+v, want one delivered without reply", js)
	}

	// a reply closes it after the grace period
	b = NewBuilder(Options{Grace: 100 * time.Millisecond, ReplyWait: time.Second})
	for _, e := range r.evts {
		b.Add(e)
	}
	rep := udp
	rep.Src, rep.Dst, rep.Sport, rep.Dport = udp.Dst, udp.Src, udp.Dport, udp.Sport
	b.Add(Event{TimeNs: r.t + 1000, Skb: 0x88, Journey: r.jid | 1, Netns: nsPodB, Kind: KindTx, Pkt: rep})
	if js := b.Expire(r.t + uint64(200*time.Millisecond)); len(js) != 1 || js[0].Reply == nil {
		t.Fatalf("journeys %+v, want one with a reply", js)
	}
}

func TestTablesAfterStage(t *testing.T) {
	for _, c := range []struct {
		hook, stage uint8
		want        string
	}{
		{HookForward, 0, "mangle/filter/security"},     // -301 .. end: FORWARD's only observer
		{HookPreRouting, 0, "raw/mangle/nat"},          // -301 .. -99: up to DNAT
		{HookPreRouting, 2, ""},                        // -99 .. end
		{HookLocalOut, 0, "raw/mangle/nat"},            // -301 .. -99: up to DNAT
		{HookLocalOut, 2, "filter/security"},           // -99 .. end
		{HookPostRouting, 0, "mangle/nat"},             // -301 .. 101: SNAT
		{HookLocalIn, 0, "mangle/filter/security/nat"}, // -301 .. 101
		{HookLocalIn, 5, ""},                           // 101 .. end: handed to the socket
	} {
		if got := TableAfterStage(c.hook, c.stage); got != c.want {
			t.Errorf("TableAfterStage(%s, %d) = %q, want %q", HookName(c.hook), c.stage, got, c.want)
		}
	}
	if lo, hi := StageRange(HookForward, 0); lo != -301 || hi != 1<<31-1 {
		t.Errorf("StageRange(FORWARD, last) = %d, %d", lo, hi)
	}
}

// firstLife keeps the first skb's events up to its free, in order, when
// another skb's events (a clone, a copy) are interleaved with them; it
// compacts them in place.
func TestFirstLifeInterleaved(t *testing.T) {
	ev := func(skb uint64, ns uint32, k Kind) Event {
		return Event{Skb: skb, Netns: ns, Kind: k, Pkt: synPod}
	}
	evs := []Event{
		ev(1, nsPodA, KindTx), ev(2, nsNodeA, KindRx), ev(1, nsNodeA, KindRx),
		ev(2, nsNodeA, KindDrop), ev(1, nsNodeB, KindRx), ev(1, nsPodB, KindConsume), ev(1, nsPodB, KindRx),
	}
	got := firstLife(evs)
	var kinds []string
	for _, e := range got {
		if e.Skb != 1 {
			t.Fatalf("event of skb %d in the first life: %+v", e.Skb, got)
		}
		kinds = append(kinds, fmt.Sprintf("%d/%s", e.Netns, e.Kind))
	}
	want := fmt.Sprintf("[%d/tx %d/rx %d/rx %d/consume]", nsPodA, nsNodeA, nsNodeB, nsPodB)
	if fmt.Sprint(kinds) != want {
		t.Errorf("first life %v, want %s", kinds, want)
	}
}
