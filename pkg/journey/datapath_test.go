package journey

import (
	"fmt"
	"testing"
	"time"
)

// withSkb switches the recorder to another skb (a new skb of the packet).
func (r *recorder) withSkb(skb uint64) *recorder { r.skb = skb; return r }

func at(ifindex uint32) func(*Event) { return func(e *Event) { e.Ifindex = ifindex } }

func hopList(j *Journey) string {
	var s []string
	for _, h := range j.Hops {
		s = append(s, h.Netns+"/"+h.Device+"/"+h.Event)
	}
	return fmt.Sprint(s)
}

func buildOne(t *testing.T, r *recorder) *Journey {
	t.Helper()
	js := build(t, r.evts, r.t+uint64(time.Second))
	if len(js) != 1 {
		t.Fatalf("got %d journeys", len(js))
	}
	return js[0]
}

// A native XDP program on node-b's eth0 (a veth) passed the packet: the
// veth freed the router's skb on arrival and a new skb of the same packet
// was received there right after. The journey follows the new skb to pod-b
// (no "consume" in the middle, delivered).
func TestSkbReplacedOnArrival(t *testing.T) {
	r := &recorder{t: 1_000_000, skb: 0xa, jid: 0x1000}
	r.add(KindTx, nsRtr, "rb", synPod, encap, at(3)).
		add(KindConsume, nsNodeB, "eth0", synPod, encap, at(2)).
		withSkb(0xb).
		add(KindRx, nsNodeB, "eth0", synPod, encap, at(2)).
		add(KindRx, nsNodeB, "flannel.1", synPod, at(5)).
		add(KindTx, nsNodeB, "vethpodb", synPod, at(4)).
		add(KindRx, nsPodB, "eth0", synPod, at(2)).
		add(KindConsume, 0, "", synPod)
	j := buildOne(t, r)
	want := "[router/rb/tx node-b/eth0/rx node-b/flannel.1/rx node-b/vethpodb/tx pod-b/eth0/rx pod-b/eth0/consume]"
	if got := hopList(j); got != want {
		t.Errorf("hops %s, want %s", got, want)
	}
	if v := j.Verdict; v.Kind != Delivered || v.Netns != "pod-b" {
		t.Errorf("verdict %+v, want delivered in pod-b", v)
	}
}

// The same, but nothing carried the packet on (XDP dropped it): lost after
// the router's transmission, not delivered at node-b's eth0.
func TestSkbConsumedOnArrivalIsLost(t *testing.T) {
	r := &recorder{t: 1_000_000, skb: 0xa, jid: 0x1000}
	r.add(KindTx, nsRtr, "rb", synPod, encap, at(3)).
		add(KindConsume, nsNodeB, "eth0", synPod, encap, at(2))
	j := buildOne(t, r)
	if v := j.Verdict; v.Kind != Lost || v.Netns != "router" || v.Device != "rb" {
		t.Errorf("verdict %+v, want lost in router at rb", v)
	}
	if !ConsumedOnArrival(j.Events) {
		t.Error("ConsumedOnArrival = false")
	}
	// a new skb of the packet much later, or at another device, is not
	// its continuation
	r = &recorder{t: 1_000_000, skb: 0xa, jid: 0x1000}
	r.add(KindTx, nsRtr, "rb", synPod, encap, at(3)).
		add(KindConsume, nsNodeB, "eth0", synPod, encap, at(2)).
		withSkb(0xb).
		add(KindRx, nsNodeB, "flannel.1", synPod, at(5))
	if j := buildOne(t, r); j.Verdict.Kind != Lost {
		t.Errorf("verdict %+v, want lost: the new skb was received at another device", j.Verdict)
	}
}

// A consume where the skb was transmitted (a NIC's driver, a tun reader)
// is not "consumed on arrival".
func TestConsumeAtTransmitterIsNotArrival(t *testing.T) {
	r := &recorder{t: 1_000_000, skb: 0xa, jid: 0x1000}
	r.add(KindTx, nsNodeA, "nic0", synPod, at(9)).
		add(KindConsume, nsNodeA, "nic0", synPod, at(9))
	j := buildOne(t, r)
	if ConsumedOnArrival(j.Events) || j.Verdict.Kind == Lost {
		t.Errorf("verdict %+v: a consume by the transmitting side is not a loss on arrival", j.Verdict)
	}
}

// bpf_redirect_peer on node-b's flannel.1 ingress moves the skb into
// pod-b's eth0 inside the receive path: the next thing seen is in pod-b
// without a transmission; a "redirect" hop says how it got there.
func TestRedirectPeerHop(t *testing.T) {
	r := forwardPath()
	r.add(KindNF, nsPodB, "eth0", synPod, nf(HookPreRouting, 0)).
		add(KindConsume, nsPodB, "eth0", synPod)
	j := buildOne(t, r)
	n := len(j.Hops)
	if n < 4 {
		t.Fatalf("hops %s", hopList(j))
	}
	got := fmt.Sprint(j.Hops[n-4].Netns+"/"+j.Hops[n-4].Device+"/"+j.Hops[n-4].Event, " ", hopList(&Journey{Hops: j.Hops[n-3:]}))
	want := "node-b/flannel.1/rx [pod-b/eth0/redirect pod-b/eth0/nf:PREROUTING pod-b/eth0/consume]"
	if got != want {
		t.Errorf("hops end %s, want %s", got, want)
	}
	// a veth transmission into another namespace is not a redirect
	for _, h := range j.Hops[:n-3] {
		if h.Event == HopRedirect {
			t.Errorf("hops %s: redirect where a device transmitted", hopList(j))
		}
	}
}

// The output path freed the forwarded skb after POSTROUTING at node-a's
// flannel.1, before the device transmitted it, and a copy of the packet
// was transmitted there right after (an IPv6 UDP datagram whose headroom
// was short for the VXLAN device): the journey goes on with the copy.
func TestSkbCopiedOnOutput(t *testing.T) {
	r := &recorder{t: 1_000_000, skb: 0xa, jid: 0x1000}
	r.add(KindTx, nsPodA, "eth0", synPod, at(2)).
		add(KindNF, nsNodeA, "flannel.1", synPod, nf(HookPostRouting, 4), at(5)).
		add(KindConsume, nsNodeA, "flannel.1", synPod, at(5)).
		withSkb(0xb).
		add(KindTx, nsNodeA, "flannel.1", synPod, at(5)).
		add(KindTx, nsNodeA, "eth0", synPod, encap, at(3)).
		add(KindDrop, nsRtr, "ra", synPod, encap, at(2))
	j := buildOne(t, r)
	if v := j.Verdict; v.Kind != Dropped || v.Netns != "router" {
		t.Errorf("verdict %+v, want dropped in router (the copy's fate)", v)
	}
	// without a copy transmitted at that device, the free ends the journey
	r = &recorder{t: 1_000_000, skb: 0xa, jid: 0x1000}
	r.add(KindTx, nsPodA, "eth0", synPod, at(2)).
		add(KindNF, nsNodeA, "flannel.1", synPod, nf(HookPostRouting, 4), at(5)).
		add(KindConsume, nsNodeA, "flannel.1", synPod, at(5)).
		withSkb(0xb).
		add(KindTx, nsNodeA, "eth0", synPod, encap, at(3))
	if j := buildOne(t, r); j.Verdict.Kind == Dropped {
		t.Errorf("verdict %+v: a copy seen at another device is no continuation", j.Verdict)
	}

	// no netfilter observer in node-a yet (a passive trace's first
	// packet): received on cni0, freed at flannel.1, the copy transmitted
	// there goes on
	r = &recorder{t: 1_000_000, skb: 0xa, jid: 0x1000}
	r.add(KindTx, nsPodA, "eth0", synPod, at(2)).
		add(KindRx, nsNodeA, "cni0", synPod, at(4)).
		add(KindConsume, nsNodeA, "flannel.1", synPod, at(5)).
		withSkb(0xb).
		add(KindTx, nsNodeA, "flannel.1", synPod, at(5)).
		add(KindTx, nsNodeA, "eth0", synPod, encap, at(3)).
		add(KindDrop, nsRtr, "ra", synPod, encap, at(2))
	if v := buildOne(t, r).Verdict; v.Kind != Dropped || v.Netns != "router" {
		t.Errorf("verdict %+v, want dropped in router (the copy's fate, no observer)", v)
	}
	// freed at the device it came in on: delivered there, no copy
	r = &recorder{t: 1_000_000, skb: 0xa, jid: 0x1000}
	r.add(KindTx, nsPodA, "eth0", synPod, at(2)).
		add(KindRx, nsNodeA, "cni0", synPod, at(4)).
		add(KindConsume, nsNodeA, "cni0", synPod, at(4)).
		withSkb(0xb).
		add(KindTx, nsNodeA, "cni0", synPod, at(4))
	if v := buildOne(t, r).Verdict; v.Kind == Dropped || v.Netns != "node-a" {
		t.Errorf("verdict %+v, want the end in node-a: freed where it came in is no output copy", v)
	}
}
