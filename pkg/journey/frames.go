package journey

import (
	"bytes"
	"time"
)

// Link types of a frame's bytes.
const (
	LinkEthernet = "ether" // Data starts with an Ethernet header
	LinkIP       = "ip"    // Data starts with the IP header
)

// Frame is the packet as it was at one hop: its first bytes, for
// `trace --pcapng` (present only when a trace asked for bytes).
type Frame struct {
	Time   time.Time `json:"time"`
	TUs    uint64    `json:"t_us"`
	Netns  string    `json:"netns"`
	Device string    `json:"device,omitempty"`
	Event  string    `json:"event"`
	// Reply marks the reverse direction (the answer, a RST, an ICMP error).
	Reply bool   `json:"reply,omitempty"`
	CT    string `json:"ct,omitempty"`
	Link  string `json:"link"`
	// Len is the packet's length at this hop from the first byte of Data;
	// Data holds its first bytes (base64 in JSON).
	Len  uint32 `json:"len"`
	Data []byte `json:"data"`
}

// AddFrames fills j.Frames from the captured bytes of its events (forward
// direction, then the reverse, then an ICMP error about the packet), the times made wall-clock by wall. Within
// one visit of a netfilter hook only the packet as it entered and, when
// the hook rewrote it, as it left are kept. Events without bytes add
// nothing.
func (j *Journey) AddFrames(wall func(monoNs uint64) time.Time) {
	t0, _ := j.FirstEventNs()
	j.Frames = nil
	for _, dir := range []struct {
		evs   []Event
		reply bool
	}{{j.Events, false}, {j.ReplyEvents, true}, {j.ErrorEvents, true}} {
		evs := dir.evs
		for i := range evs {
			e := &evs[i]
			if e.Capture.Data == nil {
				continue
			}
			if e.Kind == KindNF && i > 0 && sameVisit(evs[i-1], *e) {
				// a later stage of the same hook: keep it only as the
				// visit's last event, and only if the hook changed it
				if i+1 < len(evs) && sameVisit(*e, evs[i+1]) {
					continue
				}
				if first := visitStart(evs, i); bytes.Equal(evs[first].Capture.Data, e.Capture.Data) {
					continue
				}
			}
			j.Frames = append(j.Frames, j.frameOf(*e, t0, wall, dir.reply))
		}
	}
}

// sameVisit: b is a later observer of the same pass through a hook as a
// (observers run in stage order; a stage that does not grow is a new pass).
func sameVisit(a, b Event) bool {
	return a.Kind == KindNF && b.Kind == KindNF && a.Netns == b.Netns && a.Hook == b.Hook && a.Skb == b.Skb && b.Stage > a.Stage
}

// visitStart is the index of the first event of the hook visit evs[i] is in.
func visitStart(evs []Event, i int) int {
	for i > 0 && sameVisit(evs[i-1], evs[i]) {
		i--
	}
	return i
}

func (j *Journey) frameOf(e Event, t0 uint64, wall func(uint64) time.Time, reply bool) Frame {
	name := e.Kind.String()
	if n := HopName(e); n != "" {
		name = n
	}
	if e.Kind == KindNF {
		name = "nf:" + HookName(e.Hook)
	}
	if e.Quote {
		name = "icmp-error " + name
	}
	f := Frame{
		Netns:  j.NetnsName(e.Netns),
		Device: e.Ifname,
		Event:  name,
		Reply:  reply,
		CT:     e.CTState(),
		Link:   LinkIP,
		Len:    e.Capture.OrigLen,
		Data:   e.Capture.Data,
	}
	if e.TimeNs >= t0 {
		f.TUs = (e.TimeNs - t0) / 1000
	}
	if wall != nil {
		f.Time = wall(e.TimeNs)
	}
	if e.Capture.L2Len > 0 {
		f.Link = LinkEthernet
	}
	if f.Len < uint32(len(f.Data)) {
		f.Len = uint32(len(f.Data))
	}
	return f
}

// FirstEventNs is the time (CLOCK_MONOTONIC ns) of the journey's first
// event, of the request or else of the reply; false when it has none.
func (j *Journey) FirstEventNs() (uint64, bool) {
	switch {
	case len(j.Events) > 0:
		return j.Events[0].TimeNs, true
	case len(j.ReplyEvents) > 0:
		return j.ReplyEvents[0].TimeNs, true
	}
	return 0, false
}
