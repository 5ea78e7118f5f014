package nftrace

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

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
var markerPriority = int32(-350)

// nfAccept is the verdict NF_ACCEPT (the chains' policy).
const nfAccept = 1

var tableSeq atomic.Uint32

// Marker is an owner-flagged table in one network namespace whose chains
// (prerouting and output, priority -350) set nftrace on the matching packets.
type Marker struct {
	conn  *netlink.Conn // the table's owner: closing it removes the table
	Table string
}

// markerHooks are the marking chains: where packets enter a namespace's
// stack and where it sends its own.
var markerHooks = []struct {
	name string
	hook uint32
}{{"pre", unix.NF_INET_PRE_ROUTING}, {"out", unix.NF_INET_LOCAL_OUT}}

// markerTimeout bounds the wait for the kernel's answer to the batch.
const markerTimeout = 5 * time.Second

// NewMarker creates the marking table in the network namespace netnsFD
// refers to (0: the calling thread's), in one nf_tables transaction. The
// table lives as long as the Marker (Close) or the process.
func NewMarker(netnsFD int, m Match) (*Marker, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: netnsFD})
	if err != nil {
		return nil, fmt.Errorf("nftables netlink socket: %w", err)
	}
	mk := &Marker{conn: c, Table: fmt.Sprintf("%s%d_%d", MarkerPrefix, unix.Getpid(), tableSeq.Add(1))}
	msgs, err := mk.batch(m)
	if err == nil {
		err = sendBatch(c, msgs)
	}
	if err != nil {
		c.Close() // the owner flag takes whatever was made with the socket
		return nil, fmt.Errorf("add nftrace marking table inet %s: %w", mk.Table, err)
	}
	return mk, nil
}

// Close removes the table (closing its owner socket removes it).
func (mk *Marker) Close() error { return mk.conn.Close() }

// batch is the transaction: the owned table, its two base chains, a
// marking rule in each.
func (mk *Marker) batch(m Match) ([]netlink.Message, error) {
	rule := append(m.exprs(), &expr.Immediate{Register: 1, Data: []byte{1}},
		&expr.Meta{Key: expr.MetaKeyNFTRACE, SourceRegister: true, Register: 1})
	var elems []byte
	for _, e := range rule {
		b, err := expr.Marshal(unix.NFPROTO_INET, e)
		if err != nil {
			return nil, err
		}
		elems = appendAttr(elems, unix.NLA_F_NESTED|unix.NFTA_LIST_ELEM, b)
	}
	msg := func(typ uint16, flags netlink.HeaderFlags, attrs []byte) netlink.Message {
		return netlink.Message{
			Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | typ), Flags: netlink.Request | flags},
			Data:   append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
		}
	}
	table := appendAttr(nil, unix.NFTA_TABLE_NAME, cstr(mk.Table))
	table = appendAttr(table, unix.NFTA_TABLE_FLAGS, be32(tableFlagOwner))
	msgs := []netlink.Message{msg(unix.NFT_MSG_NEWTABLE, netlink.Create|netlink.Excl, table)}
	for _, h := range markerHooks {
		hook := appendAttr(nil, unix.NFTA_HOOK_HOOKNUM, be32(h.hook))
		hook = appendAttr(hook, unix.NFTA_HOOK_PRIORITY, be32(uint32(markerPriority)))
		chain := appendAttr(nil, unix.NFTA_CHAIN_TABLE, cstr(mk.Table))
		chain = appendAttr(chain, unix.NFTA_CHAIN_NAME, cstr(h.name))
		chain = appendAttr(chain, unix.NLA_F_NESTED|unix.NFTA_CHAIN_HOOK, hook)
		chain = appendAttr(chain, unix.NFTA_CHAIN_POLICY, be32(nfAccept))
		chain = appendAttr(chain, unix.NFTA_CHAIN_TYPE, cstr("filter"))
		r := appendAttr(nil, unix.NFTA_RULE_TABLE, cstr(mk.Table))
		r = appendAttr(r, unix.NFTA_RULE_CHAIN, cstr(h.name))
		r = appendAttr(r, unix.NLA_F_NESTED|unix.NFTA_RULE_EXPRESSIONS, elems)
		msgs = append(msgs, msg(unix.NFT_MSG_NEWCHAIN, netlink.Create, chain),
			msg(unix.NFT_MSG_NEWRULE, netlink.Create|unix.NLM_F_APPEND, r))
	}
	msgs[len(msgs)-1].Header.Flags |= netlink.Acknowledge // one answer for the transaction
	return msgs, nil
}

// sendBatch sends msgs as one nf_tables transaction and waits for its
// answer (an error names the first message the kernel refused).
func sendBatch(c *netlink.Conn, msgs []netlink.Message) error {
	hdr := []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, unix.NFNL_SUBSYS_NFTABLES}
	all := append([]netlink.Message{{Header: netlink.Header{Type: unix.NFNL_MSG_BATCH_BEGIN, Flags: netlink.Request}, Data: hdr}}, msgs...)
	all = append(all, netlink.Message{Header: netlink.Header{Type: unix.NFNL_MSG_BATCH_END, Flags: netlink.Request}, Data: hdr})
	sent, err := c.SendMessages(all)
	if err != nil {
		return err
	}
	if err := c.SetReadDeadline(time.Now().Add(markerTimeout)); err != nil {
		return err
	}
	last := sent[len(sent)-2].Header.Sequence
	for {
		replies, err := c.Receive() // an error message of the batch comes back as err
		if err != nil {
			return err
		}
		for _, r := range replies {
			if r.Header.Type == netlink.Error && r.Header.Sequence == last {
				return c.SetReadDeadline(time.Time{})
			}
		}
	}
}

func appendAttr(b []byte, typ uint16, data []byte) []byte {
	n := unix.NLA_HDRLEN + len(data)
	b = binary.NativeEndian.AppendUint16(b, uint16(n))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for range nlaAlign(n) - n {
		b = append(b, 0)
	}
	return b
}

func nlaAlign(n int) int { return (n + unix.NLA_ALIGNTO - 1) &^ (unix.NLA_ALIGNTO - 1) }

func cstr(s string) []byte { return append([]byte(s), 0) }

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

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
