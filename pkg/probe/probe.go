// Package probe sends one packet from inside a network namespace so a trace
// needs no other traffic: a TCP SYN (a connect attempt), a UDP datagram or
// an ICMP (ICMPv6) echo request, to an IPv4 or IPv6 address.
package probe

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skbtrail/skbtrail/netnsutil"
)

// Send sends one probe of proto ("tcp", "udp", "icmp" or "icmpv6") to dst
// from the netns at nsPath and returns once it left (TCP: when the connect
// attempt ended, at most timeout). The outcome of a connect is not an
// error: the trace tells what happened to the packet. Every probe forbids
// fragmentation (IPv4: DF set; IPv6: no fragmentation by the sender
// either), so a probe too big for the path is refused, not fragmented.
func Send(ctx context.Context, nsPath, proto string, dst netip.AddrPort, size int, timeout time.Duration) error {
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	ver := "4"
	if dst.Addr().Is6() {
		ver = "6"
	}
	return netnsutil.Do(nsPath, func() error {
		switch proto {
		case "tcp", "":
			d := net.Dialer{Timeout: timeout}
			c, err := d.DialContext(ctx, "tcp"+ver, dst.String())
			if err == nil {
				c.Close()
			}
			return nil
		case "udp":
			c, err := net.Dial("udp"+ver, dst.String())
			if err != nil {
				return fmt.Errorf("udp probe to %s: %w", dst, err)
			}
			defer c.Close()
			if err := setDF(c.(*net.UDPConn)); err != nil {
				return err
			}
			if _, err := c.Write(payload(size)); err != nil {
				return fmt.Errorf("udp probe to %s: %w", dst, err)
			}
			// keep the socket briefly so a reply is received, not refused
			_ = c.SetReadDeadline(time.Now().Add(timeout))
			buf := make([]byte, 512)
			_, _ = c.Read(buf)
			return nil
		case "icmp", "icmpv6":
			if dst.Addr().Is6() {
				return echo6(dst.Addr(), size)
			}
			return echo(dst.Addr(), size)
		}
		return fmt.Errorf("unknown probe protocol %q (tcp, udp, icmp or icmpv6)", proto)
	})
}

// echo sends one ICMP echo request through a raw socket.
func echo(dst netip.Addr, size int) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP)
	if err != nil {
		return fmt.Errorf("icmp probe socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO); err != nil {
		return fmt.Errorf("icmp probe: set DF: %w", err)
	}
	msg := append([]byte{8, 0, 0, 0, 0x53, 0x54, 0, 1}, payload(size)...)
	sum := checksum(msg)
	msg[2], msg[3] = byte(sum>>8), byte(sum)
	sa := &unix.SockaddrInet4{Addr: dst.As4()}
	if err := unix.Sendto(fd, msg, 0, sa); err != nil {
		return fmt.Errorf("icmp probe to %s: %w", dst, err)
	}
	return nil
}

// echo6 sends one ICMPv6 echo request through a raw socket (the kernel
// fills the ICMPv6 checksum).
func echo6(dst netip.Addr, size int) error {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_ICMPV6)
	if err != nil {
		return fmt.Errorf("icmpv6 probe socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DO); err != nil {
		return fmt.Errorf("icmpv6 probe: forbid fragmentation: %w", err)
	}
	msg := append([]byte{128, 0, 0, 0, 0x53, 0x54, 0, 1}, payload(size)...)
	sa := &unix.SockaddrInet6{Addr: dst.As16()}
	if err := unix.Sendto(fd, msg, 0, sa); err != nil {
		return fmt.Errorf("icmpv6 probe to %s: %w", dst, err)
	}
	return nil
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// payload is the probe's data: "skbtrail probe" repeated to size bytes
// (size 0: just the words).
func payload(size int) []byte {
	const word = "skbtrail probe "
	if size <= 0 {
		return []byte(word[:len(word)-1])
	}
	b := make([]byte, size)
	for i := range b {
		b[i] = word[i%len(word)]
	}
	return b
}

// setDF forbids fragmentation, so a datagram too big for the path is
// refused instead of silently fragmented (how MTU trouble shows).
func setDF(c *net.UDPConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("udp probe: %w", err)
	}
	var serr error
	v6 := c.RemoteAddr().(*net.UDPAddr).IP.To4() == nil
	if err := raw.Control(func(fd uintptr) {
		if v6 {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DO)
			return
		}
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
	}); err != nil {
		return fmt.Errorf("udp probe: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("udp probe: set DF: %w", serr)
	}
	return nil
}
