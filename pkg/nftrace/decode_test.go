package nftrace

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// message builds an NFT_MSG_TRACE payload as the kernel does.
func message(t *testing.T, fam uint8, build func(ae *netlink.AttributeEncoder)) []byte {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	build(ae)
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{fam, unix.NFNETLINK_V0, 0, 0}, b...)
}

func TestDecodeRuleDrop(t *testing.T) {
	ip := make([]byte, 20)
	ip[0], ip[9] = 0x45, unix.IPPROTO_TCP
	copy(ip[12:], []byte{10, 244, 0, 5})
	copy(ip[16:], []byte{10, 244, 1, 2})
	tcp := []byte{0xa8, 0x72, 0, 80}
	b := message(t, unix.NFPROTO_IPV4, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_TRACE_TABLE, "filter")
		ae.String(unix.NFTA_TRACE_CHAIN, "FORWARD")
		ae.Uint64(unix.NFTA_TRACE_RULE_HANDLE, 7)
		ae.Uint32(unix.NFTA_TRACE_TYPE, unix.NFT_TRACETYPE_RULE)
		ae.Uint32(unix.NFTA_TRACE_ID, 0xdeadbeef)
		ae.Nested(unix.NFTA_TRACE_VERDICT, func(nae *netlink.AttributeEncoder) error {
			nae.Uint32(unix.NFTA_VERDICT_CODE, 0)
			return nil
		})
		ae.Bytes(unix.NFTA_TRACE_NETWORK_HEADER, ip)
		ae.Bytes(unix.NFTA_TRACE_TRANSPORT_HEADER, tcp)
		ae.Uint32(unix.NFTA_TRACE_IIF, 4)
	})
	e, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if e.Table != "filter" || e.Chain != "FORWARD" || e.Handle != 7 || e.Kind != KindRule || e.ID != 0xdeadbeef || e.Iif != 4 || !e.Drops() {
		t.Errorf("decoded %+v", e)
	}
	tu, ok := e.Tuple()
	want := Tuple{Proto: unix.IPPROTO_TCP, Src: netip.MustParseAddr("10.244.0.5"), Dst: netip.MustParseAddr("10.244.1.2"), Sport: 43122, Dport: 80}
	if !ok || tu != want {
		t.Errorf("tuple %+v %v, want %+v", tu, ok, want)
	}
}

func TestDecodePolicyAndJump(t *testing.T) {
	pol := message(t, unix.NFPROTO_INET, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(unix.NFTA_TRACE_TYPE, unix.NFT_TRACETYPE_POLICY)
		ae.Uint32(unix.NFTA_TRACE_POLICY, 0)
	})
	if e, err := Decode(pol); err != nil || !e.Drops() || e.Kind != KindPolicy {
		t.Errorf("policy drop: %+v %v", e, err)
	}
	acc := message(t, unix.NFPROTO_INET, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(unix.NFTA_TRACE_TYPE, unix.NFT_TRACETYPE_POLICY)
		ae.Uint32(unix.NFTA_TRACE_POLICY, 1)
	})
	if e, err := Decode(acc); err != nil || e.Drops() {
		t.Errorf("policy accept: %+v %v", e, err)
	}
	jump := message(t, unix.NFPROTO_IPV4, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(unix.NFTA_TRACE_TYPE, unix.NFT_TRACETYPE_RULE)
		ae.Nested(unix.NFTA_TRACE_VERDICT, func(nae *netlink.AttributeEncoder) error {
			nae.Int32(unix.NFTA_VERDICT_CODE, VerdictJump)
			nae.String(unix.NFTA_VERDICT_CHAIN, "KUBE-FORWARD")
			return nil
		})
	})
	if e, err := Decode(jump); err != nil || e.Drops() || e.Verdict != VerdictJump || e.Target != "KUBE-FORWARD" {
		t.Errorf("jump: %+v %v", e, err)
	}
}

func TestDecodeBadInput(t *testing.T) {
	for _, b := range [][]byte{nil, {2}, {2, 0, 0, 0, 0xff}, {2, 0, 0, 0, 8, 0, 1, 0}} {
		if _, err := Decode(b); err == nil && len(b) < 5 {
			t.Errorf("Decode(%x) = nil error", b)
		}
	}
	short := Event{Network: []byte{0x45, 0, 0}}
	if _, ok := short.Tuple(); ok {
		t.Error("a truncated IPv4 header gave a tuple")
	}
}

// FuzzDecode: the decoder reads what the kernel (or anything that can
// write to the socket) sends; it must never panic, and a decoded packet
// tuple must come from bytes that are there. Seeds: captured messages
// (go test -run TestMarkerAndListener -update ./pkg/nftrace/).
func FuzzDecode(f *testing.F) {
	f.Add([]byte{unix.NFPROTO_IPV4, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err != nil {
			return
		}
		if tu, ok := e.Tuple(); ok {
			if !tu.Src.IsValid() || !tu.Dst.IsValid() {
				t.Fatalf("tuple without addresses: %+v", tu)
			}
			if tu.Sport != 0 && len(e.Transport) < 4 {
				t.Fatalf("ports from a %d-byte transport header", len(e.Transport))
			}
		}
		_ = e.Drops()
	})
}
