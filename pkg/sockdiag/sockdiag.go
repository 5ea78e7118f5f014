// Package sockdiag lists a network namespace's TCP and UDP sockets over
// sock_diag netlink (NETLINK_SOCK_DIAG, inet_diag), as `ss -ltun` would:
// what listens where, and how full its queues are.
package sockdiag

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
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
}

// maxDumpTries bounds the retries of a dump the kernel reports as
// interrupted (sockets changed while it was read).
const maxDumpTries = 3

// List returns the TCP listeners and the UDP sockets of the namespace at
// nsPath, IPv4 and IPv6.
func List(nsPath string) ([]Socket, error) {
	h, err := netnsutil.NewHandle(nsPath, unix.NETLINK_INET_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag in %s: %w", nsPath, err)
	}
	defer h.Close()
	var out []Socket
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		for _, proto := range []string{"tcp", "udp"} {
			socks, err := dump(h, proto, fam)
			if err != nil {
				return nil, fmt.Errorf("sock_diag %s in %s: %w", proto, nsPath, err)
			}
			for _, s := range socks {
				if proto == "tcp" && s.State != netlink.TCP_LISTEN {
					continue
				}
				addr, ok := netip.AddrFromSlice(s.ID.Source)
				if !ok {
					continue
				}
				out = append(out, Socket{Proto: proto, Local: netip.AddrPortFrom(addr.Unmap(), s.ID.SourcePort),
					RQueue: s.RQueue, WQueue: s.WQueue, Inode: s.INode, UID: s.UID})
			}
		}
	}
	return out, nil
}

func dump(h *netlink.Handle, proto string, fam uint8) ([]*netlink.Socket, error) {
	var err error
	for range maxDumpTries {
		var socks []*netlink.Socket
		if proto == "tcp" {
			socks, err = h.SocketDiagTCP(fam)
		} else {
			socks, err = h.SocketDiagUDP(fam)
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return socks, err
		}
	}
	return nil, err
}

// IsLoopback reports whether the socket is bound to a loopback address
// only (127.0.0.0/8, ::1): reachable from inside its namespace alone.
func (s Socket) IsLoopback() bool { return s.Local.Addr().IsLoopback() }

// IsWildcard reports whether the socket is bound to every address.
func (s Socket) IsWildcard() bool { return s.Local.Addr().IsUnspecified() }

// Accepts reports whether the socket takes packets to dst (its address is
// dst's or the wildcard of dst's family; an IPv6 wildcard also takes IPv4
// unless the socket is v6only, which sock_diag does not say).
func (s Socket) Accepts(dst netip.Addr) bool {
	a := s.Local.Addr()
	return a == dst || (a.IsUnspecified() && (a.Is4() == dst.Is4() || a.Is6()))
}

// String is proto addr:port.
func (s Socket) String() string { return s.Proto + " " + s.Local.String() }
