package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skbtrail/skbtrail/tests/lab"
)

// fakeDaemon is a stand-in for `skbtrail daemon`: it logs its arguments,
// proves that its kubeconfig works from the node netns (kubectl get node
// <--node-name>), announces readiness like the real daemon and waits. With
// --fail it exits with a usage error instead.
const fakeDaemon = `#!/bin/sh
echo "args: $*" >&2
kc= node=
while [ $# -gt 0 ]; do
	case "$1" in
	--kubeconfig) kc=$2; shift ;;
	--node-name) node=$2; shift ;;
	--fail) echo "unknown flag: --fail" >&2; exit 2 ;;
	esac
	shift
done
%s --kubeconfig "$kc" get node "$node" -o name >&2 || exit 3
echo "{\"level\":\"info\",\"msg\":\"skbtrail daemon ready\"}" >&2
echo "stdout line"
exec sleep 300
`

// TestDaemonLifecycle checks StartDaemon, the daemon Pod object, DaemonLog,
// StopDaemon and a failing start with a fake daemon (a shell script), so
// that it does not depend on the real daemon's cluster flags.
func TestDaemonLifecycle(t *testing.T) {
	lab.RequirePrivileged(t)
	bins, err := LocateBinaries()
	if err != nil {
		t.Fatal(err)
	}
	fake := filepath.Join(t.TempDir(), "skbtrail")
	if err := os.WriteFile(fake, fmt.Appendf(nil, fakeDaemon, bins.Kubectl), 0o755); err != nil {
		t.Fatal(err)
	}
	c := NewForTest(t, Options{Skbtrail: fake, Nodes: []string{"worker-1", "worker-2"}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	start := time.Now()
	if err := c.StartDaemon(ctx, "worker-1", "--trace-flag", "x"); err != nil {
		t.Fatalf("StartDaemon: %v", err)
	}
	t.Logf("fake daemon ready in %s", time.Since(start).Round(time.Millisecond))
	l := c.opts.Lab
	log := c.DaemonLog("worker-1")
	wantArgs := fmt.Sprintf("args: daemon --listen unix://%s --metrics  --node-name worker-1 --node-netns %s,%s --kubeconfig %s --cluster-listen 0.0.0.0:9776 --trace-flag x",
		c.DaemonSocket("worker-1"), l.NodeA, l.PodA, c.Kubeconfig(UserDaemon))
	if !strings.Contains(log, wantArgs) || !strings.Contains(log, "node/worker-1") {
		t.Errorf("daemon log:\n%s\nwant %q and node/worker-1", log, wantArgs)
	}
	if out := c.DaemonStdout("worker-1"); out != "stdout line\n" {
		t.Errorf("daemon stdout: %q", out)
	}
	checkDaemonPod(ctx, t, c, "worker-1", lab.NodeAIP)
	if err := c.StartDaemon(ctx, "worker-1"); err == nil || !strings.Contains(err.Error(), "runs already") {
		t.Errorf("second StartDaemon for worker-1: %v, want 'runs already'", err)
	}

	pid := c.daemons["worker-1"].PID()
	if err := c.StopDaemon("worker-1"); err != nil {
		t.Fatalf("StopDaemon: %v", err)
	}
	if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
		t.Errorf("daemon pid %d still exists after StopDaemon (kill 0: %v)", pid, err)
	}
	checkDaemonPod(ctx, t, c, "worker-1", lab.NodeAIP) // the Pod object stays

	err = c.StartDaemon(ctx, "worker-2", "--fail")
	if err == nil || !strings.Contains(err.Error(), "unknown flag: --fail") {
		t.Errorf("StartDaemon of a failing daemon: %v, want an error with the log tail", err)
	} else {
		t.Logf("failing daemon: %v", err)
	}
	// Restart on worker-1 (the Pod exists already), and one on worker-2.
	for _, n := range []string{"worker-1", "worker-2"} {
		if err := c.StartDaemon(ctx, n); err != nil {
			t.Fatalf("StartDaemon %s: %v", n, err)
		}
	}
	checkDaemonPod(ctx, t, c, "worker-2", lab.NodeBIP)
	if n := strings.Count(c.DaemonLog("worker-1"), "skbtrail daemon ready"); n != 2 {
		t.Errorf("worker-1 log has %d ready lines, want 2 (two starts)", n)
	}
}

func checkDaemonPod(ctx context.Context, t *testing.T, c *Cluster, node, ip string) {
	t.Helper()
	p, err := c.Admin().CoreV1().Pods(SkbtrailNamespace).Get(ctx, DaemonPodName(node), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("daemon pod: %v", err)
	}
	if p.Spec.NodeName != node || !p.Spec.HostNetwork || p.Status.PodIP != ip || p.Status.Phase != corev1.PodRunning ||
		p.Labels["app.kubernetes.io/name"] != "skbtrail" || p.Spec.Containers[0].Ports[0].ContainerPort != DaemonTracePort {
		t.Errorf("daemon pod %s: node %q hostNetwork %v ip %q phase %q labels %v", p.Name, p.Spec.NodeName, p.Spec.HostNetwork, p.Status.PodIP, p.Status.Phase, p.Labels)
	}
}
