package diagnose

import (
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/skbtrail/skbtrail/pkg/devprogs"
	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/nodestate"
)

// xdpProgDrop: the packet was lost right after a transmission on a veth
// whose peer (the receiving end, in a namespace this node observes) runs
// an XDP program. XDP runs before an skb of the packet is seen there, so a
// program returning XDP_DROP makes the journey stop exactly like this. It
// is an inference: the finding says so and names the program.
func (d *Diagnoser) xdpProgDrop(j *journey.Journey) {
	st := d.state
	if st == nil || d.progs == nil || j.Verdict.Kind != journey.Lost {
		return
	}
	tx, ok := lastObservedTx(st, j.Events)
	if !ok {
		return
	}
	ns := st.Namespaces[tx.Netns]
	dev, ok := ns.LinkByIndex(int(tx.Ifindex))
	if !ok || (tx.Ifname != "" && dev.Name != tx.Ifname) {
		if dev, ok = ns.Link(tx.Ifname); !ok {
			return
		}
	}
	peerNs, peer, ok := receivingEnd(st, j.Events, ns, dev)
	if !ok {
		return
	}
	progs, err := d.progs.Programs(peerNs.Inode, peer.Index, devprogs.XDP)
	if err != nil {
		d.cfg.Logger.Warn("listing XDP programs", zap.String("netns", peerNs.Name), zap.String("device", peer.Name), zap.Error(err))
		return
	}
	if len(progs) == 0 {
		return
	}
	stats := d.progs.StatsEnabled()
	j.AddFinding(xdpFinding(j, tx, ns, dev, peerNs, peer, progs[0], stats))
}

// receivingEnd is the far end of the veth dev: where the skb was freed on
// arrival when it was (the namespace the kernel names, exact), else the
// peer the node state finds by ifindex (ambiguous when several namespaces
// hold veths with the same ifindexes, as labs of several "nodes" do).
func receivingEnd(st *nodestate.State, evs []journey.Event, ns *nodestate.Netns, dev *nodestate.Link) (*nodestate.Netns, *nodestate.Link, bool) {
	if journey.ConsumedOnArrival(evs) {
		end := evs[len(evs)-1]
		if pns := st.Namespaces[end.Netns]; pns != nil {
			if p, ok := pns.LinkByIndex(int(end.Ifindex)); ok && p.Type == "veth" && p.ParentIndex == dev.Index {
				return pns, p, true
			}
		}
	}
	return st.VethPeer(ns, dev)
}

func xdpFinding(j *journey.Journey, tx journey.Event, ns *nodestate.Netns, dev *nodestate.Link,
	peerNs *nodestate.Netns, peer *nodestate.Link, p devprogs.Program, stats bool) journey.Finding {
	what := flowText(journey.PacketOf(tx.Pkt))
	if tx.Encap {
		what = fmt.Sprintf("the VXLAN packet %s -> %s carrying %s", tx.Outer.Src, journey.HostPort(tx.Outer.Dst.String(), tx.Outer.Dport), what)
	}
	since := ""
	if n := len(j.Events); n > 0 && j.Events[n-1].TimeNs >= tx.TimeNs && j.Events[0].TimeNs <= tx.TimeNs {
		since = fmt.Sprintf(" %s after the journey began", time.Duration(tx.TimeNs-j.Events[0].TimeNs).Round(time.Microsecond))
	}
	arrival := "no skb of it ever showed up at the other end"
	if journey.ConsumedOnArrival(j.Events) {
		arrival = "it was never received at the other end: the skb was freed there on arrival (the veth hands the packet to XDP in a buffer of its own) and no new skb carried it on"
	}
	msg := fmt.Sprintf("%s sent %s through %s%s and %s, %s in %s, which runs the XDP program %s attached as %s",
		ns.Name, what, dev.Name, since, arrival, peer.Name, peerNs.Name, p.Ident(), p.Where())
	if stats {
		msg += fmt.Sprintf("; it has run %d times so far", p.RunCount)
	} else {
		msg += "; its run count is not known (BPF statistics are off)"
	}
	msg += ". Inferred, not observed: an XDP_DROP (or an XDP_TX/XDP_REDIRECT elsewhere) leaves no skb to trace, and nothing else on this path frees a packet without one; the packet may also have been lost in the veth's queue (rare, counted in `ip -s link show " + peer.Name + "`)"
	advice := fmt.Sprintf("check what %s does with this packet: it runs before the kernel's stack, so netfilter rules and tc programs on %s never see the packet; %s; %s%s",
		p.Name, peer.Name, countersAdvice([]devprogs.Program{p}, peer.Name), inspectAdvice([]devprogs.Program{p}, peerNs.Name, peer.Name, devprogs.XDP), statsNote(stats))
	if stats {
		advice += fmt.Sprintf("; its run count rising as you resend (`bpftool prog show id %d` shows run_cnt) confirms it sees the packets", p.ID)
	}
	return journey.Finding{Code: CodeXDPProgDrop, Severity: journey.SeverityError, Netns: peerNs.Name, Message: msg, Advice: advice}
}
