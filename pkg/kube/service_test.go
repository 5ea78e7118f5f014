//go:build linux

package kube

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
)

func TestResolveServiceLiteralsAndHosts(t *testing.T) {
	ctx := context.Background()
	for in, want := range map[string]string{
		"10.96.0.10":      "10.96.0.10",
		"[fd00::1]":       "fd00::1",
		"::ffff:10.0.0.1": "10.0.0.1",
		"localhost":       "127.0.0.1", // /etc/hosts, through the node's resolver
		"localhost.":      "127.0.0.1",
	} {
		got, err := ResolveService(ctx, in)
		if err != nil || got != netip.MustParseAddr(want) {
			t.Errorf("ResolveService(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
}

func TestResolveServiceErrors(t *testing.T) {
	saved := lookupNetIP
	t.Cleanup(func() { lookupNetIP = saved })
	var asked []string
	answers := map[string][]netip.Addr{
		"multi.example":     {netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.1")},
		"dual.example":      {netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("192.0.2.9")},
		"v6.example":        {netip.MustParseAddr("2001:db8::2")},
		"web.default":       nil,
		"empty.example.org": {},
	}
	lookupNetIP = func(ctx context.Context, network, host string) ([]netip.Addr, error) {
		asked = append(asked, host)
		if _, ok := ctx.Deadline(); !ok {
			t.Errorf("lookup of %s without a deadline", host)
		}
		a, ok := answers[host]
		if !ok || (a == nil && host == "web.default") {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		return a, nil
	}
	ctx := context.Background()
	if a, err := ResolveService(ctx, "dual.example"); err != nil || a != netip.MustParseAddr("192.0.2.9") {
		t.Errorf("dual = %v, %v", a, err)
	}
	if a, err := ResolveService(ctx, "v6.example"); err != nil || a != netip.MustParseAddr("2001:db8::2") {
		t.Errorf("v6 = %v, %v", a, err)
	}
	for host, msg := range map[string]string{
		"web.default":        `cannot resolve "web.default" with the node's resolver (no such host); if it is a Service, pass its ClusterIP instead (kubectl get svc web -n default)`,
		"web.default.svc":    `cannot resolve "web.default.svc" with the node's resolver (no such host); if it is a Service, pass its ClusterIP instead (kubectl get svc web -n default)`,
		"nosuch.example.org": `cannot resolve "nosuch.example.org" with the node's resolver (no such host); pass an IP address instead`,
		"multi.example":      `"multi.example" resolves to several addresses (192.0.2.1, 192.0.2.2); pass the one to trace as an IP address`,
		"empty.example.org":  `cannot resolve "empty.example.org" with the node's resolver (no address); pass an IP address instead`,
		"":                   "empty host",
	} {
		_, err := ResolveService(ctx, host)
		if err == nil || !errors.Is(err, ErrResolve) || err.Error() != msg {
			t.Errorf("ResolveService(%q) error\n got: %v\nwant: %s", host, err, msg)
		}
	}
	// Names are asked as given: no search domain or cluster suffix added.
	for _, h := range asked {
		if h != "dual.example" && h != "v6.example" && h != "web.default" && h != "web.default.svc" &&
			h != "nosuch.example.org" && h != "multi.example" && h != "empty.example.org" {
			t.Errorf("looked up %q", h)
		}
	}
}
