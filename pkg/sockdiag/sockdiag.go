// Package sockdiag lists a network namespace's TCP listeners and UDP
// sockets over sock_diag netlink (NETLINK_SOCK_DIAG, inet_diag), as
// `ss -ltunm` would: what listens where, how full its queues are and what
// limits them.
package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/skbtrail/skbtrail/netnsutil"
)

// Socket is one TCP listener or bound UDP socket.
type Socket struct {
	Proto string         // "tcp" or "udp"
	Local netip.AddrPort // bound address (0.0.0.0 / :: for any)
	// RQueue and WQueue are inet_diag's idiag_rqueue/idiag_wqueue: for a
	// TCP listener the accept queue's length and its limit (the listen
	// backlog), for UDP the bytes waiting to be read and to be sent.
	RQueue, WQueue uint32
	Inode          uint32 // socket inode (matches /proc/PID/fd/* -> socket:[inode])
	UID            uint32
	// From INET_DIAG_SKMEMINFO (zero when the kernel did not send it):
	// receive memory in use and its limit (SO_RCVBUF), the socket backlog
	// and the packets the socket dropped (sk_drops).
	RmemAlloc, RcvBuf, Backlog, Drops uint32
}

// kernel ABI (include/uapi/linux/inet_diag.h, sock_diag.h)
const (
	inetDiagReqLen   = 56 // struct inet_diag_req_v2
	inetDiagMsgLen   = 72 // struct inet_diag_msg
	inetDiagSKMemInf = 7  // INET_DIAG_SKMEMINFO
	tcpListenState   = 10 // TCP_LISTEN
	allStates        = 0xfff
	// indexes into the SKMEMINFO array (SK_MEMINFO_*)
	memRmemAlloc = 0
	memRcvBuf    = 1
	memBacklog   = 7
	memDrops     = 8
)

// maxDumpTries bounds the retries of a dump the kernel reports as
// interrupted (sockets changed while it was read).
const maxDumpTries = 3

type request struct {
	family, proto uint8
	states        uint32
}

func (r request) Len() int { return inetDiagReqLen }

func (r request) Serialize() []byte {
	b := make([]byte, inetDiagReqLen)
	b[0], b[1], b[2] = r.family, r.proto, 1<<(inetDiagSKMemInf-1)
	binary.NativeEndian.PutUint32(b[4:], r.states)
	return b // the socket id stays zero: dump every socket
}

// List returns the TCP listeners and the UDP sockets of the namespace at
// nsPath, IPv4 and IPv6. The netlink socket is opened inside the namespace.
func List(nsPath string) ([]Socket, error) {
	var out []Socket
	err := netnsutil.Do(nsPath, func() error {
		for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
			for _, proto := range []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
				states := uint32(allStates)
				if proto == unix.IPPROTO_TCP {
					states = 1 << tcpListenState
				}
				msgs, err := dump(request{family: fam, proto: proto, states: states})
				if err != nil {
					return err
				}
				for _, m := range msgs {
					if s, ok := parse(m, proto); ok {
						out = append(out, s)
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sock_diag in %s: %w", nsPath, err)
	}
	return out, nil
}

func dump(r request) ([][]byte, error) {
	var err error
	for range maxDumpTries {
		req := nl.NewNetlinkRequest(nl.SOCK_DIAG_BY_FAMILY, unix.NLM_F_DUMP)
		req.AddData(r)
		var msgs [][]byte
		msgs, err = req.Execute(unix.NETLINK_INET_DIAG, nl.SOCK_DIAG_BY_FAMILY)
		if !errors.Is(err, nl.ErrDumpInterrupted) {
			return msgs, err
		}
	}
	return nil, err
}

// parse decodes one inet_diag_msg and its attributes.
func parse(m []byte, proto uint8) (Socket, bool) {
	if len(m) < inetDiagMsgLen {
		return Socket{}, false
	}
	fam := m[0]
	sport := binary.BigEndian.Uint16(m[4:6])
	var addr netip.Addr
	switch fam {
	case unix.AF_INET:
		addr = netip.AddrFrom4([4]byte(m[8:12]))
	case unix.AF_INET6:
		addr = netip.AddrFrom16([16]byte(m[8:24])).Unmap()
	default:
		return Socket{}, false
	}
	s := Socket{Proto: "udp", Local: netip.AddrPortFrom(addr, sport),
		RQueue: binary.NativeEndian.Uint32(m[56:]), WQueue: binary.NativeEndian.Uint32(m[60:]),
		UID: binary.NativeEndian.Uint32(m[64:]), Inode: binary.NativeEndian.Uint32(m[68:])}
	if proto == unix.IPPROTO_TCP {
		s.Proto = "tcp"
	}
	attrs, err := nl.ParseRouteAttr(m[inetDiagMsgLen:])
	if err != nil {
		return s, true
	}
	for _, a := range attrs {
		if a.Attr.Type == inetDiagSKMemInf {
			s.setMem(a)
		}
	}
	return s, true
}

func (s *Socket) setMem(a syscall.NetlinkRouteAttr) {
	mem := func(i int) uint32 {
		if len(a.Value) < 4*(i+1) {
			return 0
		}
		return binary.NativeEndian.Uint32(a.Value[4*i:])
	}
	s.RmemAlloc, s.RcvBuf, s.Backlog, s.Drops = mem(memRmemAlloc), mem(memRcvBuf), mem(memBacklog), mem(memDrops)
}

// IsLoopback reports whether the socket is bound to a loopback address
// only (127.0.0.0/8, ::1): reachable from inside its namespace alone.
func (s Socket) IsLoopback() bool { return s.Local.Addr().IsLoopback() }

// Accepts reports whether the socket takes packets to dst (its address is
// dst's or the wildcard of dst's family; an IPv6 wildcard also takes IPv4
// unless the socket is v6only, which sock_diag does not say).
func (s Socket) Accepts(dst netip.Addr) bool {
	a := s.Local.Addr()
	return a == dst || (a.IsUnspecified() && (a.Is4() == dst.Is4() || a.Is6()))
}

// AcceptQueueFull reports, for a TCP listener, whether its accept queue is
// over its limit (the kernel's sk_acceptq_is_full): new connections are
// dropped until the server accepts.
func (s Socket) AcceptQueueFull() bool { return s.Proto == "tcp" && s.RQueue > s.WQueue }

// String is proto addr:port.
func (s Socket) String() string { return s.Proto + " " + s.Local.String() }
