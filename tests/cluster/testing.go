package cluster

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/skbtrail/skbtrail/tests/lab"
)

// NewForTest brings a cluster up for a test and registers Down with
// t.Cleanup. If o.Lab is nil it first brings up a lab with a random prefix
// (lab.NewForTest, also cleaned up). Like the lab it skips when not root,
// unless SKBTRAIL_REQUIRE_PRIVILEGED=1 makes that a failure; missing
// control-plane binaries fail the test (run build-components.sh).
func NewForTest(t testing.TB, o Options) *Cluster {
	t.Helper()
	lab.RequirePrivileged(t)
	if _, err := LocateBinaries(); err != nil {
		t.Fatal(err)
	}
	if o.Lab == nil {
		o.Lab = lab.NewForTest(t, lab.Config{})
	}
	if o.Logf == nil {
		o.Logf = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Up(ctx, o)
	if err != nil {
		t.Fatalf("cluster: up: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster: kube-apiserver log tail:\n%s", logTail(filepath.Join(c.dir, "kube-apiserver.log"), 20))
		}
		if err := c.Down(); err != nil {
			t.Errorf("cluster: down: %v", err)
		}
	})
	return c
}
