// Package nftrace reads nf_tables trace events (the kernel's answer to
// `meta nftrace set 1`: which table, chain and rule saw a packet and what it
// decided) and marks the packets of one trace for tracing.
package nftrace

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Kind is what a trace event reports (NFT_TRACETYPE_*).
type Kind uint32

const (
	KindPolicy Kind = unix.NFT_TRACETYPE_POLICY // the chain's policy decided
	KindReturn Kind = unix.NFT_TRACETYPE_RETURN // the chain ended without a verdict
	KindRule   Kind = unix.NFT_TRACETYPE_RULE   // a rule matched
)

// Verdict codes (NF_* and NFT_* as the kernel sends them, signed).
const (
	VerdictDrop     int32 = 0 // NF_DROP
	VerdictAccept   int32 = 1 // NF_ACCEPT
	VerdictContinue int32 = -1
	VerdictBreak    int32 = -2
	VerdictJump     int32 = -3
	VerdictGoto     int32 = -4
	VerdictReturn   int32 = -5
)

// Event is one NFT_MSG_TRACE message.
type Event struct {
	ID      uint32 // the same for every event of one packet's walk
	Kind    Kind
	Family  uint8 // nfgenmsg family of the table (NFPROTO_*)
	Table   string
	Chain   string
	Handle  uint64 // rule handle (Kind == KindRule)
	Verdict int32  // rule verdict code, or the policy for KindPolicy
	Target  string // chain of a jump/goto verdict
	Policy  uint32 // NFTA_TRACE_POLICY
	Iif     uint32
	Oif     uint32
	Mark    uint32
	NFProto uint8 // protocol family of the packet (NFPROTO_IPV4/IPV6)
	// Network and Transport are the packet's headers as the kernel copied
	// them (possibly truncated).
	Network, Transport []byte
	// Packet is the packet the event is about (from this event's headers
	// or, as the kernel sends them once per chain walk, an earlier event
	// of the same trace id); HasPacket says whether it is known.
	Packet    Tuple
	HasPacket bool
	// BaseChain is the base chain whose walk reached this event (Chain
	// itself unless a rule jumped); set with Packet.
	BaseChain string
}

// Drops reports whether the event is a packet's final drop: a rule with the
// verdict drop (REJECT and "reject" end that way too) or a policy drop.
func (e Event) Drops() bool {
	return (e.Kind == KindRule || e.Kind == KindPolicy) && e.Verdict == VerdictDrop
}

// nftMsgTrace is the netlink message type of a trace event.
const nftMsgTrace = unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_TRACE

// IsTrace reports whether a netlink message type is a trace event.
func IsTrace(t netlink.HeaderType) bool { return t == nftMsgTrace }

var errShort = errors.New("nftrace: message shorter than its nfgenmsg header")

// Decode parses the payload of an NFT_MSG_TRACE netlink message (nfgenmsg
// header, then attributes).
func Decode(b []byte) (Event, error) {
	var e Event
	if len(b) < 4 {
		return e, errShort
	}
	e.Family = b[0]
	ad, err := netlink.NewAttributeDecoder(b[4:])
	if err != nil {
		return e, fmt.Errorf("nftrace: %w", err)
	}
	ad.ByteOrder = binary.BigEndian
	haveVerdict := false
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_TRACE_TABLE:
			e.Table = ad.String()
		case unix.NFTA_TRACE_CHAIN:
			e.Chain = ad.String()
		case unix.NFTA_TRACE_RULE_HANDLE:
			e.Handle = ad.Uint64()
		case unix.NFTA_TRACE_TYPE:
			e.Kind = Kind(ad.Uint32())
		case unix.NFTA_TRACE_ID:
			e.ID = ad.Uint32()
		case unix.NFTA_TRACE_VERDICT:
			haveVerdict = true
			ad.Nested(func(nd *netlink.AttributeDecoder) error {
				for nd.Next() {
					switch nd.Type() {
					case unix.NFTA_VERDICT_CODE:
						e.Verdict = int32(nd.Uint32())
					case unix.NFTA_VERDICT_CHAIN:
						e.Target = nd.String()
					}
				}
				return nil
			})
		case unix.NFTA_TRACE_NETWORK_HEADER:
			e.Network = ad.Bytes()
		case unix.NFTA_TRACE_TRANSPORT_HEADER:
			e.Transport = ad.Bytes()
		case unix.NFTA_TRACE_IIF:
			e.Iif = ad.Uint32()
		case unix.NFTA_TRACE_OIF:
			e.Oif = ad.Uint32()
		case unix.NFTA_TRACE_MARK:
			e.Mark = ad.Uint32()
		case unix.NFTA_TRACE_NFPROTO:
			e.NFProto = uint8(ad.Uint32())
		case unix.NFTA_TRACE_POLICY:
			e.Policy = ad.Uint32()
		}
	}
	if err := ad.Err(); err != nil {
		return e, fmt.Errorf("nftrace: %w", err)
	}
	if e.Kind == KindPolicy && !haveVerdict {
		e.Verdict = int32(e.Policy)
	}
	return e, nil
}

// Tuple is a packet's addresses, protocol and ports as a trace event's
// headers show them.
type Tuple struct {
	Proto        uint8
	Src, Dst     netip.Addr
	Sport, Dport uint16
}

// Tuple reads the packet's tuple from the event's network and transport
// headers; ok is false when the network header is missing or truncated.
func (e Event) Tuple() (t Tuple, ok bool) {
	n := e.Network
	if len(n) == 0 {
		return t, false
	}
	switch n[0] >> 4 {
	case 4:
		if len(n) < 20 {
			return t, false
		}
		t.Proto = n[9]
		t.Src = netip.AddrFrom4([4]byte(n[12:16]))
		t.Dst = netip.AddrFrom4([4]byte(n[16:20]))
	case 6:
		if len(n) < 40 {
			return t, false
		}
		t.Proto = n[6] // the first next header (no extension headers followed)
		t.Src = netip.AddrFrom16([16]byte(n[8:24]))
		t.Dst = netip.AddrFrom16([16]byte(n[24:40]))
	default:
		return t, false
	}
	if (t.Proto == unix.IPPROTO_TCP || t.Proto == unix.IPPROTO_UDP || t.Proto == unix.IPPROTO_SCTP) && len(e.Transport) >= 4 {
		t.Sport = binary.BigEndian.Uint16(e.Transport[0:2])
		t.Dport = binary.BigEndian.Uint16(e.Transport[2:4])
	}
	return t, true
}
