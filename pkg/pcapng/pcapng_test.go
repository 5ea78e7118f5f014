package pcapng

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/skbtrail/skbtrail/pkg/journey"
)

// packet is one packet read back with gopacket's pcapng reader.
type packet struct {
	iface    pcapgo.NgInterface
	data     []byte
	length   int
	ts       time.Time
	comments []string
	dir      pcapgo.NgEpbFlag
}

func readBack(t *testing.T, b []byte) (*pcapgo.NgReader, []packet) {
	t.Helper()
	r, err := pcapgo.NewNgReader(bytes.NewReader(b), pcapgo.NgReaderOptions{WantMixedLinkType: true})
	if err != nil {
		t.Fatalf("read back: %v", err)
	}
	var out []packet
	for {
		data, ci, opts, err := r.ReadPacketDataWithOptions()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("packet %d: %v", len(out)+1, err)
		}
		intf, err := r.Interface(ci.InterfaceIndex)
		if err != nil {
			t.Fatal(err)
		}
		p := packet{iface: intf, data: data, length: ci.Length, ts: ci.Timestamp, comments: opts.Comments}
		if opts.Flags != nil {
			p.dir = opts.Flags.Direction
		}
		out = append(out, p)
	}
	return r, out
}

var t0 = time.Date(2026, 11, 27, 15, 0, 0, 0, time.UTC)

func frame(netns, dev, event, link string, n int, reply bool, dt time.Duration) journey.Frame {
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(n + i)
	}
	return journey.Frame{Time: t0.Add(dt), Netns: netns, Device: dev, Event: event, Link: link, Len: uint32(n + 100), Data: data, Reply: reply}
}

func sample() *journey.Journey {
	return &journey.Journey{
		Schema:  journey.Schema,
		Verdict: journey.Verdict{Kind: journey.Dropped, Netns: "node-b", Device: "flannel.1", Reason: "NETFILTER_DROP", Hook: "FORWARD", Table: "filter", Chain: "FORWARD", Rule: "policy DROP"},
		Hops:    []journey.Hop{{Netns: "pod-a", Device: "eth0", Event: "tx", Pod: "default/client"}},
		Findings: []journey.Finding{
			{Code: "NF_POLICY_DROP", Severity: journey.SeverityError, Message: "filter/FORWARD policy DROP dropped it"},
		},
		Frames: []journey.Frame{
			frame("pod-a", "eth0", "tx", journey.LinkEthernet, 74, false, 0),
			frame("node-a", "eth0", "nf:OUTPUT", journey.LinkIP, 110, false, time.Microsecond),
			frame("node-a", "eth0", "tx", journey.LinkEthernet, 124, false, 2*time.Microsecond),
			frame("node-b", "flannel.1", "drop", journey.LinkEthernet, 74, false, 3*time.Microsecond),
			frame("pod-a", "eth0", "rx", journey.LinkEthernet, 60, true, 4*time.Microsecond),
		},
	}
}

// TestWriteReadBack: what the writer writes, gopacket's reader reads back:
// one interface per (netns, device, link type) with the right link type,
// the bytes, lengths, times, directions and comments of every frame.
func TestWriteReadBack(t *testing.T) {
	var b bytes.Buffer
	w := NewWriter(&b, 128)
	j := sample()
	if err := w.Write(j); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(j); err != nil { // a second journey reuses the interfaces
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if w.Packets() != 10 {
		t.Errorf("Packets() = %d, want 10", w.Packets())
	}
	r, pkts := readBack(t, b.Bytes())
	if r.NInterfaces() != 4 {
		t.Errorf("%d interfaces, want 4 (pod-a/eth0, node-a/eth0 twice: IP and Ethernet, node-b/flannel.1)", r.NInterfaces())
	}
	if app := r.SectionInfo().Application; app != "skbtrail" {
		t.Errorf("section application %q", app)
	}
	if len(pkts) != 10 {
		t.Fatalf("%d packets, want 10", len(pkts))
	}
	for i, p := range pkts {
		f := j.Frames[i%5]
		if p.iface.Name != f.Netns+"/"+f.Device {
			t.Errorf("packet %d on %q, want %s/%s", i, p.iface.Name, f.Netns, f.Device)
		}
		wantLink := layers.LinkTypeEthernet
		if f.Link == journey.LinkIP {
			wantLink = layers.LinkTypeRaw
		}
		if p.iface.LinkType != wantLink {
			t.Errorf("packet %d link type %v, want %v", i, p.iface.LinkType, wantLink)
		}
		if !bytes.Equal(p.data, f.Data) || p.length != int(f.Len) || !p.ts.Equal(f.Time) {
			t.Errorf("packet %d: %d bytes of %d at %v, want %d of %d at %v", i, len(p.data), p.length, p.ts, len(f.Data), f.Len, f.Time)
		}
		if len(p.comments) == 0 || !strings.Contains(p.comments[0], f.Event) {
			t.Errorf("packet %d comments %q do not name the hop %s", i, p.comments, f.Event)
		}
	}
	if pkts[0].iface.Description == "" || !strings.Contains(pkts[0].iface.Description, "default/client") {
		t.Errorf("interface description %q does not name the pod", pkts[0].iface.Description)
	}
	if pkts[0].dir != pcapgo.NgEpbFlagDirectionOutbound || pkts[4].dir != pcapgo.NgEpbFlagDirectionInbound {
		t.Errorf("directions %v %v, want outbound for tx, inbound for rx", pkts[0].dir, pkts[4].dir)
	}
	// the last request frame carries the verdict and the first error finding
	last := strings.Join(pkts[3].comments, "\n")
	for _, w := range []string{"verdict: dropped", "NETFILTER_DROP", "FORWARD", "policy DROP", "NF_POLICY_DROP"} {
		if !strings.Contains(last, w) {
			t.Errorf("last request packet's comments %q lack %q", last, w)
		}
	}
	if strings.Contains(strings.Join(pkts[4].comments, "\n"), "verdict") || !strings.Contains(pkts[4].comments[0], "reply") {
		t.Errorf("reply packet comments %q", pkts[4].comments)
	}
}

// TestEmpty: a stream without any packet is still a pcapng file readers
// open, with an interface that says why it is empty.
func TestEmpty(t *testing.T) {
	var b bytes.Buffer
	w := NewWriter(&b, 128)
	if err := w.Write(&journey.Journey{Schema: journey.Schema}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r, pkts := readBack(t, b.Bytes())
	if len(pkts) != 0 || r.NInterfaces() != 1 {
		t.Fatalf("%d packets, %d interfaces", len(pkts), r.NInterfaces())
	}
	if i, _ := r.Interface(0); !strings.Contains(i.Description, "no traced packet") {
		t.Errorf("interface %+v", i)
	}
}

// FuzzWrite: frames from saved JSON (skbtrail show --pcapng) are outside
// input; any of them writes without a panic and reads back.
func FuzzWrite(f *testing.F) {
	f.Add("pod-a", "eth0", "tx", "ether", []byte{1, 2, 3}, uint32(3))
	f.Add("", "", "", "ip", []byte{}, uint32(0))
	f.Add("n", "d", "rx", "other", []byte{0x45}, uint32(1<<31))
	f.Fuzz(func(t *testing.T, netns, dev, event, link string, data []byte, n uint32) {
		j := &journey.Journey{Frames: []journey.Frame{{Time: t0, Netns: netns, Device: dev, Event: event, Link: link, Len: n, Data: data}}}
		var b bytes.Buffer
		w := NewWriter(&b, 0)
		if err := w.Write(j); err != nil {
			return // e.g. a name too long for an option: an error, not a crash
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if _, pkts := readBack(t, b.Bytes()); len(pkts) != 1 || !bytes.Equal(pkts[0].data, data) {
			t.Fatalf("read back %d packets", len(pkts))
		}
	})
}
