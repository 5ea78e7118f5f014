package nftrace

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync/atomic"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Match is what the marking rule matches: the trace's filter, or the part
// of it that survives NAT (zero fields match anything).
type Match struct {
	Proto        uint8 // IPPROTO_*; 0: any
	Src, Dst     netip.Prefix
	Sport, Dport uint16
	SYNOnly      bool // TCP SYN without ACK
	IPv6         bool // the family of the addresses (when none is set: IPv4)
}

// tableFlagOwner is NFT_TABLE_F_OWNER: the table belongs to the netlink
// socket that made it and vanishes when that socket closes.
const tableFlagOwner = 0x2

// markerPriority runs the marking chains before raw (-300) and conntrack
// defrag (-400 sees the packet before, but decides nothing).
const markerPriority = -350

var tableSeq atomic.Uint32

// Marker is an owner-flagged table in one network namespace whose chains
// (prerouting and output, priority -350) set nftrace on the matching packets.
type Marker struct {
	conn  *nftables.Conn
	Table string
}

// NewMarker creates the marking table in the network namespace netnsFD
// refers to. The table lives as long as the Marker (Close) or the process.
func NewMarker(netnsFD int, m Match) (*Marker, error) {
	var raw *netlink.Conn
	conn, err := nftables.New(nftables.AsLasting(), nftables.WithNetNSFd(netnsFD),
		nftables.WithSockOptions(func(c *netlink.Conn) error { raw = c; return nil }))
	if err != nil {
		return nil, fmt.Errorf("nftables netlink socket: %w", err)
	}
	mk := &Marker{conn: conn, Table: fmt.Sprintf("skbtrail_trace_%d_%d", unix.Getpid(), tableSeq.Add(1))}
	if raw == nil {
		conn.CloseLasting()
		return nil, fmt.Errorf("nftables netlink socket not exposed")
	}
	if err := createOwnedTable(raw, mk.Table); err != nil {
		conn.CloseLasting()
		return nil, err
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: mk.Table}
	exprs := append(m.exprs(), &expr.Immediate{Register: 1, Data: []byte{1}},
		&expr.Meta{Key: expr.MetaKeyNFTRACE, SourceRegister: true, Register: 1})
	policy := nftables.ChainPolicyAccept
	for _, h := range []struct {
		name string
		hook *nftables.ChainHook
	}{{"pre", nftables.ChainHookPrerouting}, {"out", nftables.ChainHookOutput}} {
		c := conn.AddChain(&nftables.Chain{Name: h.name, Table: t, Hooknum: h.hook,
			Priority: nftables.ChainPriorityRef(markerPriority), Type: nftables.ChainTypeFilter, Policy: &policy})
		conn.AddRule(&nftables.Rule{Table: t, Chain: c, Exprs: exprs})
	}
	if err := conn.Flush(); err != nil {
		conn.CloseLasting() // the owner flag takes the table with the socket
		return nil, fmt.Errorf("add nftrace marking chains: %w", err)
	}
	return mk, nil
}

// Close removes the table (closing its owner socket removes it).
func (mk *Marker) Close() error { return mk.conn.CloseLasting() }

// createOwnedTable sends NEWTABLE with the owner flag on c (the library
// cannot set table flags), in a batch of its own.
func createOwnedTable(c *netlink.Conn, name string) error {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_TABLE_NAME, name)
	ae.Bytes(unix.NFTA_TABLE_FLAGS, binaryutil.BigEndian.PutUint32(tableFlagOwner))
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	batchHdr := []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, unix.NFNL_SUBSYS_NFTABLES}
	msgs := []netlink.Message{
		{Header: netlink.Header{Type: unix.NFNL_MSG_BATCH_BEGIN, Flags: netlink.Request}, Data: batchHdr},
		{Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWTABLE),
			Flags: netlink.Request | netlink.Acknowledge | netlink.Create | netlink.Excl},
			Data: append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...)},
		{Header: netlink.Header{Type: unix.NFNL_MSG_BATCH_END, Flags: netlink.Request}, Data: batchHdr},
	}
	sent, err := c.SendMessages(msgs)
	if err != nil {
		return fmt.Errorf("create table inet %s: %w", name, err)
	}
	seq := sent[1].Header.Sequence
	for {
		replies, err := c.Receive()
		if err != nil {
			return fmt.Errorf("create table inet %s: %w", name, err)
		}
		for _, r := range replies {
			if r.Header.Sequence == seq && r.Header.Type == netlink.Error {
				return nil // Receive turns a non-zero error code into err
			}
		}
	}
}

// exprs is the match part of the marking rule (family inet).
func (m Match) exprs() []expr.Any {
	var out []expr.Any
	cmp := func(data []byte) { out = append(out, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data}) }
	load := func(base expr.PayloadBase, off, n uint32) {
		out = append(out, &expr.Payload{DestRegister: 1, Base: base, Offset: off, Len: n})
	}
	nfproto, srcOff, dstOff, alen := byte(unix.NFPROTO_IPV4), uint32(12), uint32(16), uint32(4)
	if m.IPv6 {
		nfproto, srcOff, dstOff, alen = unix.NFPROTO_IPV6, 8, 24, 16
	}
	out = append(out, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1})
	cmp([]byte{nfproto})
	if m.Proto != 0 {
		out = append(out, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1})
		cmp([]byte{m.Proto})
	}
	for _, a := range []struct {
		p   netip.Prefix
		off uint32
	}{{m.Src, srcOff}, {m.Dst, dstOff}} {
		if !a.p.IsValid() || a.p.Bits() == 0 {
			continue
		}
		load(expr.PayloadBaseNetworkHeader, a.off, alen)
		addr := a.p.Masked().Addr().AsSlice()
		if a.p.Bits() < int(alen*8) {
			out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: alen,
				Mask: prefixMask(a.p.Bits(), int(alen)), Xor: make([]byte, alen)})
		}
		cmp(addr)
	}
	port := func(off uint32, p uint16) {
		if p == 0 {
			return
		}
		load(expr.PayloadBaseTransportHeader, off, 2)
		cmp(binary.BigEndian.AppendUint16(nil, p))
	}
	port(0, m.Sport)
	port(2, m.Dport)
	if m.SYNOnly && m.Proto == unix.IPPROTO_TCP {
		const tcpFlagsOff, syn, ack = 13, 0x02, 0x10
		load(expr.PayloadBaseTransportHeader, tcpFlagsOff, 1)
		out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{syn | ack}, Xor: []byte{0}})
		cmp([]byte{syn})
	}
	return out
}

func prefixMask(bits, n int) []byte {
	b := make([]byte, n)
	for i := 0; i < bits; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return b
}
