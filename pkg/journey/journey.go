package journey

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Schema is the value of every journey's "schema" field.
const Schema = "skbtrail.journey/v1"

// Verdict kinds.
const (
	Delivered = "delivered"
	Dropped   = "dropped"
	Rejected  = "rejected"
	Lost      = "lost"
	Unknown   = "unknown"
	// Left: handed to a device whose far end this node cannot see (a NIC,
	// a tap, a veth into a namespace of another node): the packet left.
	Left = "left"
)

// Journey is what happened to one packet (and its replies), in the form of
// the contract's JSON object.
type Journey struct {
	Schema     string    `json:"schema"`
	Packet     Packet    `json:"packet"`
	Verdict    Verdict   `json:"verdict"`
	Rewrites   []Rewrite `json:"rewrites"`
	Encaps     []Encap   `json:"encaps"`
	Hops       []Hop     `json:"hops"`
	Findings   []Finding `json:"findings"`
	LostEvents uint64    `json:"lost_events"`
	// Reply summarises the reverse direction when it was seen.
	Reply *Reply `json:"reply,omitempty"`
	// Nodes lists, in cluster mode, the nodes on the path and whether
	// their daemon was asked.
	Nodes []NodeObserved `json:"nodes,omitempty"`
	// Suppressed counts the earlier events of the same (netns, reason) the
	// daemon's rate limit kept out of the stream since the last one written.
	Suppressed uint64 `json:"suppressed,omitempty"`
	// Frames are the packet's bytes at each hop, when the trace asked for
	// them (--pcapng); written to pcapng by pkg/pcapng.
	Frames []Frame `json:"frames,omitempty"`

	// ID is the tracer's journey id; Events the raw observations behind the
	// journey (forward direction) and ReplyEvents the reverse direction.
	ID          uint64  `json:"-"`
	Events      []Event `json:"-"`
	ReplyEvents []Event `json:"-"`
	// ErrorEvents are the path of an ICMP error about the packet (the
	// first one seen), e.g. a router's "fragmentation needed".
	ErrorEvents []Event `json:"-"`
	// Names are the netns names of the inodes in Events and ReplyEvents.
	Names map[uint32]string `json:"-"`
}

// NetnsName names a netns inode of this journey's events.
func (j *Journey) NetnsName(ino uint32) string {
	if n, ok := j.Names[ino]; ok {
		return n
	}
	return fmt.Sprintf("ino:%d", ino)
}

// Packet is the packet as first seen.
type Packet struct {
	Proto    string `json:"proto"`
	Src      string `json:"src"`
	Sport    uint16 `json:"sport,omitempty"`
	Dst      string `json:"dst"`
	Dport    uint16 `json:"dport,omitempty"`
	TCPFlags string `json:"tcp_flags,omitempty"`
}

// Verdict is where and how the journey ended.
type Verdict struct {
	Kind   string `json:"kind"`
	Netns  string `json:"netns,omitempty"`
	Device string `json:"device,omitempty"`
	Reason string `json:"reason,omitempty"`
	Hook   string `json:"hook,omitempty"`
	Table  string `json:"table,omitempty"`
	Chain  string `json:"chain,omitempty"`
	Rule   string `json:"rule,omitempty"`
	// RuleHandle is the nf_tables handle of the rule (nftables and
	// iptables-nft); Attribution says how the rule was found: "nftrace"
	// (the kernel's trace of the packet), "counters" (a rule counter rose),
	// "rules" (the first rule that matches, read from the ruleset).
	RuleHandle  uint64 `json:"rule_handle,omitempty"`
	Attribution string `json:"attribution,omitempty"`
	Pod         string `json:"pod,omitempty"`
	PodID       string `json:"pod_id,omitempty"` // container runtime sandbox id
	Node        string `json:"node,omitempty"`   // Kubernetes node name (cluster mode)

	// Ifindex and NetnsInode locate the verdict for diagnosis.
	Ifindex    uint32 `json:"-"`
	NetnsInode uint32 `json:"-"`
}

// TupleJSON is an address/port pair in a rewrite.
type TupleJSON struct {
	Src   string `json:"src"`
	Sport uint16 `json:"sport,omitempty"`
	Dst   string `json:"dst"`
	Dport uint16 `json:"dport,omitempty"`
}

// Rewrite is one address/port rewrite (NAT).
type Rewrite struct {
	Kind   string    `json:"kind"`
	Netns  string    `json:"netns"`
	Hook   string    `json:"hook,omitempty"`
	Before TupleJSON `json:"before"`
	After  TupleJSON `json:"after"`
	// Devices around the rewrite when the hook is inferred, not observed.
	Between string `json:"between,omitempty"`
	Node    string `json:"node,omitempty"`
}

// Encap is one encapsulation with its outer headers.
type Encap struct {
	Kind       string `json:"kind"`
	Netns      string `json:"netns"`
	Device     string `json:"device"`
	VNI        uint32 `json:"vni"`
	OuterSrc   string `json:"outer_src"`
	OuterDst   string `json:"outer_dst"`
	OuterDport uint16 `json:"outer_dport,omitempty"`
	// Underlay is the device the encapsulated packet left through.
	Underlay   string `json:"underlay,omitempty"`
	Node       string `json:"node,omitempty"`
	NetnsInode uint32 `json:"-"`
}

// Hop is one step of the journey.
type Hop struct {
	TUs    uint64 `json:"t_us"`
	Netns  string `json:"netns"`
	Device string `json:"device,omitempty"`
	Event  string `json:"event"`
	Pod    string `json:"pod,omitempty"`
	// CT is the conntrack state at a netfilter hook, when an entry exists.
	CT string `json:"ct,omitempty"`
	// PodID is the container runtime's id of the pod sandbox.
	PodID string `json:"pod_id,omitempty"`
	Node  string `json:"node,omitempty"`
}

// Severities of findings.
const (
	SeverityError   = "error"
	SeverityWarning = "warning"
	SeverityInfo    = "info"
)

// Finding is one diagnosis with its evidence and a fix.
type Finding struct {
	Code     string `json:"code"`
	Severity string `json:"severity"`
	Netns    string `json:"netns,omitempty"`
	Message  string `json:"message"`
	Advice   string `json:"advice,omitempty"`
	Node     string `json:"node,omitempty"`
}

// NodeObserved says whether a node on the path was observed (cluster mode).
type NodeObserved struct {
	Name     string `json:"name"`
	Observed bool   `json:"observed"`
	Why      string `json:"why,omitempty"`
}

// Reply summarises the reverse direction of the flow.
type Reply struct {
	Packet  Packet `json:"packet"`
	Verdict string `json:"verdict"`
	Netns   string `json:"netns,omitempty"`
	Device  string `json:"device,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// Normalize makes absent lists empty, as the contract's schema requires.
func (j *Journey) Normalize() {
	j.Schema = Schema
	if j.Rewrites == nil {
		j.Rewrites = []Rewrite{}
	}
	if j.Encaps == nil {
		j.Encaps = []Encap{}
	}
	if j.Hops == nil {
		j.Hops = []Hop{}
	}
	if j.Findings == nil {
		j.Findings = []Finding{}
	}
}

// Clone returns a copy whose lists (hops, findings, rewrites, encaps,
// nodes) are its own, so two goroutines can label or render the two
// independently. The raw events are shared: nobody writes them after the
// journey is built.
func (j *Journey) Clone() *Journey {
	c := *j
	c.Hops = slices.Clone(j.Hops)
	c.Findings = slices.Clone(j.Findings)
	c.Rewrites = slices.Clone(j.Rewrites)
	c.Encaps = slices.Clone(j.Encaps)
	c.Nodes = slices.Clone(j.Nodes)
	c.Frames = slices.Clone(j.Frames)
	if j.Reply != nil {
		r := *j.Reply
		c.Reply = &r
	}
	return &c
}

// HasError reports whether any finding is an error.
func (j *Journey) HasError() bool {
	for _, f := range j.Findings {
		if f.Severity == SeverityError {
			return true
		}
	}
	return false
}

// ReplyCameBack reports whether the reverse direction was seen and was not
// dropped on its way back.
func (j *Journey) ReplyCameBack() bool {
	return j.Reply != nil && j.Reply.Verdict != Dropped && j.Reply.Verdict != Rejected
}

// Failed reports whether the journey makes `trace` exit 1: an error
// finding, or a verdict other than delivered, except a packet that left the
// node and whose reply came back (this node saw the round trip work).
func (j *Journey) Failed() bool {
	if j.HasError() {
		return true
	}
	switch j.Verdict.Kind {
	case Delivered:
		return false
	case Left:
		return !j.ReplyCameBack()
	}
	return true
}

// Toward is where a packet that left the node (verdict left) was headed,
// from the journey's own fields: the outer destination when it left
// encapsulated through the verdict's device (encap names the
// encapsulation, "vxlan"), else its destination after the last rewrite
// ("addr:port" when it has a port).
func (j *Journey) Toward() (addr, encap string) {
	v := j.Verdict
	for i := len(j.Encaps) - 1; i >= 0; i-- {
		if e := j.Encaps[i]; e.Underlay == v.Device && e.Netns == v.Netns && e.OuterDst != "" {
			return e.OuterDst, e.Kind
		}
	}
	dst, port := j.Packet.Dst, j.Packet.Dport
	if n := len(j.Rewrites); n > 0 {
		dst, port = j.Rewrites[n-1].After.Dst, j.Rewrites[n-1].After.Dport
	}
	return HostPort(dst, port), ""
}

// AddFinding appends a finding unless one with the same code exists.
func (j *Journey) AddFinding(f Finding) {
	for _, g := range j.Findings {
		if g.Code == f.Code {
			return
		}
	}
	j.Findings = append(j.Findings, f)
}

// LabelPods sets the pod identity ("namespace/name" and the runtime's
// sandbox id) of every hop and of the verdict whose namespace belongs to a
// known pod.
func (j *Journey) LabelPods(podOf func(netnsInode uint32) (name, id string)) {
	type pod struct{ name, id string }
	byName := map[string]pod{}
	for ino, ns := range j.Names {
		if name, id := podOf(ino); name != "" {
			byName[ns] = pod{name, id}
		}
	}
	for i := range j.Hops {
		if p, ok := byName[j.Hops[i].Netns]; ok {
			j.Hops[i].Pod, j.Hops[i].PodID = p.name, p.id
		}
	}
	if p, ok := byName[j.Verdict.Netns]; ok {
		j.Verdict.Pod, j.Verdict.PodID = p.name, p.id
	}
}

// ResolveNames renames the namespaces this journey could only call
// "ino:<n>" when it was built (the processor never waits for a rescan) to
// what name now says, in every field that names one. Run it where waiting
// is fine: a trace session, the event stream's writer.
func (j *Journey) ResolveNames(name func(ino uint32) string) {
	copied := false // Names may be shared with clones: copy before writing
	for ino, old := range j.Names {
		if !strings.HasPrefix(old, "ino:") {
			continue
		}
		now := name(ino)
		if now == old || now == "" {
			continue
		}
		if !copied {
			j.Names, copied = maps.Clone(j.Names), true
		}
		j.Names[ino] = now
		re := func(s *string) {
			if *s == old {
				*s = now
			}
		}
		re(&j.Verdict.Netns)
		for i := range j.Hops {
			re(&j.Hops[i].Netns)
		}
		for i := range j.Rewrites {
			re(&j.Rewrites[i].Netns)
		}
		for i := range j.Encaps {
			re(&j.Encaps[i].Netns)
		}
		for i := range j.Findings {
			re(&j.Findings[i].Netns)
		}
		for i := range j.Frames {
			re(&j.Frames[i].Netns)
		}
		if j.Reply != nil {
			re(&j.Reply.Netns)
		}
	}
}
