package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/skbtrail/skbtrail/netnsutil"
)

// InNetns runs fn on a dedicated OS thread switched into the named lab
// network namespace (netnsutil.Do: restored afterwards, or the thread dies
// with its goroutine). Sockets created by fn stay in that namespace.
func InNetns(name string, fn func() error) error {
	return netnsutil.Do(NetnsPath(name), fn)
}

// server is an in-process socket (or tun file descriptor) living in a lab
// namespace.
type server struct {
	closeOnce sync.Once
	closer    io.Closer
	// local is the address a listener is bound to (nil: not a listener)
	local net.Addr
	// gone reports whether the kernel object behind closer (the bound
	// socket, the tun device) no longer exists; nil: do not check.
	gone func() (bool, error)

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (s *server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		return false // closed
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *server) untrack(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

func (s *server) close() {
	s.closeOnce.Do(func() {
		s.closer.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.conns = nil
		s.mu.Unlock()
	})
}

func serverKey(proto string, port int) string { return proto + "/" + strconv.Itoa(port) }

func (l *Lab) addServer(key, ns string, s *server) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		return errors.New("lab: lab is down")
	}
	if _, ok := l.servers[key]; ok {
		return fmt.Errorf("lab: %s server already running in %s", key, ns)
	}
	l.servers[key] = s
	return nil
}

// StartTCPEcho starts a TCP echo server on PodBIP:port inside pod B (a
// dual-stack lab: on [::]:port, taking IPv4 and IPv6). Each connection
// echoes what it receives until the peer closes or 30s pass. Up starts one
// on port 80.
func (l *Lab) StartTCPEcho(port int) error {
	if l.DualStack {
		return l.startTCPEchoOn("::", port)
	}
	return l.startTCPEchoOn(l.PodBIP, port)
}

// startTCPEchoOn is StartTCPEcho bound to ip (e.g. 127.0.0.1 for a server
// that listens on loopback only).
func (l *Lab) startTCPEchoOn(ip string, port int) error {
	return l.startTCPEchoAs(serverKey("tcp", port), ip, port)
}

// startTCPEchoAs is startTCPEchoOn with the server known as key (to
// StopServer: serverKey's).
func (l *Lab) startTCPEchoAs(key, ip string, port int) error {
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	var ln net.Listener
	err := InNetns(l.PodB, func() error {
		var err error
		network := "tcp4"
		if isIPv6(ip) {
			network = "tcp" // an IPv6 address; [::] takes IPv4 too
		}
		ln, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		return fmt.Errorf("lab: tcp listener %s in %s: %w", addr, l.PodB, err)
	}
	s := &server{closer: ln, local: ln.Addr(), conns: map[net.Conn]struct{}{}, gone: l.socketGone(l.PodB, unix.IPPROTO_TCP, ln.Addr())}
	if err := l.addServer(key, l.PodB, s); err != nil {
		ln.Close()
		return err
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !s.track(c) {
				c.Close()
				return
			}
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				defer s.untrack(c)
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				io.Copy(c, c)
			}()
		}
	}()
	return nil
}

// StartSilentUDP binds a UDP socket on PodBIP:port inside pod B that reads
// and discards every datagram without ever answering (a "silent DNS"
// backend when port is 53).
func (l *Lab) StartSilentUDP(port int) error { return l.startSilentUDP(l.PodBIP, port) }

// udpKey is the server key of pod B's UDP socket on ip: "udp", or "udp6"
// for an IPv6 one, so that both versions' sockets stand side by side.
func udpKey(ip string) string {
	if isIPv6(ip) {
		return "udp6"
	}
	return "udp"
}

// StartSilentUDP6 is StartSilentUDP on pod B's IPv6 address (a dual-stack
// lab).
func (l *Lab) StartSilentUDP6(port int) error { return l.startSilentUDP(PodBIP6, port) }

// StartLoopbackUDP binds a UDP socket on 127.0.0.1:port inside pod B that
// reads and discards what it gets: a server reachable from inside the pod
// only.
func (l *Lab) StartLoopbackUDP(port int) error { return l.startSilentUDP("127.0.0.1", port) }

// startSilentUDP binds a UDP socket on ip:port inside pod B that reads and
// discards every datagram.
func (l *Lab) startSilentUDP(ip string, port int) error {
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	var pc net.PacketConn
	err := InNetns(l.PodB, func() error {
		var err error
		network := "udp4"
		if isIPv6(ip) {
			network = "udp6"
		}
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	if err != nil {
		return fmt.Errorf("lab: udp socket %s in %s: %w", addr, l.PodB, err)
	}
	s := &server{closer: pc, gone: l.socketGone(l.PodB, unix.IPPROTO_UDP, pc.LocalAddr())}
	if err := l.addServer(serverKey(udpKey(ip), port), l.PodB, s); err != nil {
		pc.Close()
		return err
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		buf := make([]byte, 65536)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return nil
}

// ensureSilentUDP starts StartSilentUDP(port) unless a udp server on port
// is running already (the only UDP server the lab has is the silent one).
func (l *Lab) ensureSilentUDP(ip string, port int) error {
	l.mu.Lock()
	_, ok := l.servers[serverKey(udpKey(ip), port)]
	l.mu.Unlock()
	if ok {
		return nil
	}
	return l.startSilentUDP(ip, port)
}

// ErrNoServer is matched (errors.Is) by StopServer's error when no such
// server runs.
var ErrNoServer = errors.New("lab: no such server running")

// stopWait bounds how long StopServer waits for the kernel to let go of
// what it closed.
const stopWait = 5 * time.Second

// StopServer closes the in-process server for proto ("tcp" or "udp") and
// port, or with ("tun", 0) the "nic-exit" fault's tun reader (which removes
// nic0), and returns once the kernel object is gone: the socket no longer
// bound (a closed listener no longer completes handshakes), the device
// deleted. Closing this process's descriptor is not enough for that: a
// child forked by any concurrent exec (ip, iptables) holds a copy of every
// descriptor until it execs, and the socket lives as long as a copy does.
func (l *Lab) StopServer(proto string, port int) error {
	key := serverKey(proto, port)
	l.mu.Lock()
	s, ok := l.servers[key]
	delete(l.servers, key)
	l.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %s", ErrNoServer, key)
	}
	s.close()
	return s.waitGone(key, stopWait)
}

// waitGone polls s.gone until it reports the kernel object gone, for at
// most timeout.
func (s *server) waitGone(what string, timeout time.Duration) error {
	if s.gone == nil {
		return nil
	}
	deadline := time.Now().Add(timeout)
	for {
		gone, err := s.gone()
		if err != nil {
			return fmt.Errorf("lab: stop %s server: %w", what, err)
		}
		if gone {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lab: stop %s server: still there %v after closing it", what, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// socketGone returns a check that no proto (IPPROTO_TCP or IPPROTO_UDP)
// socket of namespace ns is bound to addr any more (for TCP: none listens
// on it; connections accepted earlier may linger), asked with sock_diag.
func (l *Lab) socketGone(ns string, proto int, addr net.Addr) func() (bool, error) {
	ap, err := netip.ParseAddrPort(addr.String())
	return func() (bool, error) {
		if err != nil {
			return false, fmt.Errorf("socket address %s: %w", addr, err)
		}
		h, err := netnsutil.NewHandle(NetnsPath(ns), unix.NETLINK_INET_DIAG)
		if err != nil {
			return false, err
		}
		defer h.Close()
		var socks []*netlink.Socket
		family := uint8(unix.AF_INET)
		if ap.Addr().Is6() {
			family = unix.AF_INET6
		}
		if proto == unix.IPPROTO_TCP {
			socks, err = h.SocketDiagTCP(family)
		} else {
			socks, err = h.SocketDiagUDP(family)
		}
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			return false, nil // sockets changed during the dump: ask again
		}
		if err != nil {
			return false, fmt.Errorf("sock_diag in %s: %w", ns, err)
		}
		for _, sk := range socks {
			if sk.ID.SourcePort != ap.Port() || !sk.ID.Source.Equal(net.IP(ap.Addr().AsSlice())) {
				continue
			}
			if proto == unix.IPPROTO_UDP || sk.State == netlink.TCP_LISTEN {
				return false, nil
			}
		}
		return true, nil
	}
}

// Dial opens a TCP connection to addr from inside namespace from (a lab
// namespace name or a role such as "pod-a") and closes it again. It returns
// nil once the three-way handshake completed.
func (l *Lab) Dial(ctx context.Context, from string, addr string, timeout time.Duration) error {
	c, err := l.DialConn(ctx, from, addr, timeout)
	if err != nil {
		return err
	}
	return c.Close()
}

// DialConn is like Dial but returns the connection. The socket belongs to
// namespace from; the caller must close it.
func (l *Lab) DialConn(ctx context.Context, from string, addr string, timeout time.Duration) (net.Conn, error) {
	ns, err := l.resolveNetns(from)
	if err != nil {
		return nil, err
	}
	var c net.Conn
	err = InNetns(ns, func() error {
		d := net.Dialer{Timeout: timeout}
		var err error
		network := "tcp4"
		if host, _, err := net.SplitHostPort(addr); err == nil && isIPv6(host) {
			network = "tcp6"
		}
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lab: dial %s from %s: %w", addr, ns, err)
	}
	return c, nil
}

// Echo connects from namespace from to addr (which must lead to an echo
// server such as the one on pod B port 80), sends payload and checks that
// the same bytes come back, all within timeout. It is useful to exercise
// full-sized segments (MTU problems) rather than just the handshake.
func (l *Lab) Echo(ctx context.Context, from, addr string, payload []byte, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c, err := l.DialConn(ctx, from, addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(deadline)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		werr <- err
	}()
	got := make([]byte, len(payload))
	_, rerr := io.ReadFull(c, got)
	if err := <-werr; err != nil {
		return fmt.Errorf("lab: echo via %s from %s: write: %w", addr, from, err)
	}
	if rerr != nil {
		return fmt.Errorf("lab: echo via %s from %s: read: %w", addr, from, rerr)
	}
	if !bytes.Equal(got, payload) {
		return fmt.Errorf("lab: echo via %s from %s: payload mismatch", addr, from)
	}
	return nil
}

// SendUDP sends one UDP datagram with size payload bytes to addr ("ip:port")
// from inside namespace from (a lab namespace name or a role such as
// "pod-a"). With df the socket uses IP_MTU_DISCOVER=IP_PMTUDISC_DO: the
// datagram carries DF and is never fragmented locally (a datagram larger
// than the route MTU fails with EMSGSIZE); without df it uses
// IP_PMTUDISC_DONT (DF clear, fragmented if needed). SendUDP only reports
// whether the datagram was handed to the kernel, not whether it arrived.
func (l *Lab) SendUDP(ctx context.Context, from, addr string, size int, df bool) error {
	ns, err := l.resolveNetns(from)
	if err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("lab: send udp to %s from %s: negative size %d", addr, ns, size)
	}
	// IPv4's DF, or IPv6's (never fragment at the sender either)
	network, level, opt := "udp4", syscall.IPPROTO_IP, syscall.IP_MTU_DISCOVER
	pmtud := syscall.IP_PMTUDISC_DONT
	if df {
		pmtud = syscall.IP_PMTUDISC_DO
	}
	if ap, perr := netip.ParseAddrPort(addr); perr == nil && ap.Addr().Unmap().Is6() {
		network, level, opt = "udp6", syscall.IPPROTO_IPV6, syscall.IPV6_MTU_DISCOVER
		pmtud = syscall.IPV6_PMTUDISC_DONT
		if df {
			pmtud = syscall.IPV6_PMTUDISC_DO
		}
	}
	var c net.Conn
	err = InNetns(ns, func() error {
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), level, opt, pmtud)
			}); err != nil {
				return err
			}
			if serr != nil {
				return fmt.Errorf("setsockopt MTU_DISCOVER: %w", serr)
			}
			return nil
		}}
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return fmt.Errorf("lab: send udp to %s from %s: %w", addr, ns, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetWriteDeadline(dl)
	}
	n, err := c.Write(make([]byte, size))
	if err == nil && n != size {
		err = fmt.Errorf("short write: %d of %d bytes", n, size)
	}
	if err != nil {
		return fmt.Errorf("lab: send udp to %s from %s (%d bytes, df %v): %w", addr, ns, size, df, err)
	}
	return nil
}

// stopPodTCPListener stops pod B's tcp server on port that the pod's
// addresses reach; nothing when there is none (gone already, or one that
// listens on loopback only, as a listener-loopback fault leaves it: the
// IPv4 and IPv6 forms of that fault go together on one lab).
func (l *Lab) stopPodTCPListener(port int) error {
	l.mu.Lock()
	s, ok := l.servers[serverKey("tcp", port)]
	l.mu.Unlock()
	if !ok {
		return nil
	}
	if a, isTCP := s.local.(*net.TCPAddr); isTCP && a.IP.IsLoopback() {
		return nil
	}
	return l.StopServer("tcp", port)
}
