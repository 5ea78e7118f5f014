package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skbtrail/skbtrail/pkg/qdisc"
	"github.com/skbtrail/skbtrail/pkg/sockdiag"
)

// queueWait bounds how long a queue fault waits to see its queue full.
const queueWait = 5 * time.Second

// QdiscLimit is the byte limit of the "qdisc-full" fault's token bucket.
const QdiscLimit = 3000

// maxFillDatagrams bounds the datagrams sent to fill a receive buffer.
const maxFillDatagrams = 64

// rawSocket makes a socket in pod B bound to ip:port (PodBIP or
// PodBIP6), set up by prepare (between socket and bind) and listening with
// backlog 0 for TCP. It returns the socket as a file to close and its
// address.
func (l *Lab) rawSocket(ip string, typ, port int, prepare func(fd int) error) (*os.File, net.Addr, error) {
	a := netip.MustParseAddr(ip)
	var family int
	var sa unix.Sockaddr
	if a.Is6() {
		family, sa = unix.AF_INET6, &unix.SockaddrInet6{Port: port, Addr: a.As16()}
	} else {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: port, Addr: a.As4()}
	}
	var f *os.File
	err := InNetns(l.PodB, func() error {
		fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		f = os.NewFile(uintptr(fd), "lab-socket")
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return fmt.Errorf("SO_REUSEADDR: %w", err)
		}
		if prepare != nil {
			if err := prepare(fd); err != nil {
				return err
			}
		}
		if err := unix.Bind(fd, sa); err != nil {
			return fmt.Errorf("bind: %w", err)
		}
		if typ == unix.SOCK_STREAM {
			if err := unix.Listen(fd, 0); err != nil {
				return fmt.Errorf("listen: %w", err)
			}
		}
		return nil
	})
	hostPort := net.JoinHostPort(ip, strconv.Itoa(port))
	if err != nil {
		if f != nil {
			f.Close()
		}
		return nil, nil, fmt.Errorf("lab: socket on %s in %s: %w", hostPort, l.PodB, err)
	}
	ap := netip.AddrPortFrom(a, uint16(port))
	if typ == unix.SOCK_STREAM {
		return f, net.TCPAddrFromAddrPort(ap), nil
	}
	return f, net.UDPAddrFromAddrPort(ap), nil
}

// waitSocket polls pod B's sockets until the proto socket on ip:port
// satisfies cond.
func (l *Lab) waitSocket(ip, proto string, port int, cond func(sockdiag.Socket) bool) (sockdiag.Socket, error) {
	want := netip.AddrPortFrom(netip.MustParseAddr(ip), uint16(port))
	deadline := time.Now().Add(queueWait)
	var last sockdiag.Socket
	for {
		socks, err := sockdiag.List(NetnsPath(l.PodB))
		if err != nil {
			return last, err
		}
		for _, s := range socks {
			if s.Proto == proto && s.Local == want {
				last = s
				if cond(s) {
					return s, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return last, fmt.Errorf("lab: %s %s in %s not as wanted after %v: %+v", proto, want, l.PodB, queueWait, last)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fillAcceptQueue replaces pod B's tcp/port server by a listener on
// ip:port (PodBIP or PodBIP6) with a backlog of 0 that never accepts, and
// completes one connection from pod A (held open) so that its accept queue
// is over the limit: the kernel drops every further SYN. Both versions'
// listeners may stand side by side (a dual-stack lab's server, on [::],
// is stopped by whichever comes first).
func (l *Lab) fillAcceptQueue(ctx context.Context, ip string, port int) error {
	if err := l.StopServer("tcp", port); err != nil && !errors.Is(err, ErrNoServer) {
		return err
	}
	f, addr, err := l.rawSocket(ip, unix.SOCK_STREAM, port, nil)
	if err != nil {
		return err
	}
	tag := "tcp-full-" + ip
	s := &server{closer: f, gone: l.socketGone(l.PodB, unix.IPPROTO_TCP, addr)}
	if err := l.addServer(serverKey(tag, port), l.PodB, s); err != nil {
		f.Close()
		return err
	}
	conn, err := l.DialConn(ctx, l.PodA, addr.String(), 2*time.Second)
	if err != nil {
		return fmt.Errorf("lab: fill the accept queue of %s: %w", addr, err)
	}
	if err := l.addServer(serverKey(tag+"-client", port), l.PodA, &server{closer: conn}); err != nil {
		conn.Close()
		return err
	}
	_, err = l.waitSocket(ip, "tcp", port, sockdiag.Socket.AcceptQueueFull)
	return err
}

// fillReceiveBuffer binds a UDP socket on ip:port in pod B with the
// smallest receive buffer (SO_RCVBUF 0: the kernel's minimum) that never
// reads, and sends it datagrams from pod A until it drops one: every
// further datagram is dropped (SOCKET_RCVBUFF). It returns once sock_diag
// shows the socket's drop counter above zero.
func (l *Lab) fillReceiveBuffer(ctx context.Context, ip string, port int) error {
	f, addr, err := l.rawSocket(ip, unix.SOCK_DGRAM, port, func(fd int) error {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 0); err != nil {
			return fmt.Errorf("SO_RCVBUF: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	s := &server{closer: f, gone: l.socketGone(l.PodB, unix.IPPROTO_UDP, addr)}
	if err := l.addServer(serverKey(udpKey(ip), port), l.PodB, s); err != nil {
		f.Close()
		return err
	}
	for range maxFillDatagrams {
		if err := l.SendUDP(ctx, l.PodA, addr.String(), 512, false); err != nil {
			return err
		}
		sk, err := l.waitSocket(ip, "udp", port, func(s sockdiag.Socket) bool { return s.RmemAlloc > 0 })
		if err != nil {
			return err
		}
		if sk.Drops > 0 {
			return nil
		}
	}
	return fmt.Errorf("lab: udp %s in %s dropped nothing after %d datagrams", addr, l.PodB, maxFillDatagrams)
}

// fillQdisc gives node A's eth0 (its underlay NIC) a token bucket of 1
// byte per second holding at most 3000 bytes, and fills it with the
// smallest overlay packets (1-byte UDP datagrams from pod A to pod B) until
// it drops one: the queue then has less room than any larger packet (a TCP
// SYN) needs, and drains one small packet in about 90 s. It returns once
// the qdisc counted a drop.
func (l *Lab) fillQdisc(ctx context.Context) error {
	if _, err := l.nsExec(ctx, l.NodeA, nil, "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf",
		"rate", "8bit", "burst", "1600", "limit", fmt.Sprint(QdiscLimit)); err != nil {
		return err
	}
	dst := net.JoinHostPort(l.PodBIP, "9")
	for range maxFillDatagrams {
		if err := l.SendUDP(ctx, l.PodA, dst, 1, false); err != nil {
			return err
		}
		qs, err := qdisc.List(NetnsPath(l.NodeA), "eth0")
		if err != nil {
			return err
		}
		for _, q := range qs {
			if q.Root && q.Kind == "tbf" && q.Drops > 0 {
				return nil
			}
		}
	}
	return fmt.Errorf("lab: the tbf qdisc of eth0 in %s dropped nothing after %d datagrams", l.NodeA, maxFillDatagrams)
}
