package journey

import "testing"

func TestFailed(t *testing.T) {
	back := &Reply{Verdict: Delivered}
	dropped := &Reply{Verdict: Dropped}
	errFinding := []Finding{{Code: "X", Severity: SeverityError}}
	info := []Finding{{Code: "LEFT_NODE", Severity: SeverityInfo}}
	cases := []struct {
		name     string
		kind     string
		reply    *Reply
		findings []Finding
		want     bool
	}{
		{"delivered", Delivered, back, nil, false},
		{"delivered, error finding", Delivered, back, errFinding, true},
		{"left, reply back", Left, back, info, false},
		{"left, no reply", Left, nil, info, true},
		{"left, reply dropped", Left, dropped, info, true},
		{"left, reply back, error finding", Left, back, errFinding, true},
		{"dropped", Dropped, nil, nil, true},
		{"lost", Lost, nil, nil, true},
		{"rejected", Rejected, back, nil, true},
		{"unknown", Unknown, nil, nil, true},
	}
	for _, c := range cases {
		j := &Journey{Verdict: Verdict{Kind: c.kind}, Reply: c.reply, Findings: c.findings}
		if got := j.Failed(); got != c.want {
			t.Errorf("%s: Failed() = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestToward(t *testing.T) {
	j := &Journey{
		Verdict:  Verdict{Kind: Left, Netns: "node-a", Device: "nic0"},
		Packet:   Packet{Proto: "tcp", Dst: "10.96.0.100", Dport: 80},
		Rewrites: []Rewrite{{Kind: "DNAT", After: TupleJSON{Dst: "10.244.1.2", Dport: 80}}},
		Encaps:   []Encap{{Kind: "vxlan", Netns: "node-a", Underlay: "nic0", OuterDst: "198.51.100.20"}},
	}
	if addr, encap := j.Toward(); addr != "198.51.100.20" || encap != "vxlan" {
		t.Errorf("encapsulated: %s %s", addr, encap)
	}
	j.Encaps[0].Underlay = "eth0" // encapsulated elsewhere: not what left through nic0
	if addr, encap := j.Toward(); addr != "10.244.1.2:80" || encap != "" {
		t.Errorf("after DNAT: %s %s", addr, encap)
	}
	j.Rewrites, j.Packet = nil, Packet{Proto: "icmp", Dst: "203.0.113.80"}
	if addr, _ := j.Toward(); addr != "203.0.113.80" {
		t.Errorf("plain: %s", addr)
	}
}

// TestResolveNames: names the processor could only give as "ino:<n>" are
// replaced everywhere once known; known names and clones are left alone.
func TestResolveNames(t *testing.T) {
	j := &Journey{
		Names:    map[uint32]string{7: "ino:7", 8: "node-a"},
		Verdict:  Verdict{Netns: "ino:7"},
		Hops:     []Hop{{Netns: "node-a"}, {Netns: "ino:7"}},
		Rewrites: []Rewrite{{Netns: "ino:7"}},
		Encaps:   []Encap{{Netns: "ino:7"}},
		Reply:    &Reply{Netns: "ino:7"},
	}
	c := j.Clone()
	j.ResolveNames(func(ino uint32) string { return map[uint32]string{7: "pod-b", 8: "renamed"}[ino] })
	if j.Verdict.Netns != "pod-b" || j.Hops[1].Netns != "pod-b" || j.Hops[0].Netns != "node-a" || j.Rewrites[0].Netns != "pod-b" ||
		j.Encaps[0].Netns != "pod-b" || j.Reply.Netns != "pod-b" || j.Names[7] != "pod-b" || j.Names[8] != "node-a" {
		t.Errorf("resolved %+v", j)
	}
	if c.Names[7] != "ino:7" || c.Verdict.Netns != "ino:7" {
		t.Errorf("the clone changed: %+v", c)
	}
}
