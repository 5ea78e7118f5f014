package journey

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// NFStages are the priorities of the netfilter observers, in kernel stage
// order: stage i of the kernel programs is attached at NFStages[i]. They sit
// around the iptables tables (raw -300, conntrack -200, mangle -150, DNAT
// -100, filter 0, security 50, SNAT 100) without colliding with them.
var NFStages = []int32{-301, -101, -99, 1, 99, 101}

// HookStages lists, per netfilter hook, the observer stages attached to it:
// every packet pays for each one, so a hook gets an observer where the
// packet enters it (stage 0), plus one after the tables that rewrite
// addresses (after DNAT in PREROUTING and OUTPUT, after SNAT in INPUT and
// POSTROUTING) so NAT is pinned to its hook, and INPUT's last observer
// tells that the stack hands the packet to a socket. Which table and rule
// in a hook dropped a packet is told by the rule counters (pkg/nfrules);
// the observers narrow it to the tables between two of them.
var HookStages = map[uint8][]uint8{
	HookPreRouting:  {0, 2},
	HookLocalIn:     {0, 5},
	HookForward:     {0},
	HookLocalOut:    {0, 2},
	HookPostRouting: {0, 5},
}

// StageWholeHook stands for "no observer saw the packet at this hook" (none
// was attached in its namespace yet): every table of the hook is a suspect.
const StageWholeHook uint8 = 255

// StageRange is the priority interval between observer stage s of hook
// and the next observer attached to that hook (the end of the hook after
// the last one); the whole hook for StageWholeHook.
func StageRange(hook, s uint8) (lo, hi int32) {
	if s == StageWholeHook {
		return -1 << 31, 1<<31 - 1
	}
	lo, hi = NFStages[len(NFStages)-1], 1<<31-1
	if int(s) < len(NFStages) {
		lo = NFStages[s]
	}
	for _, n := range HookStages[hook] {
		if n > s {
			return lo, NFStages[n]
		}
	}
	return lo, hi
}

// iptablesTables are the iptables tables with their priority at each hook.
var iptablesTables = []struct {
	name  string
	prio  int32
	hooks []uint8
}{
	{"raw", -300, []uint8{HookPreRouting, HookLocalOut}},
	{"mangle", -150, []uint8{HookPreRouting, HookLocalIn, HookForward, HookLocalOut, HookPostRouting}},
	{"nat", -100, []uint8{HookPreRouting, HookLocalOut}},
	{"filter", 0, []uint8{HookLocalIn, HookForward, HookLocalOut}},
	{"security", 50, []uint8{HookLocalIn, HookForward, HookLocalOut}},
	{"nat", 100, []uint8{HookLocalIn, HookPostRouting}},
}

// TablesAfterStage lists the iptables tables of hook that run after
// observer stage s and before the next observer (what decided when a
// packet seen at stage s was seen by no later observer).
func TablesAfterStage(hook, s uint8) []string {
	lo, hi := StageRange(hook, s)
	var out []string
	for _, t := range iptablesTables {
		if t.prio <= lo || t.prio >= hi {
			continue
		}
		for _, h := range t.hooks {
			if h == hook {
				out = append(out, t.name)
			}
		}
	}
	return out
}

// TableAfterStage names those tables, "raw/mangle" style ("" for none).
func TableAfterStage(hook uint8, stage uint8) string {
	return strings.Join(TablesAfterStage(hook, stage), "/")
}

// Options configure a Builder.
type Options struct {
	// NetnsName names a netns inode (contract naming); nil: "ino:<n>".
	NetnsName func(ino uint32) string
	// ReasonName names a kernel drop reason; nil: the number.
	ReasonName func(reason uint32) string
	// Grace is how long a journey stays open after its packet ended, to
	// collect replies and late events. Default 300ms.
	Grace time.Duration
	// Idle closes a journey that saw no event for this long. Default 2s.
	Idle time.Duration
	// MaxOpen bounds the open journeys; the oldest closes first. Default 4096.
	MaxOpen int
	// ReplyWait keeps a delivered TCP/UDP journey open this long for its
	// reply (so "no reply" can be told). Default 1s.
	ReplyWait time.Duration
	// InScope, when set, names the namespaces this builder reports on (one
	// node of several sharing a kernel): events elsewhere are left out, as
	// if another kernel had seen them.
	InScope func(ino uint32) bool
}

// Builder groups events into journeys. It is not safe for concurrent use:
// one processor goroutine owns it.
type Builder struct {
	opts   Options
	open   map[uint64]*openJourney
	closed map[uint64]struct{}
	names  map[uint32]string
	ready  []*Journey
	lru    lruList

	// outside marks skbs last seen outside the scope (Options.InScope)
	outside map[uint64]bool

	// caches of the drop monitor's path (one journey per event): strings
	// and single-namespace name maps are built once, not per drop
	reasons  map[uint32]string
	addrs    map[netip.Addr]string
	nameMaps map[uint32]map[uint32]string
	// Late counts events that arrived for journeys already closed.
	Late uint64
	// LostTotal counts all events the kernel or a channel could not deliver.
	LostTotal uint64
}

type openJourney struct {
	id      uint64
	fwd     []Event
	rev     []Event
	errs    []Event // ICMP errors about the journey's packets (Event.Quote)
	primary uint64
	endNs   uint64
	awaits  bool // delivered request that expects a reply
	lastNs  uint64
	lost    uint64

	prev, next *openJourney // the builder's activity order (b.lru)
}

// lruList orders the open journeys by their last event, least recent
// first: closing the oldest when MaxOpen is reached is O(1).
type lruList struct{ head, tail *openJourney }

func (l *lruList) pushBack(o *openJourney) {
	o.prev, o.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = o
	} else {
		l.head = o
	}
	l.tail = o
}

func (l *lruList) remove(o *openJourney) {
	if o.prev != nil {
		o.prev.next = o.next
	} else {
		l.head = o.next
	}
	if o.next != nil {
		o.next.prev = o.prev
	} else {
		l.tail = o.prev
	}
	o.prev, o.next = nil, nil
}

// NewBuilder returns an empty builder.
func NewBuilder(opts Options) *Builder {
	if opts.Grace == 0 {
		opts.Grace = 300 * time.Millisecond
	}
	if opts.Idle == 0 {
		opts.Idle = 2 * time.Second
	}
	if opts.MaxOpen == 0 {
		opts.MaxOpen = 4096
	}
	if opts.ReplyWait == 0 {
		opts.ReplyWait = time.Second
	}
	return &Builder{
		opts:   opts,
		open:   map[uint64]*openJourney{},
		closed: map[uint64]struct{}{},
		names:  map[uint32]string{},

		outside:  map[uint64]bool{},
		reasons:  map[uint32]string{},
		addrs:    map[netip.Addr]string{},
		nameMaps: map[uint32]map[uint32]string{},
	}
}

// cacheLimit bounds each builder cache; a full cache starts over (a node's
// namespaces and peers come and go over a daemon's life).
const cacheLimit = 1 << 14

// memo returns m[k], computed by f and remembered on a miss.
func memo[K comparable, V any](m map[K]V, k K, f func(K) V) V {
	if v, ok := m[k]; ok {
		return v
	}
	if len(m) >= cacheLimit {
		clear(m)
	}
	v := f(k)
	m[k] = v
	return v
}

func (b *Builder) addrString(a netip.Addr) string { return memo(b.addrs, a, netip.Addr.String) }

// nameMap is the journey Names map of a single namespace, shared by every
// journey of that namespace (journeys never modify it after building).
func (b *Builder) nameMap(ino uint32) map[uint32]string {
	if m, ok := b.nameMaps[ino]; ok {
		return m
	}
	m := map[uint32]string{ino: b.NetnsName(ino)}
	if !strings.HasPrefix(m[ino], "ino:") { // not known yet: ask again next time
		memo(b.nameMaps, ino, func(uint32) map[uint32]string { return m })
	}
	return m
}

// NetnsName names a namespace inode, remembering the first name seen so a
// namespace that disappears keeps its name in journeys.
func (b *Builder) NetnsName(ino uint32) string {
	if n, ok := b.names[ino]; ok {
		return n
	}
	if b.opts.NetnsName == nil {
		return memo(b.names, ino, func(ino uint32) string { return fmt.Sprintf("ino:%d", ino) })
	}
	n := b.opts.NetnsName(ino)
	if !strings.HasPrefix(n, "ino:") { // an unknown namespace may be known next time
		memo(b.names, ino, func(uint32) string { return n })
	}
	return n
}

// ReasonName names a drop reason (the kernel's names do not change while
// it runs: each is asked for once).
func (b *Builder) ReasonName(r uint32) string {
	return memo(b.reasons, r, func(r uint32) string {
		if b.opts.ReasonName != nil {
			return b.opts.ReasonName(r)
		}
		return fmt.Sprintf("REASON_%d", r)
	})
}

// inScope reports whether an event belongs to the builder's scope. An event
// without a namespace (a free after the stack let go of the device)
// belongs where its skb was last seen.
func (b *Builder) inScope(e Event) bool {
	if e.Netns == 0 {
		return !b.outside[e.Skb]
	}
	if b.opts.InScope(e.Netns) {
		delete(b.outside, e.Skb)
		return true
	}
	if len(b.outside) >= cacheLimit {
		clear(b.outside)
	}
	b.outside[e.Skb] = true
	return false
}

// leftScope marks where a tracked skb left the scope: the last event of
// that skb the builder kept ends its life on this node. A packet that left
// ends its journey there (and waits for its reply like a delivered one).
func (b *Builder) leftScope(e Event) {
	if e.Journey == 0 || e.Netns == 0 {
		return
	}
	o := b.open[e.Journey&^1]
	if o == nil {
		return
	}
	list := o.fwd
	if e.Journey&1 == 1 {
		list = o.rev
	}
	for i := len(list) - 1; i >= 0; i-- {
		if list[i].Skb != e.Skb {
			continue
		}
		if !list[i].Exit && e.Journey&1 == 0 && e.Skb == o.primary && o.endNs == 0 {
			o.endNs = e.TimeNs
			o.awaits = e.Pkt.Proto == ProtoTCP || e.Pkt.Proto == ProtoUDP
		}
		list[i].Exit = true
		return
	}
}

// Add feeds one event.
func (b *Builder) Add(e Event) {
	if b.opts.InScope != nil && !b.inScope(e) {
		b.leftScope(e)
		return
	}
	b.NetnsName(e.Netns)
	if e.Journey == 0 {
		b.ready = append(b.ready, b.dropJourney(e))
		return
	}
	id := e.Journey &^ 1
	o := b.open[id]
	if o == nil {
		if _, done := b.closed[id]; done || e.Journey&1 == 1 {
			b.Late++
			return
		}
		if len(b.open) >= b.opts.MaxOpen {
			b.closeOldest()
		}
		o = &openJourney{id: id, fwd: make([]Event, 0, 16)}
		b.open[id] = o
		b.lru.pushBack(o)
	}
	if e.Quote {
		o.errs = append(o.errs, e) // never a reply: it does not decide the verdict
	} else if e.Journey&1 == 1 {
		o.rev = append(o.rev, e)
	} else {
		if len(o.fwd) == 0 {
			o.primary = e.Skb
		}
		o.fwd = append(o.fwd, e)
		if e.Skb == o.primary && o.endNs == 0 && (e.Kind == KindDrop || e.Kind == KindConsume || e.Kind == KindDeliver || passedLocalIn(e)) {
			// passing the last INPUT observer counts as an end too: some
			// sockets free their skbs without a tracepoint (deferred frees)
			o.endNs = e.TimeNs
			o.awaits = e.Kind != KindDrop && (e.Pkt.Proto == ProtoTCP || e.Pkt.Proto == ProtoUDP)
		}
	}
	if e.TimeNs > o.lastNs {
		o.lastNs = e.TimeNs
		if o != b.lru.tail {
			b.lru.remove(o)
			b.lru.pushBack(o)
		}
	}
}

// AddLost records n events the kernel (or a full channel) could not deliver.
// Every open journey may be missing some of them and says so.
func (b *Builder) AddLost(n uint64) {
	if n == 0 {
		return
	}
	b.LostTotal += n
	for _, o := range b.open {
		o.lost += n
	}
}

// Open is the number of journeys still collecting events.
func (b *Builder) Open() int { return len(b.open) }

// Expire closes journeys whose packet ended more than Grace ago, or that saw
// nothing for Idle, and returns every journey closed since the last call.
func (b *Builder) Expire(nowNs uint64) []*Journey {
	grace, idle, wait := uint64(b.opts.Grace), uint64(b.opts.Idle), uint64(b.opts.ReplyWait)
	for _, o := range b.open {
		ended := o.endNs != 0 && nowNs >= o.endNs+grace
		if ended && o.awaits && len(o.rev) == 0 && nowNs < o.endNs+wait {
			continue // delivered: give the reply its chance
		}
		if ended || nowNs >= o.lastNs+max(idle, wait) {
			b.ready = append(b.ready, b.finish(o))
			b.markClosed(o)
		}
	}
	return b.takeReady()
}

// Close closes every open journey (end of a trace) and returns them.
func (b *Builder) Close() []*Journey {
	for _, o := range b.open {
		b.ready = append(b.ready, b.finish(o))
		b.markClosed(o)
	}
	return b.takeReady()
}

// CloseWhere closes the open journeys whose first event pred selects.
func (b *Builder) CloseWhere(pred func(first Event) bool) []*Journey {
	var out []*Journey
	for _, o := range b.open {
		first := Event{}
		if len(o.fwd) > 0 {
			first = o.fwd[0]
		} else if len(o.rev) > 0 {
			first = o.rev[0]
		}
		if pred(first) {
			out = append(out, b.finish(o))
			b.markClosed(o)
		}
	}
	slices.SortStableFunc(out, func(a, b *Journey) int { return cmp.Compare(firstNs(a), firstNs(b)) })
	return out
}

// TakeReady returns the journeys finished so far without expiring any:
// the drop monitor's one-event journeys are ready as soon as they are added.
func (b *Builder) TakeReady() []*Journey {
	if len(b.ready) == 0 {
		return nil
	}
	return b.takeReady()
}

func (b *Builder) takeReady() []*Journey {
	r := b.ready
	b.ready = nil
	slices.SortStableFunc(r, func(a, b *Journey) int { return cmp.Compare(firstNs(a), firstNs(b)) })
	return r
}

func firstNs(j *Journey) uint64 {
	if len(j.Events) == 0 {
		return 0
	}
	return j.Events[0].TimeNs
}

func (b *Builder) markClosed(o *openJourney) {
	id := o.id
	delete(b.open, id)
	b.lru.remove(o)
	if len(b.closed) > 4*b.opts.MaxOpen {
		b.closed = map[uint64]struct{}{}
	}
	b.closed[id] = struct{}{}
}

// closeOldest closes the journey whose last event is the least recent.
func (b *Builder) closeOldest() {
	if oldest := b.lru.head; oldest != nil {
		b.ready = append(b.ready, b.finish(oldest))
		b.markClosed(oldest)
	}
}

// dropJourney is the journey of one untracked drop (the drop monitor's
// always-on path): built directly, with as few allocations as the
// contract's object allows.
func (b *Builder) dropJourney(e Event) *Journey {
	type drop struct {
		j      Journey
		events [1]Event
		hops   [1]Hop
	}
	d := &drop{}
	d.events[0] = e
	name := b.NetnsName(e.Netns)
	d.hops[0] = Hop{Netns: name, Device: e.Ifname, Event: KindDrop.String()}
	if e.Kind != KindDrop {
		d.hops[0].Event = e.Kind.String()
	}
	d.j = Journey{
		Schema:   Schema,
		Packet:   b.packetOf(e.Pkt),
		Verdict:  Verdict{Kind: Dropped, Netns: name, Device: e.Ifname, Reason: b.ReasonName(e.Reason), Hook: TCHook(b.ReasonName(e.Reason), d.events[:]), NetnsInode: e.Netns, Ifindex: e.Ifindex},
		Rewrites: []Rewrite{},
		Encaps:   []Encap{},
		Hops:     d.hops[:],
		Findings: []Finding{},
		Events:   d.events[:],
		Names:    b.nameMap(e.Netns),
	}
	if e.Encap {
		d.j.Encaps = []Encap{{Kind: "vxlan", Netns: name, VNI: e.VNI, OuterSrc: e.Outer.Src.String(), OuterDst: e.Outer.Dst.String(), OuterDport: e.Outer.Dport, NetnsInode: e.Netns}}
	}
	return &d.j
}

func tupleJSON(t Tuple) TupleJSON {
	return TupleJSON{Src: t.Src.String(), Sport: t.Sport, Dst: t.Dst.String(), Dport: t.Dport}
}

// PacketOf renders a tuple as the contract's packet object.
func PacketOf(t Tuple) Packet { return packetOf(t, netip.Addr.String) }

func (b *Builder) packetOf(t Tuple) Packet { return packetOf(t, b.addrString) }

func packetOf(t Tuple, str func(netip.Addr) string) Packet {
	if !t.Src.IsValid() || (t.Proto == 0 && t.Src.IsUnspecified() && t.Dst.IsUnspecified()) {
		return Packet{Proto: "other"} // not IPv4: no addresses to show
	}
	p := Packet{Proto: ProtoName(t.Proto), Src: str(t.Src), Dst: str(t.Dst)}
	switch t.Proto {
	case ProtoTCP:
		p.Sport, p.Dport = t.Sport, t.Dport
		p.TCPFlags = TCPFlagsString(t.TCPFlags)
	case ProtoUDP:
		p.Sport, p.Dport = t.Sport, t.Dport
	}
	return p
}

func (b *Builder) finish(o *openJourney) *Journey {
	byTime := func(a, b Event) int { return cmp.Compare(a.TimeNs, b.TimeNs) }
	slices.SortStableFunc(o.fwd, byTime)
	slices.SortStableFunc(o.rev, byTime)
	slices.SortStableFunc(o.errs, byTime)
	names := map[uint32]string{}
	for _, list := range [][]Event{o.fwd, o.rev, o.errs} {
		for _, e := range list {
			names[e.Netns] = b.NetnsName(e.Netns)
		}
	}
	rejected := isRejection(o.rev)
	// firstLife reuses the slices: o.fwd and o.rev are not read after this
	fwd, rev := firstLife(o.fwd), firstLife(o.rev)
	j := &Journey{
		Schema:      Schema,
		ID:          o.id,
		Events:      fwd,
		ReplyEvents: rev,
		ErrorEvents: firstLife(o.errs),
		LostEvents:  o.lost,
		Rewrites:    []Rewrite{},
		Encaps:      []Encap{},
		Hops:        []Hop{},
		Findings:    []Finding{},
		Names:       names,
	}
	if len(fwd) == 0 {
		j.Verdict = Verdict{Kind: Unknown}
		if len(rev) > 0 {
			j.Packet = PacketOf(rev[0].Pkt)
		}
		return j
	}
	j.Packet = PacketOf(fwd[0].Pkt)
	j.Hops = b.hops(fwd)
	j.Rewrites = b.rewrites(fwd)
	j.Encaps = b.encaps(fwd)
	j.Verdict = b.verdict(fwd)
	if j.Verdict.Kind == Dropped && answeredUnreachable(j.ErrorEvents, j.Verdict.NetnsInode) {
		j.Verdict.Kind = Rejected // e.g. UDP to a closed port: ICMP port unreachable
	}
	if len(rev) > 0 {
		r := &Reply{Packet: PacketOf(rev[0].Pkt)}
		v := b.verdict(rev)
		last := rev[len(rev)-1]
		if v.Kind == Unknown && last.Kind != KindTx && last.Netns == fwd[0].Netns {
			v.Kind = Delivered // back in the namespace the request came from
		}
		if v.Kind == Dropped && v.Reason == "NO_SOCKET" && isEchoReply(last.Pkt) && last.Netns == fwd[0].Netns {
			// IPv4 frees every echo reply no ping socket claims with
			// NO_SOCKET, after raw sockets (ping's, the probe's) took
			// their copy: it arrived
			v.Kind, v.Reason = Delivered, ""
		}
		r.Verdict, r.Netns, r.Device, r.Reason = v.Kind, v.Netns, v.Device, v.Reason
		j.Reply = r
		if (j.Verdict.Kind == Dropped || j.Verdict.Kind == Lost) && rejected {
			j.Verdict.Kind = Rejected
		}
	}
	return j
}

// ICMPv6DestUnreach is ICMPv6's destination unreachable type.
const ICMPv6DestUnreach = 1

// ICMP types and codes the verdict looks at.
const (
	icmpEchoReply     = 0
	icmpDestUnreach   = 3
	icmpProtoUnreach  = 2 // codes of icmpDestUnreach: the host refused
	icmpPortUnreach   = 3
	icmpv6EchoReply   = 129
	icmpv6PortUnreach = 4 // code of ICMPv6DestUnreach
)

// isEchoReply: an ICMP or ICMPv6 echo reply.
func isEchoReply(t Tuple) bool {
	return t.Proto == ProtoICMP && t.ICMPType == icmpEchoReply || t.Proto == ProtoICMPv6 && t.ICMPType == icmpv6EchoReply
}

// answeredUnreachable: among the ICMP errors about the packet, a port (or
// protocol) unreachable sent from the namespace where the packet was
// dropped: its destination refused it, as a host refuses a UDP datagram
// to a closed port. A router's "no route" or "fragmentation needed" is
// not a refusal: the packet stays dropped.
func answeredUnreachable(errs []Event, dropNetns uint32) bool {
	for _, e := range errs {
		if e.Netns != dropNetns || e.Kind != KindTx {
			continue
		}
		p := e.Pkt
		if p.Proto == ProtoICMP && p.ICMPType == icmpDestUnreach && (p.ICMPCode == icmpPortUnreach || p.ICMPCode == icmpProtoUnreach) ||
			p.Proto == ProtoICMPv6 && p.ICMPType == ICMPv6DestUnreach && p.ICMPCode == icmpv6PortUnreach {
			return true
		}
	}
	return false
}

// isRejection reports whether the reverse direction carried a TCP RST or an
// ICMP (ICMPv6) destination-unreachable: the packet was answered with an error.
func isRejection(rev []Event) bool {
	for _, e := range rev {
		if e.Pkt.Proto == ProtoTCP && e.Pkt.TCPFlags&0x04 != 0 {
			return true
		}
		if e.Pkt.Proto == ProtoICMP && e.Pkt.ICMPType == icmpDestUnreach {
			return true
		}
		if e.Pkt.Proto == ProtoICMPv6 && e.Pkt.ICMPType == ICMPv6DestUnreach {
			return true
		}
	}
	return false
}

// HopRedirect is the event of an inferred hop: the skb reached this
// namespace and device by a redirect, not by a transmission.
const HopRedirect = "redirect"

// Redirected reports whether the skb got from prev to e without being
// transmitted: it shows up in another namespace while the last thing seen
// was not a transmission. Namespaces change only through a device's
// transmit (veth, tunnel) or through bpf_redirect_peer, which moves the
// skb to the peer veth inside the receive path.
func Redirected(prev, e *Event) bool {
	return prev != nil && prev.Skb == e.Skb && prev.Netns != 0 && e.Netns != 0 && prev.Netns != e.Netns &&
		prev.Kind != KindTx && prev.Kind != KindTunnel
}

func (b *Builder) hops(evs []Event) []Hop {
	hops := make([]Hop, 0, len(evs))
	t0 := evs[0].TimeNs
	var last *Event
	for i := range evs {
		e := &evs[i]
		name := e.Kind.String()
		if n := HopName(*e); n != "" {
			name = n
		}
		if e.Kind == KindNF {
			// one hop per visit of a hook, not one per observer stage
			if last != nil && last.Kind == KindNF && last.Netns == e.Netns && last.Hook == e.Hook && last.Skb == e.Skb {
				last = e
				if ct := e.CTState(); ct != "" && len(hops) > 0 {
					hops[len(hops)-1].CT = ct // the state after the hook's conntrack
				}
				continue
			}
			name = "nf:" + HookName(e.Hook)
		}
		if Redirected(last, e) {
			// in another namespace without a transmission: a tc program
			// redirected the skb (bpf_redirect_peer), which the receive
			// tracepoint does not see a second time
			hops = append(hops, Hop{TUs: (e.TimeNs - t0) / 1000, Netns: b.NetnsName(e.Netns), Device: e.Ifname, Event: HopRedirect})
		}
		last = e
		h := Hop{
			TUs:    (e.TimeNs - t0) / 1000,
			Netns:  b.NetnsName(e.Netns),
			Device: e.Ifname,
			Event:  name,
		}
		if e.Kind == KindNF {
			h.CT = e.CTState()
		}
		hops = append(hops, h)
	}
	return hops
}

func (b *Builder) rewrites(evs []Event) []Rewrite {
	out := []Rewrite{}
	prev := map[uint64]*Event{}
	for i := range evs {
		e := &evs[i]
		p := prev[e.Skb]
		prev[e.Skb] = e
		if p == nil || p.Pkt.Proto != e.Pkt.Proto || p.Pkt.SameFlow(e.Pkt) {
			continue
		}
		before, after := tupleJSON(p.Pkt), tupleJSON(e.Pkt)
		dnat := p.Pkt.Dst != e.Pkt.Dst || p.Pkt.Dport != e.Pkt.Dport
		snat := p.Pkt.Src != e.Pkt.Src || p.Pkt.Sport != e.Pkt.Sport
		for _, kind := range []string{"DNAT", "SNAT"} {
			if (kind == "DNAT" && !dnat) || (kind == "SNAT" && !snat) {
				continue
			}
			rw := Rewrite{Kind: kind, Netns: b.NetnsName(e.Netns), Before: before, After: after}
			switch {
			case e.Kind == KindNF && p.Kind == KindNF && p.Netns == e.Netns && p.Hook == e.Hook:
				rw.Hook = HookName(e.Hook) // seen changing between two observers of one hook
			case kind == "SNAT":
				rw.Hook = "POSTROUTING"
				rw.Between = fmt.Sprintf("%s %s -> %s", p.Kind, p.Ifname, e.Ifname)
			case p.Netns == e.Netns && p.Kind == KindRx:
				rw.Hook = "PREROUTING"
				rw.Between = fmt.Sprintf("rx %s -> %s %s", p.Ifname, e.Kind, e.Ifname)
			default:
				rw.Hook = "OUTPUT"
				rw.Between = fmt.Sprintf("%s %s -> %s %s", p.Kind, p.Ifname, e.Kind, e.Ifname)
			}
			out = append(out, rw)
		}
	}
	return out
}

func (b *Builder) encaps(evs []Event) []Encap {
	out := []Encap{}
	prev := map[uint64]*Event{}
	lastTx := map[uint32]string{} // netns -> last device a plain packet was sent to
	for i := range evs {
		e := &evs[i]
		p := prev[e.Skb]
		prev[e.Skb] = e
		if !e.Encap {
			if e.Kind == KindTx {
				lastTx[e.Netns] = e.Ifname
			}
			continue
		}
		if p == nil && e.Kind == KindRx {
			continue // arrived encapsulated from another node: encapsulated there, not here
		}
		if p != nil && p.Encap {
			if e.Kind == KindTx && len(out) > 0 && out[len(out)-1].Underlay == "" && out[len(out)-1].NetnsInode == e.Netns {
				out[len(out)-1].Underlay = e.Ifname
			}
			continue
		}
		enc := Encap{
			Kind:       "vxlan",
			Netns:      b.NetnsName(e.Netns),
			Device:     lastTx[e.Netns],
			VNI:        e.VNI,
			OuterSrc:   e.Outer.Src.String(),
			OuterDst:   e.Outer.Dst.String(),
			OuterDport: e.Outer.Dport,
			NetnsInode: e.Netns,
		}
		if e.Kind == KindTx {
			enc.Underlay = e.Ifname
		}
		out = append(out, enc)
	}
	return out
}

// passedLocalIn: the packet passed every netfilter INPUT observer, so the
// stack is handing it to a local socket.
func passedLocalIn(e Event) bool {
	st := HookStages[HookLocalIn]
	// an encapsulated packet passes INPUT to be decapsulated, not delivered
	return e.Kind == KindNF && !e.Encap && e.Hook == HookLocalIn && e.Stage == st[len(st)-1]
}

// firstLife returns the events of the first skb from its first event up to
// the event that freed it. The kernel reuses skb addresses: what comes after
// the free is another packet (later packets of the same flow join a journey
// through the flow map and are not part of this packet's path).
func firstLife(evs []Event) []Event {
	if len(evs) == 0 {
		return nil
	}
	first := evs[0]
	// common case: every event up to the free is the first skb's; fix them
	// up in place (the builder owns the slice) and return a prefix
	out := evs[:0]
	for i := range evs {
		e := evs[i]
		if e.Skb != first.Skb {
			// compacted in place too: out never passes the event being read
			return lifeSlow(out, evs[i:], first)
		}
		if !samePacket(first.Pkt, e.Pkt) {
			break // the address was reused by another packet whose free we did not see
		}
		inheritPlace(&e, out)
		out = append(out, e)
		if e.Kind == KindDrop || e.Kind == KindConsume || e.Exit {
			if next, ok := successor(out, evs[i+1:], first); ok {
				return lifeSlow(out[:len(out)-1], evs[i+1:], next)
			}
			break
		}
	}
	return out
}

// lifeSlow continues firstLife when other skbs' events are interleaved.
func lifeSlow(out, rest []Event, first Event) []Event {
	for k, e := range rest {
		if e.Skb != first.Skb {
			continue
		}
		if !samePacket(first.Pkt, e.Pkt) {
			break
		}
		inheritPlace(&e, out)
		out = append(out, e)
		if e.Kind == KindDrop || e.Kind == KindConsume || e.Exit {
			if next, ok := successor(out, rest[k+1:], first); ok {
				return lifeSlow(out[:len(out)-1], rest[k+1:], next)
			}
			break
		}
	}
	return out
}

// replaceWindowNs bounds how long after the old skb's free the new skb of
// a packet replaced on arrival is received.
const replaceWindowNs = 5_000_000

// ConsumedOnArrival reports whether life ends with the skb freed normally
// at a device it was handed to by a transmission in another namespace but
// never received on: a veth whose peer runs a native XDP program (or does
// GRO) puts the packet into a new skb, or drops it, and frees this one.
func ConsumedOnArrival(life []Event) bool {
	n := len(life)
	if n < 2 {
		return false
	}
	end, prev := life[n-1], life[n-2]
	return end.Kind == KindConsume && prev.Kind == KindTx && end.Netns != 0 && prev.Netns != end.Netns
}

// successor finds the skb that carries on a packet whose skb was consumed
// on arrival (see ConsumedOnArrival): another skb of the same packet
// received at that very device right after. It returns the new skb (with
// the packet as first seen, to keep matching against).
func successor(life, rest []Event, first Event) (Event, bool) {
	// the new skb shows up received at the device (consumed on arrival)
	// or transmitted through it (copied on output)
	kind := KindRx
	switch {
	case ConsumedOnArrival(life):
	case copiedOnOutput(life):
		kind = KindTx
	default:
		return Event{}, false
	}
	end := life[len(life)-1]
	for _, e := range rest {
		if e.TimeNs > end.TimeNs+replaceWindowNs {
			break
		}
		if e.Skb != end.Skb && e.Kind == kind && e.Netns == end.Netns && e.Ifindex == end.Ifindex &&
			e.Pkt.SameFlow(end.Pkt) && samePacket(first.Pkt, e.Pkt) {
			return Event{Skb: e.Skb, Pkt: first.Pkt}, true
		}
	}
	return Event{}, false
}

// copiedOnOutput reports whether life ends with the skb freed normally
// on the way out of a device, before the device transmitted it: right
// after its last netfilter hook there, or (no netfilter observer in that
// namespace yet: a passive trace's first packet) right after it was
// received on another device of the namespace, i.e. while forwarded. The
// output path copied a forwarded packet whose headroom was too short for
// the device (skb_expand_head frees the original of an skb no socket
// owns), and the copy goes on. A packet delivered locally is freed at the
// device it came in on.
func copiedOnOutput(life []Event) bool {
	n := len(life)
	if n < 2 {
		return false
	}
	end, prev := life[n-1], life[n-2]
	if end.Kind != KindConsume || prev.Netns != end.Netns || end.Ifindex == 0 {
		return false
	}
	return prev.Kind == KindNF && prev.Hook == HookPostRouting && prev.Ifindex == end.Ifindex ||
		prev.Kind == KindRx && prev.Ifindex != end.Ifindex
}

// inheritPlace: an skb freed after the stack let go of its device and
// socket is still where it was last seen.
func inheritPlace(e *Event, before []Event) {
	if e.Netns == 0 && len(before) > 0 {
		last := before[len(before)-1]
		e.Netns, e.Inherited = last.Netns, true
		if e.Ifname == "" {
			e.Ifname, e.Ifindex = last.Ifname, last.Ifindex
		}
	}
}

// samePacket reports whether b can be packet a after NAT: TCP flags never
// change on the way, and NAT rewrites one side, never swaps the two.
func samePacket(a, b Tuple) bool {
	if a.Proto != b.Proto {
		return false
	}
	if a.Proto == ProtoTCP && a.TCPFlags&0x3f != b.TCPFlags&0x3f {
		return false
	}
	if (a.Proto == ProtoICMP || a.Proto == ProtoICMPv6) && a.ICMPType != b.ICMPType {
		return false
	}
	swapped := a.Src == b.Dst && a.Dst == b.Src && a.Sport == b.Dport && a.Dport == b.Sport
	return !swapped || a.SameFlow(b)
}

// verdict reads the fate of one skb's life (see firstLife).
func (b *Builder) verdict(evs []Event) Verdict {
	end := &evs[len(evs)-1]
	if end.Kind != KindDrop && end.Kind != KindConsume {
		last := &evs[len(evs)-1]
		if passedLocalIn(*last) || last.Kind == KindDeliver {
			v := Verdict{Kind: Delivered, Netns: b.NetnsName(last.Netns), Device: last.Ifname, NetnsInode: last.Netns, Ifindex: last.Ifindex}
			if last.Kind == KindDeliver {
				// a socket read it: name the device it arrived on
				for i := len(evs) - 1; i >= 0; i-- {
					if evs[i].Kind == KindRx && evs[i].Netns == last.Netns {
						v.Device, v.Ifindex = evs[i].Ifname, evs[i].Ifindex
						break
					}
				}
			}
			return v
		}
		v := Verdict{Kind: Unknown, Netns: b.NetnsName(last.Netns), Device: last.Ifname, NetnsInode: last.Netns, Ifindex: last.Ifindex}
		if last.Kind == KindTx {
			v.Kind = Lost
		}
		return v
	}
	v := Verdict{Netns: b.NetnsName(end.Netns), Device: end.Ifname, NetnsInode: end.Netns, Ifindex: end.Ifindex}
	if ConsumedOnArrival(evs) {
		// freed where it arrived, never received (no new skb carried it
		// on): gone after the transmission, not delivered
		tx := &evs[len(evs)-2]
		return Verdict{Kind: Lost, Netns: b.NetnsName(tx.Netns), Device: tx.Ifname, NetnsInode: tx.Netns, Ifindex: tx.Ifindex}
	}
	if end.Kind == KindConsume {
		v.Kind = Delivered
		if v.Device == "" {
			// a socket consumed it: name the device it arrived on
			for i := len(evs) - 1; i >= 0; i-- {
				if evs[i].Kind == KindRx && evs[i].Netns == end.Netns {
					v.Device, v.Ifindex = evs[i].Ifname, evs[i].Ifindex
					break
				}
			}
		}
		return v
	}
	v.Kind = Dropped
	v.Reason = b.ReasonName(end.Reason)
	if h := TCHook(v.Reason, evs); h != "" {
		v.Hook = h // a tc program dropped it (diagnose names the program)
		return v
	}
	// the last netfilter observer that saw the packet before it was freed
	// pins the hook; the stage tells which tables ran after it
	if v.Reason != "NETFILTER_DROP" {
		return v
	}
	if pinNFVerdict(&v, evs, end) {
		return v // the kprobe backend saw nf_hook_slow decide
	}
	for i := len(evs) - 1; i >= 0; i-- {
		e := &evs[i]
		if e == end || e.Skb != end.Skb || e.TimeNs > end.TimeNs {
			continue
		}
		if e.Kind != KindNF || e.Netns != end.Netns {
			break
		}
		v.Hook = HookName(e.Hook)
		v.Table = TableAfterStage(e.Hook, e.Stage)
		break
	}
	return v
}
