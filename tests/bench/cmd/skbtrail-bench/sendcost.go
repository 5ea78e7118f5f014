package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/skbtrail/skbtrail/netnsutil"
	"github.com/skbtrail/skbtrail/pkg/nftrace"
)

// sendCost is the CPU time (user + system, of the sending thread: other
// load on the machine does not count) per UDP datagram sent over the
// loopback of namespace ns: each datagram crosses the output and the
// prerouting hook, so both marking chains, and the namespace's own rules.
type sendCostResult struct {
	nsPerPacket     float64
	events, dropped uint64
}

// measureSendCost sends n datagrams per round, rounds rounds for each
// mode in turn (rotating), and returns each mode's median.
func measureSendCost(ns string, modes []markMode, n, rounds int) ([]sendCostResult, error) {
	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	per := make([][]float64, len(modes))
	events := make([]uint64, len(modes))
	lost := make([]uint64, len(modes))
	for r := 0; r < rounds; r++ {
		for k := range modes {
			i := (k + r) % len(modes)
			var mk *nftrace.Marker
			var l *nftrace.Listener
			if m := modes[i].match; m != nil {
				if l, err = nftrace.Listen(int(f.Fd())); err != nil {
					return nil, err
				}
				if mk, err = nftrace.NewMarker(int(f.Fd()), *m); err != nil {
					l.Close()
					return nil, err
				}
			}
			ns, err := sendLoop("/run/netns/"+ns, n)
			if mk != nil {
				mk.Close()
				l.Close()
				events[i] += l.Events.Load()
				lost[i] += l.Lost.Load()
			}
			if err != nil {
				return nil, err
			}
			per[i] = append(per[i], ns)
		}
	}
	out := make([]sendCostResult, len(modes))
	for i := range modes {
		sort.Float64s(per[i])
		out[i] = sendCostResult{nsPerPacket: per[i][len(per[i])/2], events: events[i] / uint64(rounds), dropped: lost[i] / uint64(rounds)}
	}
	return out, nil
}

// sendLoop sends n 64-byte datagrams from 127.0.0.1 to a socket of its
// own in the namespace at path and returns the thread's CPU ns per datagram.
func sendLoop(path string, n int) (float64, error) {
	var perPacket float64
	err := netnsutil.Do(path, func() error {
		rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 0})
		if err != nil {
			return err
		}
		defer rx.Close()
		dst := netip.MustParseAddrPort(rx.LocalAddr().String())
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		sa := &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}
		buf := make([]byte, 64)
		var before, after unix.Rusage
		if err := unix.Getrusage(unix.RUSAGE_THREAD, &before); err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			// a full receive buffer drops at the socket: the same for every mode
			_ = unix.Sendto(fd, buf, 0, sa)
		}
		if err := unix.Getrusage(unix.RUSAGE_THREAD, &after); err != nil {
			return err
		}
		cpu := unix.TimevalToNsec(after.Utime) - unix.TimevalToNsec(before.Utime) + unix.TimevalToNsec(after.Stime) - unix.TimevalToNsec(before.Stime)
		perPacket = float64(cpu) / float64(n)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("send loop: %w", err)
	}
	return perPacket, nil
}
