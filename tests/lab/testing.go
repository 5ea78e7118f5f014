package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"
)

// RequirePrivilegedEnv names the environment variable that turns "not root"
// from a skip into a failure.
const RequirePrivilegedEnv = "SKBTRAIL_REQUIRE_PRIVILEGED"

// RequirePrivileged skips t unless the process runs as root; if
// SKBTRAIL_REQUIRE_PRIVILEGED=1 it fails t instead of skipping.
func RequirePrivileged(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv(RequirePrivilegedEnv) == "1" {
		t.Fatalf("lab: test needs root but runs as euid %d (%s=1 makes this a failure instead of a skip)", os.Geteuid(), RequirePrivilegedEnv)
	}
	t.Skipf("lab: test needs root but runs as euid %d (set %s=1 to make this a failure)", os.Geteuid(), RequirePrivilegedEnv)
}

// NewForTest brings a lab up for a test and registers Down with t.Cleanup.
// It skips (or fails, see RequirePrivileged) when not root and fails the
// test if the lab cannot be built. If cfg.Logf is nil, notes go to t.Logf.
func NewForTest(t testing.TB, cfg Config) *Lab {
	t.Helper()
	RequirePrivileged(t)
	if cfg.Logf == nil {
		cfg.Logf = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := Up(ctx, cfg)
	if err != nil {
		t.Fatalf("lab: up: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Down(); err != nil {
			t.Errorf("lab: down %s: %v", l.Prefix, err)
		}
	})
	return l
}

// Verify checks that the healthy data path works: TCP from pod A to the
// ClusterIP 10.96.0.100:80 (DNAT + VXLAN + router) and directly to
// 10.244.1.2:80 (a dual-stack lab: the IPv6 Service and pod B's IPv6
// address too). Call it before applying faults.
func (l *Lab) Verify(ctx context.Context, timeout time.Duration) error {
	var errs []error
	addrs := []string{l.WebService.Addr(), l.PodBIP + ":80"}
	if l.DualStack {
		addrs = append(addrs, l.WebService6.Addr(), net.JoinHostPort(l.PodBIP6, "80"))
	}
	for _, addr := range addrs {
		if err := l.Dial(ctx, l.PodA, addr, timeout); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lab %s: verify: %w", l.Prefix, err)
	}
	return nil
}
