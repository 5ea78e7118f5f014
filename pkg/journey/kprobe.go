package journey

import "fmt"

// Netfilter verdicts carried by KindNFVerdict events in Event.Reason (the
// kernel's NF_DROP and NF_ACCEPT). The kprobe backend reports a drop from
// inside the free nf_hook_slow calls, just before the KindDrop event of the
// same skb, and an accept when nf_hook_slow returns.
const (
	NFDrop   uint32 = 0
	NFAccept uint32 = 1
)

// NFVerdictName names a KindNFVerdict event's verdict.
func NFVerdictName(v uint32) string {
	switch v {
	case NFDrop:
		return "drop"
	case NFAccept:
		return "accept"
	}
	return fmt.Sprintf("verdict%d", v)
}

// TunnelName names the tunnel of a KindTunnel event, whose Hook carries the
// outer IP protocol: 17 (VXLAN over UDP), 4 (IPIP), 47 (GRE), 41 (SIT).
func TunnelName(e Event) string {
	switch e.Hook {
	case ProtoUDP:
		return "vxlan"
	case 4:
		return "ipip"
	case 47:
		return "gre"
	case 41:
		return "sit"
	}
	return fmt.Sprintf("tunnel%d", e.Hook)
}

// HopName is the hop name of the kprobe backend's events, "" for the
// others: "nf:FORWARD accept", "nf:FORWARD drop", "tunnel:vxlan".
func HopName(e Event) string {
	switch e.Kind {
	case KindNFVerdict:
		return "nf:" + HookName(e.Hook) + " " + NFVerdictName(e.Reason)
	case KindTunnel:
		return "tunnel:" + TunnelName(e)
	}
	return ""
}

// pinNFVerdict locates a netfilter drop from the kprobe backend: the NF_DROP
// verdict of the skb freed by end, reported just before the free, names the
// hook that dropped it; a netfilter observer of the same hook seen before
// the verdict names the tables that ran after it. It reports whether evs
// hold such a verdict (otherwise v is unchanged).
func pinNFVerdict(v *Verdict, evs []Event, end *Event) bool {
	var verdict *Event
	for i := len(evs) - 1; i >= 0; i-- {
		e := &evs[i]
		if e == end || e.Skb != end.Skb || e.TimeNs > end.TimeNs {
			continue
		}
		if verdict == nil {
			if e.Kind != KindNFVerdict || e.Reason != NFDrop {
				return false
			}
			verdict = e
			v.Hook = HookName(e.Hook)
			continue
		}
		if e.Kind == KindNF && e.Netns == verdict.Netns && e.Hook == verdict.Hook {
			v.Table = TableAfterStage(e.Hook, e.Stage)
		}
		break
	}
	return verdict != nil
}
