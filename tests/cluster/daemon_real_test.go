package cluster

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/skbtrail/skbtrail/pkg/kubeauth"
	"github.com/skbtrail/skbtrail/tests/lab"
)

// TestRealDaemon starts the real `skbtrail daemon` (built from
// ./cmd/skbtrail) with StartDaemon on both lab nodes and reaches each
// through the API server's pod proxy, as kubectl skbtrail does.
func TestRealDaemon(t *testing.T) {
	lab.RequirePrivileged(t)
	bin := filepath.Join(t.TempDir(), "skbtrail")
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", bin, "./cmd/skbtrail")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build skbtrail: %v\n%s", err, out)
	}
	c := NewForTest(t, Options{Skbtrail: bin})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for node, ip := range map[string]string{"node-a": lab.NodeAIP, "node-b": lab.NodeBIP} {
		if err := c.StartDaemon(ctx, node); err != nil {
			t.Fatalf("StartDaemon %s: %v", node, err)
		}
		checkDaemonPod(ctx, t, c, node, ip)
		body, err := proxyInfo(ctx, c, UserTracer, node)
		if err != nil || !strings.Contains(body, `"node":"`+node+`"`) {
			t.Errorf("%s: GET /v1/info through the pod proxy as tracer: %v %s\ndaemon log:\n%s", node, err, body, c.DaemonLog(node))
		}
		if _, err := proxyInfo(ctx, c, UserNobody, node); !apierrors.IsForbidden(err) {
			t.Errorf("%s: GET /v1/info through the pod proxy as nobody: %v, want forbidden", node, err)
		}
	}
}

// proxyInfo gets the daemon's /v1/info through the API server's pod proxy
// as user, passing the user's token in kubeauth.TokenHeader.
func proxyInfo(ctx context.Context, c *Cluster, user, node string) (string, error) {
	cs, err := c.Client(user)
	if err != nil {
		return "", err
	}
	body, err := cs.CoreV1().RESTClient().Get().Namespace(SkbtrailNamespace).Resource("pods").
		Name("https:"+DaemonPodName(node)+":9776").SubResource("proxy").Suffix("v1", "info").
		SetHeader(kubeauth.TokenHeader, "Bearer "+c.Token(user)).DoRaw(ctx)
	return string(body), err
}
