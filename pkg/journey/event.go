// Package journey turns kernel events about skbs into journeys: the path one
// packet took across namespaces and devices, its rewrites, encapsulations and
// fate. It knows nothing about the kernel: tests feed it recorded events.
package journey

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Kind says what happened to an skb at one event.
type Kind uint8

// Event kinds (the values of the kernel's enum event_kind).
const (
	KindRx        Kind = 1 // entered a device's receive path
	KindTx        Kind = 2 // handed to a device for transmit
	KindDrop      Kind = 3 // freed with a drop reason
	KindConsume   Kind = 4 // freed normally
	KindNF        Kind = 5 // seen by a netfilter observer
	KindTunnel    Kind = 6 // tunnel transmit function (kprobe backend)
	KindNFVerdict Kind = 7 // nf_hook_slow verdict (kprobe backend)
	KindDeliver   Kind = 8 // queued to a local socket (sk_data_ready)
)

func (k Kind) String() string {
	switch k {
	case KindRx:
		return "rx"
	case KindTx:
		return "tx"
	case KindDrop:
		return "drop"
	case KindConsume:
		return "consume"
	case KindNF:
		return "nf"
	case KindTunnel:
		return "tunnel"
	case KindNFVerdict:
		return "nf-verdict"
	case KindDeliver:
		return "socket"
	}
	return fmt.Sprintf("kind%d", uint8(k))
}

// Source says which kernel mechanism reported an event.
type Source uint8

// Event sources (the kernel's enum event_source).
const (
	SourceTracepoint Source = 1
	SourceNetfilter  Source = 2
	SourceKprobe     Source = 3
)

// IP protocol numbers.
const (
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
)

// Tuple is one IP header's view of a packet (IPv4 or IPv6: the addresses
// say which).
type Tuple struct {
	Proto    uint8
	Src, Dst netip.Addr
	Sport    uint16
	Dport    uint16
	TCPFlags uint8
	ICMPType uint8
	ICMPCode uint8
	IPLen    uint16 // IP total length (IPv6: 40 + payload length)
	Frag     bool   // a fragment (IPv4 MF/offset, IPv6 fragment header)
	ICMPMTU  uint32 // next-hop MTU of an ICMP frag-needed or ICMPv6 packet too big
}

// SameFlow reports whether two tuples name the same addresses and ports.
func (t Tuple) SameFlow(o Tuple) bool {
	return t.Proto == o.Proto && t.Src == o.Src && t.Dst == o.Dst && t.Sport == o.Sport && t.Dport == o.Dport
}

// Event is one observation of one skb, as the tracer decoded it.
type Event struct {
	TimeNs  uint64 // CLOCK_MONOTONIC
	Skb     uint64
	Journey uint64 // bit 0 set: reverse direction of the journey Journey&^1
	Netns   uint32 // netns inode
	Ifindex uint32
	Ifname  string
	Kind    Kind
	Source  Source
	Hook    uint8 // NF_INET_* for KindNF
	Stage   uint8 // observer priority index for KindNF
	Reason  uint32
	Len     uint32
	MTU     uint32
	Pkt     Tuple // innermost header
	Encap   bool
	Outer   Tuple // outer header when Encap
	VNI     uint32
	CT      uint8 // 0: no conntrack entry; else 1 + the kernel's enum ip_conntrack_info
	// Quote: the skb is an ICMP error about a packet of the journey (it
	// travels the other way; Journey has the other direction's bit).
	Quote bool
	// Capture holds the packet's first bytes at this event, when the
	// trace asked for them (--pcapng).
	Capture Capture
	// Exit is set by the builder, not the kernel: after this event the skb
	// went where the builder's scope ends (Options.InScope), so its life
	// on this node ends here.
	Exit bool
	// Inherited is set by the builder, not the kernel: the kernel gave no
	// place for this event (a free after the stack let go of the device
	// and socket), so Netns and Ifname are where the skb was last seen.
	Inherited bool
}

// Capture is the first bytes of a packet as they were at one event.
type Capture struct {
	Data    []byte // nil: nothing captured
	OrigLen uint32 // the packet's length from the first byte of Data
	L2Len   uint8  // Ethernet header bytes at the start of Data (0: Data starts at the IP header)
}

// CTState names the conntrack state an event saw ("" when no entry was
// attached: before the conntrack hook, or conntrack not in use there).
func (e Event) CTState() string {
	switch e.CT {
	case 0:
		return ""
	case 1:
		return "ESTABLISHED"
	case 2:
		return "RELATED"
	case 3:
		return "NEW"
	case 4:
		return "ESTABLISHED_REPLY"
	case 5:
		return "RELATED_REPLY"
	case 8:
		return "UNTRACKED"
	}
	return fmt.Sprintf("CTINFO_%d", e.CT-1)
}

// Netfilter hook numbers of the kernel (enum nf_inet_hooks).
const (
	HookPreRouting  = 0
	HookLocalIn     = 1
	HookForward     = 2
	HookLocalOut    = 3
	HookPostRouting = 4
)

// HookName is the iptables name of a netfilter hook.
func HookName(h uint8) string {
	switch h {
	case HookPreRouting:
		return "PREROUTING"
	case HookLocalIn:
		return "INPUT"
	case HookForward:
		return "FORWARD"
	case HookLocalOut:
		return "OUTPUT"
	case HookPostRouting:
		return "POSTROUTING"
	}
	return fmt.Sprintf("HOOK%d", h)
}

// ProtoName is the contract's name of an IP protocol.
func ProtoName(p uint8) string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoICMP:
		return "icmp"
	case ProtoICMPv6:
		return "icmpv6"
	}
	return "other"
}

// HostPort renders an address and port as "10.0.0.1:80" or "[fd00::1]:80"
// (just the address when port is 0).
func HostPort(addr string, port uint16) string {
	if port == 0 {
		return addr
	}
	return net.JoinHostPort(addr, strconv.Itoa(int(port)))
}

// TCPFlagsString renders TCP flags as "SYN", "SYN|ACK", ...
func TCPFlagsString(f uint8) string { return tcpFlagNames[f&0x3f] }

// tcpFlagNames holds the name of every combination of the six classic
// flags, "SYN|ACK" style.
var tcpFlagNames = func() (t [64]string) {
	names := []struct {
		bit  uint8
		name string
	}{{0x02, "SYN"}, {0x10, "ACK"}, {0x01, "FIN"}, {0x04, "RST"}, {0x08, "PSH"}, {0x20, "URG"}}
	for f := range t {
		for _, n := range names {
			if uint8(f)&n.bit != 0 {
				if t[f] != "" {
					t[f] += "|"
				}
				t[f] += n.name
			}
		}
	}
	return t
}()

// tc hook names of the contract (verdict.hook of a drop by a tc program).
const (
	HookTCIngress = "INGRESS"
	HookTCEgress  = "EGRESS"
)

// TCHook names the tc hook of a drop with a tc drop reason (TC_INGRESS,
// TC_EGRESS, or another TC_* reason such as TC_CHAIN_NOTFOUND): ingress
// when the freed skb was last seen received on the device it was freed at,
// egress otherwise. "" for any other reason. evs end with the drop.
func TCHook(reason string, evs []Event) string {
	switch {
	case reason == "TC_INGRESS":
		return HookTCIngress
	case reason == "TC_EGRESS":
		return HookTCEgress
	case !strings.HasPrefix(reason, "TC_") || len(evs) == 0:
		return ""
	}
	end := evs[len(evs)-1]
	for i := len(evs) - 2; i >= 0; i-- {
		e := evs[i]
		if e.Skb != end.Skb || e.Kind == KindNF {
			continue
		}
		if e.Kind == KindRx && e.Ifindex == end.Ifindex && e.Netns == end.Netns {
			return HookTCIngress
		}
		break
	}
	return HookTCEgress
}
