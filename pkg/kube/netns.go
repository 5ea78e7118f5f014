//go:build linux

package kube

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/skbtrail/skbtrail/netnsutil"
)

// scanNetns looks through every network namespace on the node for the one
// that has address ip configured (the host namespace does not count).
func (r *Resolver) scanNetns(ctx context.Context, ip netip.Addr) (Pod, bool, error) {
	reg := netnsutil.NewRegistry()
	if err := reg.Refresh(); err != nil {
		r.logf("kube: netns scan: %v", err)
	}
	e, found, err := NetnsWithAddr(ctx, reg, ip, r.logf)
	if !found || err != nil {
		return Pod{}, false, err
	}
	r.logf("kube: netns scan: %s is configured in network namespace %s", ip, e.Name)
	return Pod{IP: ip, NetnsPath: e.Path, NetnsInode: uint32(e.Inode), Source: SourceNetnsScan}, true, nil
}

// NetnsWithAddr finds the one namespace of reg (not the host's) that has
// address ip configured: a pod's namespace by its IP. Not found is not an
// error; an address in several namespaces or only in the host's is.
func NetnsWithAddr(ctx context.Context, reg *netnsutil.Registry, ip netip.Addr, logf func(string, ...any)) (netnsutil.Entry, bool, error) {
	host := reg.Host()
	var owners []netnsutil.Entry
	hostOwns := false
	unreadable := 0
	for _, e := range reg.All() {
		if err := ctx.Err(); err != nil {
			return netnsutil.Entry{}, false, err
		}
		if e.Path == "" {
			continue
		}
		has, err := nsHasAddr(e.Path, ip)
		if err != nil {
			unreadable++
			continue
		}
		if !has {
			continue
		}
		if e.Inode == host {
			hostOwns = true
		} else {
			owners = append(owners, e)
		}
	}
	if unreadable > 0 && logf != nil {
		logf("kube: netns scan: %d network namespaces could not be inspected", unreadable)
	}
	switch len(owners) {
	case 0:
		if hostOwns {
			return netnsutil.Entry{}, false, newError(ErrNotFound, "address %s belongs to the host network namespace, not to a pod; give the pod as NAMESPACE/NAME", ip)
		}
		return netnsutil.Entry{}, false, nil
	case 1:
		return owners[0], true, nil
	}
	names := make([]string, len(owners))
	for i, e := range owners {
		names[i] = e.Name
	}
	return netnsutil.Entry{}, false, newError(ErrAmbiguous, "address %s is configured in several network namespaces: %s", ip, strings.Join(names, ", "))
}

// nsHasAddr reports whether ip is configured on an interface of the
// network namespace at path.
func nsHasAddr(path string, ip netip.Addr) (bool, error) {
	h, err := netnsutil.NewHandle(path)
	if err != nil {
		return false, err
	}
	defer h.Close()
	family := netlink.FAMILY_V4
	if ip.Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := h.AddrList(nil, family)
	if err != nil {
		return false, fmt.Errorf("list addresses in %s: %w", path, err)
	}
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
			return true, nil
		}
	}
	return false, nil
}
