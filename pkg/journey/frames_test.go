package journey

import (
	"net/netip"
	"testing"
	"time"
)

func captured(e Event, b ...byte) Event {
	e.Capture = Capture{Data: b, OrigLen: uint32(len(b) + 10)}
	return e
}

// TestAddFrames: one frame per captured event, wall-clock times, reverse
// events marked as replies; within one visit of a netfilter hook only the
// packet as it entered and, when the hook changed it, as it left.
func TestAddFrames(t *testing.T) {
	tup := Tuple{Proto: ProtoTCP, Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), Sport: 1, Dport: 2}
	nf := func(ts uint64, stage uint8, b ...byte) Event {
		return captured(Event{TimeNs: ts, Skb: 1, Netns: 2, Kind: KindNF, Hook: HookPreRouting, Stage: stage, Ifname: "cni0", Pkt: tup}, b...)
	}
	j := &Journey{
		Names: map[uint32]string{1: "pod-a", 2: "node-a"},
		Events: []Event{
			captured(Event{TimeNs: 1000, Skb: 1, Netns: 1, Kind: KindTx, Ifname: "eth0", Pkt: tup}, 1, 2, 3),
			Event{TimeNs: 1500, Skb: 1, Netns: 2, Kind: KindRx, Ifname: "veth"}, // no bytes: no frame
			nf(2000, 0, 7, 7), nf(2100, 1, 7, 7), nf(2200, 2, 8, 8), // DNAT at the last stage
			nf(3000, 0, 9), nf(3100, 1, 9), // a second visit, unchanged
			captured(Event{TimeNs: 4000, Skb: 1, Netns: 2, Kind: KindDrop, Ifname: "cni0", Pkt: tup, Capture: Capture{L2Len: 14}}, make([]byte, 20)...),
		},
		ReplyEvents: []Event{captured(Event{TimeNs: 5000, Skb: 9, Netns: 2, Kind: KindRx, Ifname: "cni0", Pkt: tup}, 5)},
	}
	j.Events[len(j.Events)-1].Capture.L2Len = 14
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	j.AddFrames(func(ns uint64) time.Time { return base.Add(time.Duration(ns)) })
	type want struct {
		netns, event string
		first        byte
		tus          uint64
		reply        bool
		link         string
	}
	wants := []want{
		{"pod-a", "tx", 1, 0, false, LinkIP},
		{"node-a", "nf:PREROUTING", 7, 1, false, LinkIP},
		{"node-a", "nf:PREROUTING", 8, 1, false, LinkIP},
		{"node-a", "nf:PREROUTING", 9, 2, false, LinkIP},
		{"node-a", "drop", 0, 3, false, LinkEthernet},
		{"node-a", "rx", 5, 4, true, LinkIP},
	}
	if len(j.Frames) != len(wants) {
		t.Fatalf("%d frames, want %d: %+v", len(j.Frames), len(wants), j.Frames)
	}
	for i, w := range wants {
		f := j.Frames[i]
		if f.Netns != w.netns || f.Event != w.event || f.Data[0] != w.first || f.TUs != w.tus || f.Reply != w.reply || f.Link != w.link {
			t.Errorf("frame %d = %+v, want %+v", i, f, w)
		}
		if f.Len != uint32(len(f.Data)+10) {
			t.Errorf("frame %d len %d", i, f.Len)
		}
	}
	if !j.Frames[0].Time.Equal(base.Add(1000)) {
		t.Errorf("time %v", j.Frames[0].Time)
	}
	c := j.Clone()
	c.Frames[0].Netns = "changed"
	if j.Frames[0].Netns != "pod-a" {
		t.Error("Clone shares the frames")
	}
}

// TestICMPErrorIsNoReply: an ICMP error about the journey's packet (the
// router's "fragmentation needed" about the VXLAN packet) is kept as the
// journey's ErrorEvents and drawn in its frames; it is not a reply and
// does not make the drop a rejection.
func TestICMPErrorIsNoReply(t *testing.T) {
	r := &recorder{t: 1_000_000, skb: 0xffff1, jid: 0x1000}
	r.add(KindTx, nsPodA, "eth0", synPod).
		add(KindTx, nsNodeA, "eth0", synPod, encap).
		add(KindRx, nsRtr, "ra", synPod, encap).
		add(KindDrop, nsRtr, "ra", synPod, encap, func(e *Event) { e.Reason = 2 })
	icmp := Tuple{Proto: ProtoICMP, Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("192.0.2.10"), ICMPType: 3, ICMPCode: 4}
	q := &recorder{t: r.t, skb: 0xeeee1, jid: 0x1001}
	quote := func(e *Event) { e.Quote, e.Capture = true, Capture{Data: []byte{0x45}, OrigLen: 576} }
	q.add(KindTx, nsRtr, "ra", icmp, quote).add(KindRx, nsNodeA, "eth0", icmp, quote).add(KindConsume, nsNodeA, "", icmp, quote)
	js := build(t, append(r.evts, q.evts...), q.t+uint64(time.Second))
	if len(js) != 1 {
		t.Fatalf("%d journeys", len(js))
	}
	j := js[0]
	if j.Verdict.Kind != Dropped || j.Reply != nil || len(j.ReplyEvents) != 0 {
		t.Fatalf("verdict %+v reply %+v: an ICMP error is no reply", j.Verdict, j.Reply)
	}
	if len(j.ErrorEvents) != 3 {
		t.Fatalf("%d error events, want 3", len(j.ErrorEvents))
	}
	j.AddFrames(nil)
	if len(j.Frames) != 3 || j.Frames[0].Event != "icmp-error tx" || !j.Frames[0].Reply || j.Frames[0].Netns != names[nsRtr] {
		t.Errorf("frames %+v", j.Frames)
	}
}
