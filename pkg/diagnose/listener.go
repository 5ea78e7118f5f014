package diagnose

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/skbtrail/skbtrail/pkg/sockdiag"
)

// maxListed bounds how many other listeners a finding names.
const maxListed = 5

// listenerHint says, for a request to dst (proto "tcp" or "udp") that
// found no socket, what does listen in the destination namespace: the same
// port on loopback only or on another address, the same port on the other
// protocol, other ports, or nothing; and what to change.
func listenerHint(socks []sockdiag.Socket, proto string, dst netip.AddrPort) (what, advice string) {
	port := dst.Port()
	var samePort, otherProto, otherPorts []sockdiag.Socket
	for _, s := range socks {
		switch {
		case s.Proto == proto && s.Local.Port() == port:
			samePort = append(samePort, s)
		case s.Local.Port() == port:
			otherProto = append(otherProto, s)
		case s.Proto == proto:
			otherPorts = append(otherPorts, s)
		}
	}
	all := netip.AddrPortFrom(netip.IPv4Unspecified(), port)
	if dst.Addr().Is6() {
		all = netip.AddrPortFrom(netip.IPv6Unspecified(), port)
	}
	for _, s := range samePort {
		if s.Accepts(dst.Addr()) {
			return fmt.Sprintf("a %s server listens on %s now: it was not there when the request came (started since, or restarting)", proto, s.Local),
				"check whether the server restarts (kubectl describe pod: restarts; kubectl logs --previous) and that the pod only becomes Ready once it listens (a readiness probe on the port)"
		}
	}
	if len(samePort) > 0 {
		bound := addrList(samePort)
		if allLoopback(samePort) {
			return fmt.Sprintf("a %s server listens on port %d on loopback only (%s): it cannot be reached from outside the pod", proto, port, bound),
				fmt.Sprintf("make the server listen on all addresses (%s) or on the pod address %s instead of %s (its listen/bind address setting, e.g. --host %s)", all, dst, bound, all.Addr())
		}
		return fmt.Sprintf("a %s server listens on port %d on %s, not on %s", proto, port, bound, dst.Addr()),
			fmt.Sprintf("make the server listen on all addresses (%s) or on %s (its listen/bind address setting)", all, dst)
	}
	if len(otherProto) > 0 {
		other := otherProto[0].Proto
		return fmt.Sprintf("nothing listens on %s port %d, but a %s socket is bound to %s", proto, port, other, addrList(otherProto)),
			fmt.Sprintf("the protocols differ: the server uses %s, the request %s; set the Service port's protocol (or the client) to %s, or make the server use %s",
				other, proto, strings.ToUpper(other), proto)
	}
	if len(otherPorts) > 0 {
		slices.SortStableFunc(otherPorts, func(a, b sockdiag.Socket) int {
			return distance(a.Local.Port(), port) - distance(b.Local.Port(), port)
		})
		if len(otherPorts) > maxListed {
			otherPorts = otherPorts[:maxListed]
		}
		near := otherPorts[0]
		return fmt.Sprintf("nothing listens on %s port %d; %s listeners in the namespace (nearest port first): %s", proto, port, proto, addrList(otherPorts)),
			fmt.Sprintf("point the Service's targetPort (or the client) at the port the server uses (%d), or make the server listen on port %d", near.Local.Port(), port)
	}
	return fmt.Sprintf("no %s socket listens in the namespace at all", proto),
		fmt.Sprintf("the server is not running or has not bound its port: check the container (kubectl describe pod: restarts, readiness; kubectl logs) and that it listens on %s", all)
}

func allLoopback(socks []sockdiag.Socket) bool {
	for _, s := range socks {
		if !s.IsLoopback() {
			return false
		}
	}
	return true
}

func addrList(socks []sockdiag.Socket) string {
	var seen []string
	for _, s := range socks {
		if a := s.Local.String(); !slices.Contains(seen, a) {
			seen = append(seen, a)
		}
	}
	return strings.Join(seen, ", ")
}

func distance(a, b uint16) int {
	if a > b {
		return int(a - b)
	}
	return int(b - a)
}
