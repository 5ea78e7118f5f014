package journey

import (
	"testing"
	"time"
)

// Two lab "nodes" share a kernel: each builder keeps to its namespaces.
func scopedBuilder(in ...uint32) *Builder {
	set := map[uint32]bool{}
	for _, ino := range in {
		set[ino] = true
	}
	return NewBuilder(Options{
		NetnsName: func(ino uint32) string { return names[ino] },
		ReasonName: func(r uint32) string {
			return map[uint32]string{12: "NETFILTER_DROP"}[r]
		},
		Grace:   100 * time.Millisecond,
		Idle:    time.Second,
		InScope: func(ino uint32) bool { return set[ino] },
	})
}

func TestScopeSplitsOneKernelIntoNodes(t *testing.T) {
	r := forwardPath()
	// node-b drops it; its free carries no namespace (inherited place)
	r.add(KindDrop, 0, "", synPod, func(e *Event) { e.Reason = 12 })
	end := r.t + uint64(3*time.Second)

	a := scopedBuilder(nsPodA, nsNodeA)
	b := scopedBuilder(nsNodeB, nsPodB)
	for _, e := range r.evts {
		a.Add(e)
		b.Add(e)
	}
	ja, jb := a.Expire(end), b.Expire(end)
	if len(ja) != 1 || len(jb) != 1 {
		t.Fatalf("journeys: node A %d, node B %d; want one each", len(ja), len(jb))
	}
	for _, h := range ja[0].Hops {
		if h.Netns != "pod-a" && h.Netns != "node-a" {
			t.Errorf("node A reports a hop in %s", h.Netns)
		}
	}
	if v := ja[0].Verdict; v.Kind != Lost || v.Netns != "node-a" || v.Device != "eth0" {
		t.Errorf("node A: %+v; want lost at its eth0 (the drop in node-b is not node A's to see)", v)
	}
	if first := jb[0].Hops[0]; first.Netns != "node-b" || first.Device != "eth0" || first.Event != "rx" {
		t.Errorf("node B's first hop %+v, want rx at node-b eth0", first)
	}
	if v := jb[0].Verdict; v.Kind != Dropped || v.Netns != "node-b" || v.Reason != "NETFILTER_DROP" {
		t.Errorf("node B: %+v", v)
	}
	if jb[0].Packet.Dst != "10.244.1.2" {
		t.Errorf("node B first sees %s, want the DNATed destination", jb[0].Packet.Dst)
	}
}

func TestScopeDropsUntrackedElsewhere(t *testing.T) {
	b := scopedBuilder(nsNodeA)
	b.Add(Event{TimeNs: 5, Skb: 9, Netns: nsNodeB, Ifname: "eth0", Kind: KindDrop, Reason: 12, Pkt: synPod})
	b.Add(Event{TimeNs: 6, Skb: 10, Netns: nsNodeA, Ifname: "eth0", Kind: KindDrop, Reason: 12, Pkt: synPod})
	got := b.TakeReady()
	if len(got) != 1 || got[0].Verdict.Netns != "node-a" {
		t.Fatalf("drop monitor journeys %+v, want node-a's only", got)
	}
}

func TestArrivedEncapsulatedIsNoEncap(t *testing.T) {
	r := forwardPath()
	r.add(KindDrop, nsNodeB, "flannel.1", synPod, func(e *Event) { e.Reason = 12 })
	b := scopedBuilder(nsNodeB, nsPodB)
	for _, e := range r.evts {
		b.Add(e)
	}
	js := b.Expire(r.t + uint64(3*time.Second))
	if len(js) != 1 || len(js[0].Encaps) != 0 {
		t.Fatalf("journeys %d, encaps %+v: a packet that arrives encapsulated was not encapsulated on this node", len(js), js[0].Encaps)
	}
}

func TestCloneOwnsItsLists(t *testing.T) {
	j := &Journey{Hops: []Hop{{Netns: "a"}}, Findings: []Finding{{Code: "X"}}, Reply: &Reply{Verdict: Delivered}, Nodes: []NodeObserved{{Name: "n"}}}
	c := j.Clone()
	c.Hops[0].Pod, c.Findings[0].Node, c.Reply.Netns, c.Nodes[0].Why = "p", "n", "r", "w"
	if j.Hops[0].Pod != "" || j.Findings[0].Node != "" || j.Reply.Netns != "" || j.Nodes[0].Why != "" {
		t.Errorf("writing the clone changed the original: %+v", j)
	}
}
