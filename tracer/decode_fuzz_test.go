package tracer

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/tests/bench"
)

// recordOf is the ring buffer record the programs write for ev: the
// inverse of Decode, used to turn recorded events back into records.
func recordOf(t testing.TB, ev journey.Event) []byte {
	t.Helper()
	tuple := func(tu journey.Tuple) bpfTuple {
		var s, d [4]uint32
		var fam uint8 // a header never parsed (the outer one of a plain packet)
		if tu.Src.IsValid() {
			fam = uint8(bpfAddrFamilyFAMILY_IPV4)
		}
		if tu.Src.Is6() || tu.Dst.Is6() {
			fam = uint8(bpfAddrFamilyFAMILY_IPV6)
		}
		if tu.Src.IsValid() {
			s = words(tu.Src)
		}
		if tu.Dst.IsValid() {
			d = words(tu.Dst)
		}
		k := bpfTuple{Saddr: s, Daddr: d, Sport: tu.Sport, Dport: tu.Dport, Proto: tu.Proto,
			TcpFlags: tu.TCPFlags, IcmpType: tu.ICMPType, IcmpCode: tu.ICMPCode, TotLen: tu.IPLen,
			Family: fam, IcmpMtu: tu.ICMPMTU}
		if tu.Frag {
			k.Frag = 1
		}
		return k
	}
	k := bpfEvent{TsNs: ev.TimeNs, Skb: ev.Skb, Journey: ev.Journey, Netns: ev.Netns, Ifindex: ev.Ifindex,
		Reason: ev.Reason, Len: ev.Len, Mtu: ev.MTU, Vni: ev.VNI, Kind: uint8(ev.Kind), Source: uint8(ev.Source),
		Hook: ev.Hook, Stage: ev.Stage, Ct: ev.CT, Pkt: tuple(ev.Pkt), Outer: tuple(ev.Outer)}
	if ev.Encap {
		k.Encap = 1
	}
	if ev.Quote {
		k.Quote = 1
	}
	for i := 0; i < len(ev.Ifname) && i < len(k.Ifname); i++ {
		k.Ifname[i] = int8(ev.Ifname[i])
	}
	var buf bytes.Buffer
	var rec any = &k
	if c := ev.Capture; c.Data != nil {
		kc := bpfEventCap{Ev: k, OrigLen: c.OrigLen, CapLen: uint16(len(c.Data)), L2Len: c.L2Len}
		copy(kc.Data[:], c.Data)
		rec = &kc
	}
	if err := binary.Write(&buf, binary.NativeEndian, rec); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// withCapture is ev carrying n bytes of a packet (l2: an Ethernet header first).
func withCapture(ev journey.Event, n int, l2 bool) journey.Event {
	ev.Capture = journey.Capture{Data: make([]byte, n), OrigLen: uint32(n + 40)}
	for i := range ev.Capture.Data {
		ev.Capture.Data[i] = byte(i)
	}
	if l2 {
		ev.Capture.L2Len = 14
	}
	return ev
}

// recordedEvents are events the tracer decoded from real kernel records
// in the lab (tests/bench's recording), one per distinct shape.
func recordedEvents(t testing.TB) []journey.Event {
	t.Helper()
	recs, err := bench.LoadRecordings(filepath.Join("..", "tests", "bench", bench.RecordingFile))
	if err != nil {
		t.Fatal(err)
	}
	type shape struct {
		kind      journey.Kind
		source    journey.Source
		hook, ct  uint8
		stage     uint8
		encap     bool
		proto     uint8
		tcpFlags  uint8
		reasonSet bool
	}
	seen := map[shape]bool{}
	var out []journey.Event
	for _, r := range recs.Recordings {
		for _, ev := range r.Events {
			s := shape{ev.Kind, ev.Source, ev.Hook, ev.CT, ev.Stage, ev.Encap, ev.Pkt.Proto, ev.Pkt.TCPFlags, ev.Reason != 0}
			if !seen[s] {
				seen[s] = true
				out = append(out, ev)
			}
		}
	}
	return out
}

// ipv6Events are IPv6 shapes of events: a SYN, a quoted packet too big,
// a fragment, IPv6 over an IPv4 VXLAN and over an IPv6 one.
func ipv6Events() []journey.Event {
	a, b := netip.MustParseAddr("fd00:10:244::5"), netip.MustParseAddr("fd00:10:244:1::2")
	u4a, u4b := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("198.51.100.20")
	u6a, u6b := netip.MustParseAddr("2001:db8::10"), netip.MustParseAddr("2001:db8:1::20")
	syn := journey.Tuple{Proto: journey.ProtoTCP, Src: a, Dst: b, Sport: 40000, Dport: 80, TCPFlags: 2, IPLen: 80}
	return []journey.Event{
		{TimeNs: 1, Skb: 2, Journey: 4, Netns: 5, Kind: journey.KindTx, Source: journey.SourceTracepoint, Pkt: syn},
		{TimeNs: 2, Skb: 3, Journey: 5, Netns: 5, Kind: journey.KindRx, Source: journey.SourceTracepoint, Quote: true,
			Pkt: journey.Tuple{Proto: journey.ProtoICMPv6, Src: b, Dst: a, ICMPType: 2, IPLen: 1280, ICMPMTU: 1400}},
		{TimeNs: 3, Skb: 4, Journey: 6, Netns: 5, Kind: journey.KindDrop, Source: journey.SourceTracepoint, Reason: 2,
			Pkt: journey.Tuple{Proto: journey.ProtoUDP, Src: a, Dst: b, Frag: true, IPLen: 1280}},
		{TimeNs: 4, Skb: 2, Journey: 4, Netns: 6, Kind: journey.KindTx, Source: journey.SourceTracepoint, Encap: true, VNI: 1, Pkt: syn,
			Outer: journey.Tuple{Proto: journey.ProtoUDP, Src: u4a, Dst: u4b, Sport: 50000, Dport: 8472, IPLen: 130}},
		{TimeNs: 5, Skb: 2, Journey: 4, Netns: 6, Kind: journey.KindTx, Source: journey.SourceTracepoint, Encap: true, VNI: 1, Pkt: syn,
			Outer: journey.Tuple{Proto: journey.ProtoUDP, Src: u6a, Dst: u6b, Sport: 50000, Dport: 8472, IPLen: 150}},
	}
}

// TestDecodeRecordedRoundTrip: every recorded event (and the IPv6
// shapes), written back as a record, decodes to itself.
func TestDecodeRecordedRoundTrip(t *testing.T) {
	for _, want := range append(recordedEvents(t), ipv6Events()...) {
		var got journey.Event
		if err := Decode(recordOf(t, want), &got); err != nil {
			t.Fatalf("%+v: %v", want, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("decoded %+v\nwant    %+v", got, want)
		}
		capt := withCapture(want, 74, true)
		if err := Decode(recordOf(t, capt), &got); err != nil {
			t.Fatalf("%+v: %v", capt, err)
		}
		if !reflect.DeepEqual(got, capt) {
			t.Errorf("decoded %+v\nwant    %+v", got, capt)
		}
	}
}

// normalized is the record as Decode reads it: padding, the name's bytes
// after its end, the address words an IPv4 address does not use and the
// outer header of a packet that is not encapsulated carry nothing; an
// unparsed header (family 0) reads as IPv4, as it always did.
func normalized(k bpfEvent) bpfEvent {
	k.Pad = 0
	for _, t := range []*bpfTuple{&k.Pkt, &k.Outer} {
		if t.Family == 0 {
			t.Family = uint8(bpfAddrFamilyFAMILY_IPV4)
		}
		if t.Family == uint8(bpfAddrFamilyFAMILY_IPV4) {
			t.Saddr = [4]uint32{t.Saddr[0]}
			t.Daddr = [4]uint32{t.Daddr[0]}
		}
		if t.Frag > 1 {
			t.Frag = 1
		}
	}
	end := bytes.IndexByte(int8Bytes(k.Ifname[:]), 0)
	if end >= 0 {
		for i := end; i < len(k.Ifname); i++ {
			k.Ifname[i] = 0
		}
	}
	if k.Encap == 0 {
		k.Outer = bpfTuple{}
	}
	return k
}

func int8Bytes(b []int8) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		out[i] = byte(c)
	}
	return out
}

// FuzzDecode: any bytes decode without a crash; a record of the wrong
// size or with values the programs never write is an error that leaves
// the event alone; a good one carries every field of the C struct (read
// independently with encoding/binary) into the event.
func FuzzDecode(f *testing.F) {
	f.Add(sampleRecord(f))
	for _, ev := range recordedEvents(f) {
		f.Add(recordOf(f, ev))
	}
	f.Add([]byte{})
	f.Add(make([]byte, eventSize-1))
	f.Add(make([]byte, eventSize+8))
	f.Add(make([]byte, eventSize)) // kind 0
	f.Add(make([]byte, eventCapSize))
	f.Add(recordOf(f, withCapture(recordedEvents(f)[0], 60, false)))
	f.Add(recordOf(f, withCapture(recordedEvents(f)[0], MaxSnaplen, true)))
	for _, ev := range ipv6Events() {
		f.Add(recordOf(f, ev))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		sentinel := journey.Event{Ifname: "untouched", Journey: 7}
		ev := sentinel
		err := Decode(raw, &ev)
		if len(raw) != eventSize && len(raw) != eventCapSize {
			if err == nil {
				t.Fatalf("%d-byte record decoded without error", len(raw))
			}
		}
		if err != nil {
			if !reflect.DeepEqual(ev, sentinel) {
				t.Fatalf("failed decode (%v) changed the event to %+v", err, ev)
			}
			return
		}
		var k bpfEvent
		if err := binary.Read(bytes.NewReader(raw), binary.NativeEndian, &k); err != nil {
			t.Fatalf("decoded a record encoding/binary cannot read: %v", err)
		}
		if err := k.check(); err != nil {
			t.Fatalf("decoded a record check rejects: %v", err)
		}
		if len(ev.Ifname) > len(k.Ifname) || bytes.IndexByte([]byte(ev.Ifname), 0) >= 0 {
			t.Fatalf("device name %q", ev.Ifname)
		}
		if !ev.Encap && ev.Outer != (journey.Tuple{}) {
			t.Fatalf("outer header %+v on a packet that is not encapsulated", ev.Outer)
		}
		if c := ev.Capture; c.Data != nil {
			var kc bpfEventCap
			if err := binary.Read(bytes.NewReader(raw), binary.NativeEndian, &kc); err != nil {
				t.Fatal(err)
			}
			if len(raw) != eventCapSize || !bytes.Equal(c.Data, kc.Data[:kc.CapLen]) || int(c.L2Len) > len(c.Data) ||
				(c.OrigLen != 0 && int(c.OrigLen) < len(c.Data)) {
				t.Fatalf("capture %+v from record %+v", c, kc)
			}
		}
		var back bpfEvent
		if err := binary.Read(bytes.NewReader(recordOf(t, ev)), binary.NativeEndian, &back); err != nil {
			t.Fatal(err)
		}
		if want := normalized(k); back != want {
			t.Fatalf("event %+v\nreads back as %+v\nrecord was   %+v", ev, back, want)
		}
		var again journey.Event
		if err := Decode(raw, &again); err != nil || !reflect.DeepEqual(again, ev) {
			t.Fatalf("second decode: %+v, %v", again, err)
		}
	})
}
