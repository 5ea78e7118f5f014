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
	if req.Src == "" && !p.HostNetwork {
		// the pod's address of the destination's IP version (a dual-stack
		// pod has one of each)
		if a, ok := p.IPOf(destinationAddr(req)); ok {
			req.Src = a.String()
		}
	}
	logf("--pod %s: %s", pod, p)
	return nil
}

// destinationAddr is the address the request traces to (--dst, or the
// host of --to), invalid when it names none.
func destinationAddr(req *trace.Request) netip.Addr {
	host := req.Dst
	if req.To != "" {
		if h, _, err := net.SplitHostPort(req.To); err == nil {
			host = h
		}
	}
	if p, err := netip.ParsePrefix(host); err == nil {
		return p.Addr()
	}
	a, _ := netip.ParseAddr(host)
	return a
}
