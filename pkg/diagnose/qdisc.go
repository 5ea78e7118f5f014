package diagnose

import (
	"fmt"
	"os"
	"strings"

	"go.uber.org/zap"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/qdisc"
)

// netdevMaxBacklog is the sysctl that bounds each CPU's input backlog.
const netdevMaxBacklog = "/proc/sys/net/core/netdev_max_backlog"

// queueDrop explains a packet a device's queue dropped: at a qdisc (queue
// full, over its limit or rate, congested), naming the device, the qdisc,
// its fill and limit; or at the per-CPU input backlog (CPU_BACKLOG).
func (d *Diagnoser) queueDrop(j *journey.Journey) {
	v := j.Verdict
	if v.Kind != journey.Dropped {
		return
	}
	f := journey.Finding{Code: CodeQdiscDrop, Severity: journey.SeverityError, Netns: v.Netns}
	switch v.Reason {
	case "QDISC_DROP", "QDISC_OVERLIMIT", "QDISC_CONGESTED":
		f.Message, f.Advice = d.qdiscText(j)
	case "CPU_BACKLOG":
		limit := "net.core.netdev_max_backlog"
		if b, err := os.ReadFile(netdevMaxBacklog); err == nil {
			limit += " = " + strings.TrimSpace(string(b)) + " packets"
		}
		f.Message = fmt.Sprintf("the CPU input backlog was full when %s in %s received %s (CPU_BACKLOG; its limit is %s)", v.Device, v.Netns, atDrop(j), limit)
		f.Advice = fmt.Sprintf("the CPU that takes %s's receive work does not keep up: find what floods it, spread the receive work over CPUs (RPS/RSS), or raise net.core.netdev_max_backlog", v.Device)
	default:
		return
	}
	j.AddFinding(f)
}

var qdiscWhy = map[string]string{
	"QDISC_DROP":      "its queue was full",
	"QDISC_OVERLIMIT": "the packet was over its limit",
	"QDISC_CONGESTED": "it signalled congestion",
}

// qdiscText names the device's qdisc that dropped the packet, with its
// fill, limit and counters when they can be read.
func (d *Diagnoser) qdiscText(j *journey.Journey) (msg, advice string) {
	v := j.Verdict
	msg = fmt.Sprintf("the queueing discipline of %s in %s dropped %s (%s): %s", v.Device, v.Netns, atDrop(j), v.Reason, qdiscWhy[v.Reason])
	advice = fmt.Sprintf("%s sends slower than packets arrive: find what fills it (tc -s qdisc show dev %s in %s), raise the qdisc's limit or rate, or reduce the traffic; a NIC queue that fills under normal load means the link is saturated",
		v.Device, v.Device, v.Netns)
	if d.qdiscs == nil || v.Device == "" {
		return msg, advice
	}
	qs, err := d.qdiscs(v.NetnsInode, v.Device)
	if err != nil {
		d.cfg.Logger.Debug("qdiscs not read", zap.String("netns", v.Netns), zap.String("device", v.Device), zap.Error(err))
		return msg, advice
	}
	q, ok := droppingQdisc(qs)
	if !ok {
		return msg, advice
	}
	place := "under"
	if q.Root {
		place = "at the root of"
	}
	msg = fmt.Sprintf("the %s qdisc %s %s %s in %s dropped %s (%s): %s", q.Kind, q.Handle, place, v.Device, v.Netns, atDrop(j), v.Reason, qdiscWhy[v.Reason])
	fill := fmt.Sprintf("; it holds %d bytes in %d packets", q.Backlog, q.QLen)
	if q.Limit > 0 {
		fill += fmt.Sprintf(", limit %d %s", q.Limit, q.LimitUnit)
	}
	if q.Rate > 0 {
		fill += fmt.Sprintf(", rate %d bit/s", q.Rate*8)
	}
	msg += fill + fmt.Sprintf("; %d packets dropped and %d overlimits so far", q.Drops, q.Overlimits)
	advice = fmt.Sprintf("%s sends slower than packets arrive: find what fills it (tc -s qdisc show dev %s in %s), raise the %s qdisc's limit or rate (tc qdisc change dev %s %s %s ...), or reduce the traffic; a NIC queue that fills under normal load means the link is saturated",
		v.Device, v.Device, v.Netns, q.Kind, v.Device, map[bool]string{true: "root", false: "parent ..."}[q.Root], q.Kind)
	return msg, advice
}

// droppingQdisc picks the qdisc that most likely dropped: the root one
// that counted drops, else any that did, else the root.
func droppingQdisc(qs []qdisc.Qdisc) (qdisc.Qdisc, bool) {
	var root, dropper *qdisc.Qdisc
	for i := range qs {
		q := &qs[i]
		if q.Root && root == nil {
			root = q
		}
		if q.Drops > 0 && (dropper == nil || q.Root) {
			dropper = q
		}
	}
	switch {
	case dropper != nil:
		return *dropper, true
	case root != nil:
		return *root, true
	}
	return qdisc.Qdisc{}, false
}
