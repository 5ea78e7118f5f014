package diagnose

import (
	"fmt"
	"net/netip"

	"github.com/skbtrail/skbtrail/netnsutil"
	"github.com/skbtrail/skbtrail/pkg/qdisc"
	"github.com/skbtrail/skbtrail/pkg/resolvconf"
	"github.com/skbtrail/skbtrail/pkg/sockdiag"
)

// readKernelState makes the Diagnoser read sockets, processes, qdiscs,
// next hops, conntrack use and resolv.conf from the kernel, in the
// namespaces reg opens (tests set these readers to fakes instead).
func (d *Diagnoser) readKernelState(reg *netnsutil.Registry) {
	path := func(ino uint32) (string, error) {
		p, ok := reg.Path(netnsutil.Inode(ino))
		if !ok {
			return "", fmt.Errorf("netns %d is gone", ino)
		}
		return p, nil
	}
	d.sockets = func(ino uint32) ([]sockdiag.Socket, error) {
		p, err := path(ino)
		if err != nil {
			return nil, err
		}
		return sockdiag.List(p)
	}
	d.process = func(ino uint32) (sockdiag.Process, bool) { return sockdiag.FindProcess("/proc", ino) }
	d.qdiscs = func(ino uint32, dev string) ([]qdisc.Qdisc, error) {
		p, err := path(ino)
		if err != nil {
			return nil, err
		}
		return qdisc.List(p, dev)
	}
	d.lookupHop = func(ino uint32, dst netip.Addr) (neighHop, bool) {
		p, err := path(ino)
		if err != nil {
			return neighHop{}, false
		}
		return readNextHop(p, dst)
	}
	d.conntrackUse = func(ino uint32) (int, int, bool) {
		p, err := path(ino)
		if err != nil {
			return 0, 0, false
		}
		return readConntrackUse(p)
	}
	d.resolvConf = func(ino uint32) (resolvconf.Config, int, bool) {
		c, pid, err := resolvconf.OfNetns("/proc", uint64(ino))
		return c, pid, err == nil
	}
}
