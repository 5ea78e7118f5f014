// Package pcapng writes the frames of journeys (the packet's bytes at each
// hop, see journey.Frame) as pcapng for Wireshark and tshark: one
// interface per network namespace and device (and link type), one packet
// per hop, the hop, netfilter hook and verdict in packet comments.
package pcapng

import (
	"fmt"
	"io"
	"runtime"
	"strings"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/skbtrail/skbtrail/pkg/journey"
)

// Writer writes journeys' frames to one pcapng stream.
type Writer struct {
	out     io.Writer
	snaplen uint32
	ng      *pcapgo.NgWriter
	ifaces  map[ifaceKey]int
	packets int
}

type ifaceKey struct{ netns, device, link string }

// NewWriter writes to out; snaplen is the most bytes a frame carries (the
// interfaces' snap length).
func NewWriter(out io.Writer, snaplen int) *Writer {
	return &Writer{out: out, snaplen: uint32(snaplen), ifaces: map[ifaceKey]int{}}
}

// Packets is the number of packets written so far.
func (w *Writer) Packets() int { return w.packets }

var sectionInfo = pcapgo.NgWriterOptions{SectionInfo: pcapgo.NgSectionInfo{
	Hardware:    runtime.GOARCH,
	OS:          runtime.GOOS,
	Application: "skbtrail",
}}

// iface returns the interface id of a frame's (netns, device, link type),
// adding the interface (and, for the first one, the section) when new.
func (w *Writer) iface(f journey.Frame, pods map[string]string) (int, error) {
	k := ifaceKey{f.Netns, f.Device, f.Link}
	if id, ok := w.ifaces[k]; ok {
		return id, nil
	}
	intf := pcapgo.NgInterface{
		Name:                ifaceName(f.Netns, f.Device),
		Description:         ifaceDescription(f, pods[f.Netns]),
		OS:                  runtime.GOOS,
		LinkType:            layers.LinkTypeRaw,
		SnapLength:          w.snaplen,
		TimestampResolution: 9,
	}
	if f.Link == journey.LinkEthernet {
		intf.LinkType = layers.LinkTypeEthernet
	}
	var id int
	var err error
	if w.ng == nil {
		w.ng, err = pcapgo.NewNgWriterInterface(w.out, intf, sectionInfo)
	} else {
		id, err = w.ng.AddInterface(intf)
	}
	if err != nil {
		return 0, fmt.Errorf("pcapng interface %s: %w", intf.Name, err)
	}
	w.ifaces[k] = id
	return id, nil
}

func ifaceName(netns, device string) string {
	if device == "" {
		device = "(no device)"
	}
	return netns + "/" + device
}

func ifaceDescription(f journey.Frame, pod string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "device %s in network namespace %s", f.Device, f.Netns)
	if pod != "" {
		fmt.Fprintf(&b, " (pod %s)", pod)
	}
	if f.Link == journey.LinkIP {
		b.WriteString("; IP packets: no link-layer header at these hops (netfilter hooks, before the header was built, or not an Ethernet device)")
	}
	return b.String()
}

// Write writes every frame of j, in order, and flushes.
func (w *Writer) Write(j *journey.Journey) error {
	pods := map[string]string{}
	for _, h := range j.Hops {
		if h.Pod != "" {
			pods[h.Netns] = h.Pod
		}
	}
	lastFwd := -1
	for i, f := range j.Frames {
		if !f.Reply {
			lastFwd = i
		}
	}
	for i, f := range j.Frames {
		id, err := w.iface(f, pods)
		if err != nil {
			return err
		}
		ci := gopacket.CaptureInfo{
			Timestamp:      f.Time,
			CaptureLength:  len(f.Data),
			Length:         int(f.Len),
			InterfaceIndex: id,
		}
		if ci.Length < ci.CaptureLength {
			ci.Length = ci.CaptureLength
		}
		opts := pcapgo.NgPacketOptions{Comments: comments(j, f, i == lastFwd)}
		switch {
		case f.Event == "tx" || strings.HasPrefix(f.Event, "nf:OUTPUT") || strings.HasPrefix(f.Event, "nf:POSTROUTING"):
			opts.Flags = &pcapgo.NgEpbFlags{Direction: pcapgo.NgEpbFlagDirectionOutbound}
		case f.Event == "rx" || strings.HasPrefix(f.Event, "nf:PREROUTING") || strings.HasPrefix(f.Event, "nf:INPUT"):
			opts.Flags = &pcapgo.NgEpbFlags{Direction: pcapgo.NgEpbFlagDirectionInbound}
		}
		if err := w.ng.WritePacketWithOptions(ci, f.Data, opts); err != nil {
			return fmt.Errorf("pcapng packet: %w", err)
		}
		w.packets++
	}
	return w.Flush()
}

// Flush writes out what is buffered.
func (w *Writer) Flush() error {
	if w.ng == nil {
		return nil
	}
	if err := w.ng.Flush(); err != nil {
		return fmt.Errorf("pcapng: %w", err)
	}
	return nil
}

// Close finishes the stream. A stream without any packet still gets a
// section and an interface that says so, so readers open it.
func (w *Writer) Close() error {
	if w.ng == nil {
		var err error
		w.ng, err = pcapgo.NewNgWriterInterface(w.out, pcapgo.NgInterface{
			Name:                "skbtrail",
			Description:         "no traced packet carried bytes",
			OS:                  runtime.GOOS,
			LinkType:            layers.LinkTypeRaw,
			SnapLength:          w.snaplen,
			TimestampResolution: 9,
		}, sectionInfo)
		if err != nil {
			return fmt.Errorf("pcapng: %w", err)
		}
	}
	return w.Flush()
}

// comments are a frame's packet comments: the hop, and on the journey's
// last forward frame its verdict and first error finding.
func comments(j *journey.Journey, f journey.Frame, last bool) []string {
	dir := "request"
	if f.Reply {
		dir = "reply"
	}
	hop := fmt.Sprintf("skbtrail %s hop: %s at %s", dir, f.Event, ifaceName(f.Netns, f.Device))
	if f.CT != "" {
		hop += ", conntrack " + f.CT
	}
	out := []string{hop}
	if !last {
		return out
	}
	v := j.Verdict
	s := "verdict: " + v.Kind
	if v.Reason != "" {
		s += ", reason " + v.Reason
	}
	if v.Netns != "" || v.Device != "" {
		s += " at " + ifaceName(v.Netns, v.Device)
	}
	if v.Hook != "" {
		s += ", hook " + v.Hook
	}
	if v.Table != "" || v.Chain != "" {
		s += fmt.Sprintf(", %s/%s", v.Table, v.Chain)
	}
	if v.Rule != "" {
		s += ", rule " + v.Rule
	}
	out = append(out, s)
	for _, fd := range j.Findings {
		if fd.Severity == journey.SeverityError {
			out = append(out, fmt.Sprintf("%s: %s", fd.Code, fd.Message))
			break
		}
	}
	return out
}
