package lab

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/skbtrail/skbtrail/netnsutil"
)

// The "nic-exit" fault: node A's underlay becomes a tun device whose far
// end is this process, the way a physical NIC's far end is the wire.
const (
	// ExitDevice is the tun device the fault gives node A.
	ExitDevice = "nic0"
	// ExitProbeIP is an address of TEST-NET-3 that no lab namespace owns;
	// node A routes it out of ExitDevice.
	ExitProbeIP = "203.0.113.80"
)

// tunFrameMax bounds one read: a tun frame is at most the device MTU
// (64 KiB with GSO off, which is what a tun without IFF_VNET_HDR gets).
const tunFrameMax = 1 << 16

// openTun creates tun device name (IFF_TUN|IFF_NO_PI) in lab namespace ns
// and reads and discards what the namespace sends through it, counting
// frames, until Down (or StopServer("tun", 0)) closes the file descriptor,
// which also removes the device. The device lives only as long as this
// process: nothing else holds it.
func (l *Lab) openTun(ns, name string) error {
	var f *os.File
	err := InNetns(ns, func() error {
		// opened inside ns: the tun device is created in the namespace
		// of the file's socket
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(name)
		if err == nil {
			ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
			err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
		}
		if err != nil {
			unix.Close(fd)
			return fmt.Errorf("TUNSETIFF %s: %w", name, err)
		}
		// non-blocking: the runtime poller reads it, and Close ends a
		// pending Read
		f = os.NewFile(uintptr(fd), "tun:"+name)
		return nil
	})
	if err != nil {
		return fmt.Errorf("lab: tun %s in %s: %w", name, ns, err)
	}
	s := &server{closer: f, gone: linkGone(ns, name)}
	if err := l.addServer(serverKey("tun", 0), ns, s); err != nil {
		f.Close()
		return err
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		buf := make([]byte, tunFrameMax)
		for {
			if _, err := f.Read(buf); err != nil {
				return
			}
			l.exitFrames.Add(1)
		}
	}()
	return nil
}

// linkGone returns a check that namespace ns has no device name any more.
func linkGone(ns, name string) func() (bool, error) {
	return func() (bool, error) {
		h, err := netnsutil.NewHandle(NetnsPath(ns))
		if err != nil {
			return false, err
		}
		defer h.Close()
		_, err = h.LinkByName(name)
		if errors.As(err, new(netlink.LinkNotFoundError)) {
			return true, nil
		}
		return false, err
	}
}

// ExitFrames is the number of frames node A sent out of ExitDevice (the
// "nic-exit" fault) so far.
func (l *Lab) ExitFrames() uint64 { return l.exitFrames.Load() }

// applyNICExit gives node A the tun device nic0, re-creates its VXLAN
// device on top of it (as a real node's overlay sits on its NIC) and
// routes node B's underlay address and ExitProbeIP out of it.
func (l *Lab) applyNICExit(ctx context.Context) error {
	if err := l.openTun(l.NodeA, ExitDevice); err != nil {
		return err
	}
	if err := l.ip(ctx, l.NodeA, "link", "set", ExitDevice, "up"); err != nil {
		return err
	}
	// bound to eth0, the VXLAN device's route lookups would never pick
	// a route through nic0
	if err := l.ip(ctx, l.NodeA, "link", "del", "dev", l.VXLANDevice); err != nil {
		return err
	}
	v := l.vtepA(NodeAIP)
	v.under = ExitDevice
	if err := l.setupVTEP(ctx, v); err != nil {
		return err
	}
	for _, dst := range []string{NodeBIP, ExitProbeIP} {
		if err := l.ip(ctx, l.NodeA, "route", "add", dst+"/32", "dev", ExitDevice); err != nil {
			return err
		}
	}
	return nil
}
