package diagnose

import (
	"fmt"
	"net/netip"

	"go.uber.org/zap"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/sockdiag"
)

// socketQueueReasons are the drop reasons of a full socket queue, and the
// queue each names.
var socketQueueReasons = map[string]string{
	"SOCKET_RCVBUFF":      "receive buffer",
	"TCP_LISTEN_OVERFLOW": "accept queue",
	"SOCKET_BACKLOG":      "backlog",
}

// socketQueue explains a packet lost to a full socket queue in the
// destination namespace: dropped with a socket-queue reason, or a TCP SYN
// the kernel took without answering because the listener's accept queue is
// full (tcp_conn_request drops it and counts ListenOverflows, with no drop
// reason). It names the socket, the process holding it, the queue and its
// limit, read over sock_diag.
func (d *Diagnoser) socketQueue(j *journey.Journey) {
	v := j.Verdict
	if len(j.Events) == 0 {
		return
	}
	last := j.Events[len(j.Events)-1]
	t := last.Pkt
	queue, byReason := socketQueueReasons[v.Reason]
	syn := v.Kind == journey.Delivered && j.Reply == nil && t.Proto == journey.ProtoTCP && t.TCPFlags&tcpFlagSYN != 0 && t.TCPFlags&tcpFlagACK == 0
	if !(byReason && v.Kind == journey.Dropped) && !syn {
		return
	}
	if last.Netns != v.NetnsInode || (d.sockets == nil && !byReason) {
		return
	}
	proto := journey.ProtoName(t.Proto)
	dst := netip.AddrPortFrom(t.Dst, t.Dport)
	sk, found := d.socketOf(v, proto, dst)
	if syn {
		if !found || !sk.AcceptQueueFull() {
			return
		}
		queue = "accept queue"
	}
	f := journey.Finding{Code: CodeSocketQueueFull, Severity: journey.SeverityError, Netns: v.Netns}
	name := fmt.Sprintf("%s socket %s in %s", proto, dst, v.Netns)
	if found {
		name = fmt.Sprintf("%s socket %s in %s", proto, sk.Local, v.Netns)
		if p, ok := d.processOf(sk); ok {
			name += " (held by " + p.String() + ")"
		}
	}
	what := "dropped " + flowText(journey.PacketOf(t)) + " (" + v.Reason + ")"
	if syn {
		what = "took the SYN " + flowText(journey.PacketOf(t)) + " and dropped it without an answer (counted as ListenOverflows: nstat -az TcpExtListenOverflows in the pod)"
	}
	switch queue {
	case "accept queue":
		f.Message = fmt.Sprintf("the accept queue of the %s is full", name)
		if found {
			waits := "connections wait"
			if sk.RQueue == 1 {
				waits = "connection waits"
			}
			f.Message += fmt.Sprintf(": %d %s for accept() and its limit (the listen backlog) is %d", sk.RQueue, waits, sk.WQueue)
		}
		f.Advice = "the server does not accept() connections as fast as they come, or is stuck: check its load, threads or event loop (kubectl top pod, its logs); " +
			"once it keeps up, a larger listen backlog (its listen(2) argument, capped by net.core.somaxconn in the pod's namespace) absorbs bursts"
	case "receive buffer":
		f.Message = fmt.Sprintf("the receive buffer of the %s is full", name)
		if found && sk.RcvBuf > 0 {
			f.Message += fmt.Sprintf(": %d of %d bytes (SO_RCVBUF) wait to be read, %d packets dropped so far", sk.RmemAlloc, sk.RcvBuf, sk.Drops)
		}
		f.Advice = "the server does not read as fast as requests arrive: give it more CPU or replicas (for DNS: scale CoreDNS and check its CPU limits and throttling), " +
			"or raise its receive buffer (SO_RCVBUF, capped by net.core.rmem_max in the pod's namespace)"
	default:
		f.Message = fmt.Sprintf("the backlog of the %s is full (packets arrived while the socket was busy in user space)", name)
		if found && sk.RcvBuf > 0 {
			f.Message += fmt.Sprintf(": %d bytes queued in the backlog, limit about SO_RCVBUF %d plus SO_SNDBUF", sk.Backlog, sk.RcvBuf)
		}
		f.Advice = "the server holds its socket too long between reads: check its load and CPU limits, or raise SO_RCVBUF"
	}
	f.Message += "; the kernel " + what
	j.AddFinding(f)
}

// TCP header flags as journey.Tuple.TCPFlags holds them.
const (
	tcpFlagSYN = 0x02
	tcpFlagACK = 0x10
)

// socketOf finds the socket that takes proto packets to dst in the
// verdict's namespace: one bound to dst's address before a wildcard.
func (d *Diagnoser) socketOf(v journey.Verdict, proto string, dst netip.AddrPort) (sockdiag.Socket, bool) {
	if d.sockets == nil {
		return sockdiag.Socket{}, false
	}
	socks, err := d.sockets(v.NetnsInode)
	if err != nil {
		d.cfg.Logger.Debug("sockets not read", zap.String("netns", v.Netns), zap.Error(err))
		return sockdiag.Socket{}, false
	}
	var best sockdiag.Socket
	found := false
	for _, s := range socks {
		if s.Proto != proto || s.Local.Port() != dst.Port() || !s.Accepts(dst.Addr()) {
			continue
		}
		if !found || s.Local.Addr() == dst.Addr() {
			best, found = s, true
		}
	}
	return best, found
}

func (d *Diagnoser) processOf(s sockdiag.Socket) (sockdiag.Process, bool) {
	if d.process == nil || s.Inode == 0 {
		return sockdiag.Process{}, false
	}
	return d.process(s.Inode)
}
