// Package qdisc reads the queueing disciplines of a device in a network
// namespace (`tc -s qdisc show dev DEV`): kind, place, fill, limit and
// counters, to say why a device dropped a packet at its queue.
package qdisc

import (
	"fmt"

	"github.com/vishvananda/netlink"

	"github.com/skbtrail/skbtrail/netnsutil"
)

// Qdisc is one queueing discipline of a device.
type Qdisc struct {
	Kind   string // "tbf", "pfifo_fast", "fq_codel", ...
	Handle string // "8001:"
	Root   bool   // attached at the device's root (egress)
	// Limit is the queue's limit in LimitUnit ("bytes" or "packets"); 0
	// when this kind's limit is not known.
	Limit     uint32
	LimitUnit string
	Rate      uint64 // bytes per second (tbf), 0 otherwise
	// Counters as `tc -s` shows them.
	QLen, Backlog, Drops, Overlimits uint32
}

// List returns the qdiscs of device dev in the namespace at nsPath.
func List(nsPath, dev string) ([]Qdisc, error) {
	h, err := netnsutil.NewHandle(nsPath)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	link, err := h.LinkByName(dev)
	if err != nil {
		return nil, fmt.Errorf("qdiscs of %s in %s: %w", dev, nsPath, err)
	}
	qs, err := h.QdiscList(link)
	if err != nil {
		return nil, fmt.Errorf("qdiscs of %s in %s: %w", dev, nsPath, err)
	}
	out := make([]Qdisc, 0, len(qs))
	for _, q := range qs {
		out = append(out, describe(q, link.Attrs().TxQLen))
	}
	return out, nil
}

func describe(q netlink.Qdisc, txqlen int) Qdisc {
	a := q.Attrs()
	maj, _ := netlink.MajorMinor(a.Handle)
	d := Qdisc{Kind: q.Type(), Handle: fmt.Sprintf("%x:", maj), Root: a.Parent == netlink.HANDLE_ROOT}
	if s := a.Statistics; s != nil && s.Queue != nil {
		d.QLen, d.Backlog, d.Drops, d.Overlimits = s.Queue.Qlen, s.Queue.Backlog, s.Queue.Drops, s.Queue.Overlimits
	}
	switch q := q.(type) {
	case *netlink.Tbf:
		d.Limit, d.LimitUnit, d.Rate = q.Limit, "bytes", q.Rate
	case *netlink.FqCodel:
		d.Limit, d.LimitUnit = q.Limit, "packets"
	case *netlink.Fq:
		d.Limit, d.LimitUnit = q.PacketLimit, "packets"
	case *netlink.Sfq:
		d.Limit, d.LimitUnit = q.Limit, "packets"
	case *netlink.PfifoFast:
		if txqlen > 0 {
			d.Limit, d.LimitUnit = uint32(txqlen), "packets" // pfifo_fast queues up to txqueuelen per band
		}
	}
	return d
}
