//go:build linux

package kube

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// lookupNetIP is the node's resolver; tests replace it.
var lookupNetIP = net.DefaultResolver.LookupNetIP

// ResolveServiceTimeout bounds ResolveService when ctx has no deadline.
const ResolveServiceTimeout = 5 * time.Second

// ErrResolve is matched by the errors ResolveService returns.
var ErrResolve = errors.New("cannot resolve host")

// ResolveService turns the HOST of --to HOST:PORT into one address. An IP
// address is returned as is. A name (e.g. a Service as "web.default") is
// resolved only through the node's own resolver (/etc/hosts,
// /etc/resolv.conf); nothing is guessed: no search domain or cluster
// suffix is appended and no API server is asked. A name that does not
// resolve, or resolves to several IPv4 addresses, is an error (matching
// ErrResolve) that says what to pass instead. When a name has exactly one
// IPv4 address and also IPv6 ones, the IPv4 address is returned.
func ResolveService(ctx context.Context, host string) (netip.Addr, error) {
	h := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSuffix(host, "]"), "["), ".")
	if h == "" {
		return netip.Addr{}, newError(ErrResolve, "empty host")
	}
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Unmap(), nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, ResolveServiceTimeout)
		defer cancel()
	}
	hint := "pass an IP address instead"
	if parts := strings.Split(h, "."); len(parts) == 2 || (len(parts) > 2 && parts[2] == "svc") {
		hint = fmt.Sprintf("if it is a Service, pass its ClusterIP instead (kubectl get svc %s -n %s)", parts[0], parts[1])
	}
	addrs, err := lookupNetIP(ctx, "ip", h)
	if err != nil {
		why := err.Error()
		var de *net.DNSError
		if errors.As(err, &de) {
			switch {
			case de.IsNotFound:
				why = "no such host"
			case de.IsTimeout:
				why = "timed out"
			default:
				why = de.Err
			}
		}
		return netip.Addr{}, newError(ErrResolve, "cannot resolve %q with the node's resolver (%s); %s", host, why, hint)
	}
	var v4, v6 []netip.Addr
	seen := map[netip.Addr]bool{}
	for _, a := range addrs {
		a = a.Unmap()
		if seen[a] {
			continue
		}
		seen[a] = true
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	switch {
	case len(v4) == 1:
		return v4[0], nil
	case len(v4) > 1:
		return netip.Addr{}, newError(ErrResolve, "%q resolves to several addresses (%s); pass the one to trace as an IP address", host, joinAddrs(v4))
	case len(v6) == 1:
		return v6[0], nil
	case len(v6) > 1:
		return netip.Addr{}, newError(ErrResolve, "%q resolves to several addresses (%s); pass the one to trace as an IP address", host, joinAddrs(v6))
	}
	return netip.Addr{}, newError(ErrResolve, "cannot resolve %q with the node's resolver (no address); %s", host, hint)
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}
