package diagnose

import (
	"fmt"
	"net/netip"
	"strings"

	"go.uber.org/zap"

	"github.com/skbtrail/skbtrail/pkg/journey"
)

// endpoint: what the destination did with a delivered request, and what
// happened to the reply.
func (d *Diagnoser) endpoint(j *journey.Journey) {
	v := j.Verdict
	p := j.Packet
	dst := endpointOf(j)
	if v.Reason == "NO_SOCKET" || (v.Kind == journey.Rejected && v.Reason != "NETFILTER_DROP") {
		f := journey.Finding{Code: CodeNoListener, Severity: journey.SeverityError, Netns: v.Netns,
			Message: fmt.Sprintf("nothing listens on %s %s in %s: the request was refused (%s)", p.Proto, dst, v.Netns, replyWord(j)),
			Advice:  "check the server runs and listens on that port on all addresses (ss -lntu in the pod: 0.0.0.0, not 127.0.0.1), and that the Service targetPort matches"}
		if what, advice, ok := d.listeners(j); ok {
			f.Message += "; " + what
			f.Advice = advice + "; ss -lntu in the pod lists its sockets"
		}
		d.add(j, f)
		return
	}
	if v.Kind == journey.Delivered && j.Reply == nil && (p.Proto == "tcp" || p.Proto == "udp") {
		d.add(j, journey.Finding{Code: CodeNoReply, Severity: journey.SeverityError, Netns: v.Netns,
			Message: fmt.Sprintf("%s was delivered to %s (%s) but no reply came back before the trace ended", flowText(p), dst, v.Netns),
			Advice:  "the destination received the request and did not answer: check the server process (for DNS: CoreDNS logs, its upstreams, `kubectl -n kube-system logs -l k8s-app=kube-dns`) and its load"})
		return
	}
	if r := j.Reply; r != nil && r.Verdict == journey.Dropped {
		code := CodeNFRuleDrop
		switch {
		case r.Reason == "IP_INNOROUTES" || r.Reason == "IP_OUTNOROUTES":
			code = CodeNoRoute
		case r.Reason == "IP_RPFILTER":
			code = CodeRPFilter
		case strings.Contains(r.Reason, "TOO_BIG") || strings.Contains(r.Reason, "FRAG"):
			code = CodeMTUExceeded
		case r.Reason != "NETFILTER_DROP":
			code = ""
		}
		if code != "" {
			d.add(j, journey.Finding{Code: code, Severity: journey.SeverityError, Netns: r.Netns,
				Message: fmt.Sprintf("the request reached %s but the reply %s was dropped on the way back in %s at %s (%s)", dst, flowText(r.Packet), r.Netns, r.Device, r.Reason),
				Advice:  "trace the reverse direction (skbtrail trace --src " + r.Packet.Src + ") and fix the return path in " + r.Netns})
		}
	}
}

func endpointOf(j *journey.Journey) string {
	// the destination after NAT: the tuple of the last event
	if n := len(j.Events); n > 0 {
		t := j.Events[n-1].Pkt
		return journey.HostPort(t.Dst.String(), t.Dport)
	}
	return j.Packet.Dst
}

func replyWord(j *journey.Journey) string {
	if j.Reply != nil && j.Reply.Packet.TCPFlags != "" {
		return "answered " + j.Reply.Packet.TCPFlags
	}
	if j.Verdict.Kind == journey.Rejected && j.Reply == nil {
		// the builder's rejection without a reply: a port unreachable
		if isIPv6(j.Packet.Dst) {
			return "answered ICMPv6 port unreachable"
		}
		return "answered ICMP port unreachable"
	}
	return "dropped " + j.Verdict.Reason
}

// listeners describes what listens in the namespace of a refused request,
// read over sock_diag there. ok is false when it cannot be read (the
// namespace is gone, no registry) or the request was not TCP/UDP.
func (d *Diagnoser) listeners(j *journey.Journey) (what, advice string, ok bool) {
	if d.sockets == nil || len(j.Events) == 0 {
		return "", "", false
	}
	last := j.Events[len(j.Events)-1]
	t := last.Pkt
	if (t.Proto != journey.ProtoTCP && t.Proto != journey.ProtoUDP) || last.Netns != j.Verdict.NetnsInode {
		return "", "", false
	}
	socks, err := d.sockets(j.Verdict.NetnsInode)
	if err != nil {
		d.cfg.Logger.Debug("listeners not read", zap.String("netns", j.Verdict.Netns), zap.Error(err))
		return "", "", false
	}
	what, advice = listenerHint(socks, journey.ProtoName(t.Proto), netip.AddrPortFrom(t.Dst, t.Dport))
	return what, advice, true
}
