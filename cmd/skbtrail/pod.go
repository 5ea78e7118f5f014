package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/skbtrail/skbtrail/pkg/kube"
	"github.com/skbtrail/skbtrail/pkg/trace"
)

// resolveKube rewrites the request's Kubernetes names into what the tracer
// takes: a --to HOST that is not an IP address becomes one (the node's
// resolver only, see kube.ResolveService), and --pod NS/NAME becomes
// --from-netns (the pod's netns, named as netnsutil names it) plus --src
// (the pod IP) unless --src was given.
func resolveKube(ctx context.Context, req *trace.Request, pod string, criEndpoints []string, logf func(string, ...any)) error {
	if req.To != "" {
		if host, port, err := net.SplitHostPort(req.To); err == nil {
			if _, perr := netip.ParseAddr(host); perr != nil {
				a, err := kube.ResolveService(ctx, host)
				if err != nil {
					return fmt.Errorf("--to: %w", err)
				}
				logf("--to %s: %s", host, a)
				req.To = net.JoinHostPort(a.String(), port)
			}
		}
	}
	req.CRIEndpoints = criEndpoints
	if pod == "" {
		return nil
	}
	if req.FromNetns != "" {
		return errors.New("--pod and --from-netns cannot be combined")
	}
	r := kube.NewResolver(kube.Options{CRIEndpoints: criEndpoints, Logf: logf})
	p, err := r.Resolve(ctx, pod)
	if err != nil {
		if errors.Is(err, kube.ErrNoRuntime) {
			return fmt.Errorf("--pod: %w (point --cri-endpoint at the runtime's socket)", err)
		}
		return fmt.Errorf("--pod: %w", err)
	}
	name, err := p.NetnsName()
	if err != nil {
		return fmt.Errorf("--pod: %w", err)
	}
	req.FromNetns = name
	if a := p.Addr(destination(req)); req.Src == "" && a.IsValid() && !p.HostNetwork {
		req.Src = a.String() // the pod's address of the destination's family
	}
	logf("--pod %s: %s", pod, p)
	return nil
}

// destination is the request's destination address (--to's host, or the
// address of --dst), or the zero Addr when it names none.
func destination(req *trace.Request) netip.Addr {
	if host, _, err := net.SplitHostPort(req.To); err == nil {
		if a, err := netip.ParseAddr(host); err == nil {
			return a.Unmap()
		}
	}
	if pfx, err := netip.ParsePrefix(req.Dst); err == nil {
		return pfx.Addr().Unmap()
	}
	if a, err := netip.ParseAddr(req.Dst); err == nil {
		return a.Unmap()
	}
	return netip.Addr{}
}
