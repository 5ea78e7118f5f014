// Package probe sends one packet from inside a network namespace so a trace
// needs no other traffic: a TCP SYN (a connect attempt), a UDP datagram or
// an ICMP echo request.
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

// Send sends one probe of proto ("tcp", "udp" or "icmp") to dst from the
// netns at nsPath and returns once it left (TCP: when the connect attempt
// ended, at most timeout). The outcome of a connect is not an error: the
// trace tells what happened to the packet.
func Send(ctx context.Context, nsPath, proto string, dst netip.AddrPort, timeout time.Duration) error {
	return netnsutil.Do(nsPath, func() error {
		switch proto {
		case "tcp", "":
			d := net.Dialer{Timeout: timeout}
			c, err := d.DialContext(ctx, "tcp4", dst.String())
			if err == nil {
				c.Close()
			}
			return nil
		case "udp":
			c, err := net.Dial("udp4", dst.String())
			if err != nil {
				return fmt.Errorf("udp probe to %s: %w", dst, err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("skbtrail probe")); err != nil {
				return fmt.Errorf("udp probe to %s: %w", dst, err)
			}
			// keep the socket briefly so a reply is received, not refused
			_ = c.SetReadDeadline(time.Now().Add(timeout))
			buf := make([]byte, 512)
			_, _ = c.Read(buf)
			return nil
		case "icmp":
			return echo(dst.Addr())
		}
		return fmt.Errorf("unknown probe protocol %q (tcp, udp or icmp)", proto)
	})
}

// echo sends one ICMP echo request through a raw socket.
func echo(dst netip.Addr) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP)
	if err != nil {
		return fmt.Errorf("icmp probe socket: %w", err)
	}
	defer unix.Close(fd)
	msg := []byte{8, 0, 0, 0, 0x53, 0x54, 0, 1, 's', 'k', 'b', 't', 'r', 'a', 'i', 'l'}
	sum := checksum(msg)
	msg[2], msg[3] = byte(sum>>8), byte(sum)
	sa := &unix.SockaddrInet4{Addr: dst.As4()}
	if err := unix.Sendto(fd, msg, 0, sa); err != nil {
		return fmt.Errorf("icmp probe to %s: %w", dst, err)
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
