package tracer

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/journey"
)

func be(a string) [4]uint32 { return words(netip.MustParseAddr(a)) }

func sampleRecord(t testing.TB) []byte {
	k := bpfEvent{
		TsNs: 123456789, Skb: 0xffff888100000000, Journey: 42, Netns: 4026531840, Ifindex: 3,
		Reason: 12, Len: 124, Mtu: 1500, Vni: 1, Kind: uint8(journey.KindTx), Source: 1, Encap: 1,
		Pkt:   bpfTuple{Saddr: be("10.244.0.5"), Daddr: be("10.244.1.2"), Sport: 43122, Dport: 80, Proto: 6, TcpFlags: 2, Family: 4},
		Outer: bpfTuple{Saddr: be("192.0.2.10"), Daddr: be("198.51.100.20"), Sport: 50000, Dport: 8472, Proto: 17, Family: 4},
	}
	copy(k.Ifname[:], []int8{'f', 'l', 'a', 'n', 'n', 'e', 'l', '.', '1'})
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.NativeEndian, &k); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestDecode(t *testing.T) {
	var ev journey.Event
	if err := Decode(sampleRecord(t), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.TimeNs != 123456789 || ev.Journey != 42 || ev.Netns != 4026531840 || ev.Ifindex != 3 || ev.Ifname != "flannel.1" ||
		ev.Kind != journey.KindTx || ev.Reason != 12 || ev.Len != 124 || ev.MTU != 1500 || !ev.Encap || ev.VNI != 1 {
		t.Errorf("decoded %+v", ev)
	}
	want := journey.Tuple{Proto: 6, Src: netip.MustParseAddr("10.244.0.5"), Dst: netip.MustParseAddr("10.244.1.2"), Sport: 43122, Dport: 80, TCPFlags: 2}
	if ev.Pkt != want {
		t.Errorf("pkt %+v, want %+v", ev.Pkt, want)
	}
	if ev.Outer.Src.String() != "192.0.2.10" || ev.Outer.Dst.String() != "198.51.100.20" || ev.Outer.Dport != 8472 {
		t.Errorf("outer %+v", ev.Outer)
	}
}

func TestDecodeShortRecord(t *testing.T) {
	var ev journey.Event
	if err := Decode(make([]byte, eventSize-1), &ev); err == nil {
		t.Fatal("short record decoded without error")
	}
}

func TestFilterKernelAndMatch(t *testing.T) {
	f := Filter{Dst: netip.MustParsePrefix("10.96.0.0/12"), Dport: 80, Proto: 6, SYNOnly: true, Netns: 7}
	k, err := f.kernel()
	if err != nil {
		t.Fatal(err)
	}
	if k.Daddr != be("10.96.0.0") || k.Dmask != be("255.240.0.0") || k.Dport != 80 || k.SynOnly != 1 || k.Enabled != 1 ||
		k.Smask != [4]uint32{} || k.Family != 4 {
		t.Errorf("kernel filter %+v", k)
	}
	syn := journey.Tuple{Proto: 6, Src: netip.MustParseAddr("10.244.0.5"), Dst: netip.MustParseAddr("10.96.0.100"), Sport: 1, Dport: 80, TCPFlags: 0x02}
	if !f.Match(syn, 7) {
		t.Error("SYN to the service range does not match")
	}
	synack := syn
	synack.TCPFlags = 0x12
	for name, c := range map[string]struct {
		tu journey.Tuple
		ns uint32
	}{"other netns": {syn, 8}, "SYN|ACK": {synack, 7}} {
		if f.Match(c.tu, c.ns) {
			t.Errorf("%s matches", name)
		}
	}
	if _, err := (Filter{Src: netip.MustParsePrefix("2001:db8::/32"), Dst: netip.MustParsePrefix("10.0.0.0/8")}).kernel(); err == nil {
		t.Error("filter mixing IPv6 and IPv4 accepted")
	}
}

func TestFilterIPv6(t *testing.T) {
	f := Filter{Src: netip.MustParsePrefix("fd00:10:244::/48"), Dst: netip.MustParsePrefix("fd00:10:96::1/128"), Dport: 80}
	k, err := f.kernel()
	if err != nil {
		t.Fatal(err)
	}
	if k.Family != 6 || k.Saddr != be("fd00:10:244::") || k.Smask != be("ffff:ffff:ffff::") ||
		k.Daddr != be("fd00:10:96::1") || k.Dmask != be("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff") {
		t.Errorf("kernel filter %+v", k)
	}
	in := journey.Tuple{Proto: 6, Src: netip.MustParseAddr("fd00:10:244:0:1::5"), Dst: netip.MustParseAddr("fd00:10:96::1"), Dport: 80}
	if !f.Match(in, 0) {
		t.Error("IPv6 SYN does not match")
	}
	out := in
	out.Src = netip.MustParseAddr("fd00:10:245::5")
	if f.Match(out, 0) {
		t.Error("IPv6 source outside the prefix matches")
	}
	// an IPv4 filter never matches IPv6, and an IPv4-mapped prefix is the IPv4 one
	v4 := Filter{Dst: netip.MustParsePrefix("::ffff:10.96.0.0/108")}
	k4, err := v4.kernel()
	if err != nil || k4.Family != 4 || k4.Daddr != be("10.96.0.0") || k4.Dmask != be("255.240.0.0") {
		t.Errorf("mapped prefix: %+v, %v", k4, err)
	}
	if v4.Match(in, 0) {
		t.Error("IPv4 filter matches IPv6")
	}
}

func TestDecodeIPv6(t *testing.T) {
	k := bpfEvent{Kind: uint8(journey.KindRx), Source: 1,
		Pkt: bpfTuple{Saddr: be("fd00::1"), Daddr: be("2001:db8::2"), Proto: 58, IcmpType: 2, Family: 6, IcmpMtu: 1400}}
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.NativeEndian, &k); err != nil {
		t.Fatal(err)
	}
	var ev journey.Event
	if err := Decode(buf.Bytes(), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Pkt.Src.String() != "fd00::1" || ev.Pkt.Dst.String() != "2001:db8::2" || ev.Pkt.ICMPMTU != 1400 ||
		journey.ProtoName(ev.Pkt.Proto) != "icmpv6" {
		t.Errorf("decoded %+v", ev.Pkt)
	}
	k.Pkt.Family = 5
	buf.Reset()
	_ = binary.Write(&buf, binary.NativeEndian, &k)
	if err := Decode(buf.Bytes(), &ev); err == nil {
		t.Error("family 5 decoded")
	}
}

func TestSettingsTunnelPorts(t *testing.T) {
	k, err := Settings{}.kernel(0b101)
	if err != nil {
		t.Fatal(err)
	}
	if k.TunnelPorts[0] != 8472 || k.TunnelPorts[1] != 4789 || k.ActiveFilters != 0b101 {
		t.Errorf("settings %+v", k)
	}
	if _, err := (Settings{TunnelPorts: []uint16{1, 2, 3, 4, 5}}).kernel(0); err == nil {
		t.Error("five tunnel ports accepted")
	}
}

func TestDropReasonsFromKernelBTF(t *testing.T) {
	d, err := LoadDropReasons()
	if err != nil {
		t.Fatalf("kernel BTF: %v", err)
	}
	v, ok := d.Value("NETFILTER_DROP")
	if !ok || d.Name(v) != "NETFILTER_DROP" {
		t.Fatalf("NETFILTER_DROP not found in this kernel's enum skb_drop_reason")
	}
	if _, ok := d.Value("NOT_SPECIFIED"); !ok {
		t.Error("NOT_SPECIFIED missing")
	}
	if got := d.Name(0x30005); got != "SUBSYS_3_5" {
		t.Errorf("unknown subsystem reason named %q", got)
	}
}

func BenchmarkDecode(b *testing.B) {
	rec := sampleRecord(b)
	var ev journey.Event
	b.SetBytes(int64(len(rec)))
	for b.Loop() {
		if err := Decode(rec, &ev); err != nil {
			b.Fatal(err)
		}
	}
}
