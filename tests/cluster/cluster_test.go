package cluster

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/skbtrail/skbtrail/tests/lab"
)

var (
	tracesCreate = authorizationv1.ResourceAttributes{Group: "skbtrail.io", Resource: "traces", Verb: "create"}
	proxyCreate  = authorizationv1.ResourceAttributes{Namespace: SkbtrailNamespace, Resource: "pods", Subresource: "proxy", Verb: "create"}
)

func TestClusterUp(t *testing.T) {
	start := time.Now()
	l := lab.NewForTest(t, lab.Config{})
	labUp := time.Since(start)
	bins, err := LocateBinaries()
	if err != nil {
		t.Fatal(err)
	}
	// kubectl stands in for the plugin: RunPlugin only runs it.
	c := NewForTest(t, Options{Lab: l, Plugin: bins.Kubectl})
	t.Logf("lab up in %s, cluster up in %s", labUp.Round(time.Millisecond), (time.Since(start) - labUp).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	checkNodes(ctx, t, c.Admin())
	checkLabObjects(ctx, t, c.Admin())
	for _, tc := range []struct {
		user  string
		attrs authorizationv1.ResourceAttributes
		want  bool
	}{
		{UserTracer, tracesCreate, true},
		{UserTracer, proxyCreate, true},
		{UserNobody, tracesCreate, false},
		{UserNobody, proxyCreate, false},
	} {
		if got := selfAllowed(ctx, t, c, tc.user, tc.attrs); got != tc.want {
			t.Errorf("%s may %s %s/%s in %q: got %v, want %v", tc.user, tc.attrs.Verb, tc.attrs.Resource, tc.attrs.Subresource, tc.attrs.Namespace, got, tc.want)
		}
	}
	checkDaemonIdentity(ctx, t, c)

	conn, err := DialIn(ctx, l.NodeA, "tcp", c.APIServerAddr())
	if err != nil {
		t.Fatalf("node-a cannot reach the API server: %v", err)
	}
	conn.Close()
	checkRunPlugin(ctx, t, c)
}

func checkNodes(ctx context.Context, t *testing.T, admin kubernetes.Interface) {
	t.Helper()
	nodes, err := admin.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list nodes: %v", err)
	}
	got := map[string]string{}
	for _, n := range nodes.Items {
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				got[n.Name] = a.Address
			}
		}
		if !nodeReady(&n) {
			t.Errorf("node %s is not Ready: %+v", n.Name, n.Status.Conditions)
		}
		if n.Annotations["flannel.alpha.coreos.com/backend-type"] != "vxlan" {
			t.Errorf("node %s annotations: %v", n.Name, n.Annotations)
		}
	}
	want := map[string]string{"node-a": lab.NodeAIP, "node-b": lab.NodeBIP}
	if len(got) != 2 || got["node-a"] != want["node-a"] || got["node-b"] != want["node-b"] {
		t.Errorf("nodes and InternalIPs: got %v, want %v", got, want)
	}
}

func nodeReady(n *corev1.Node) bool {
	return slices.ContainsFunc(n.Status.Conditions, func(c corev1.NodeCondition) bool {
		return c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue
	})
}

func checkLabObjects(ctx context.Context, t *testing.T, admin kubernetes.Interface) {
	t.Helper()
	for _, want := range []struct{ name, node, ip string }{{ClientPod, "node-a", lab.PodAIP}, {WebPod, "node-b", lab.PodBIP}} {
		p, err := admin.CoreV1().Pods("default").Get(ctx, want.name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get pod default/%s: %v", want.name, err)
		}
		if p.Spec.NodeName != want.node || p.Status.PodIP != want.ip || p.Status.Phase != corev1.PodRunning {
			t.Errorf("pod default/%s: node %q ip %q phase %q, want %s %s Running", want.name, p.Spec.NodeName, p.Status.PodIP, p.Status.Phase, want.node, want.ip)
		}
	}
	for _, want := range []struct{ ns, name, clusterIP string }{{"default", WebService, lab.ClusterIP}, {"kube-system", DNSService, lab.DNSClusterIP}} {
		svc, err := admin.CoreV1().Services(want.ns).Get(ctx, want.name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get service %s/%s: %v", want.ns, want.name, err)
		}
		if svc.Spec.ClusterIP != want.clusterIP {
			t.Errorf("service %s/%s: ClusterIP %s, want %s", want.ns, want.name, svc.Spec.ClusterIP, want.clusterIP)
		}
		eps, err := admin.DiscoveryV1().EndpointSlices(want.ns).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + want.name})
		if err != nil {
			t.Fatalf("list endpointslices of %s/%s: %v", want.ns, want.name, err)
		}
		if len(eps.Items) != 1 || len(eps.Items[0].Endpoints) != 1 || eps.Items[0].Endpoints[0].Addresses[0] != lab.PodBIP ||
			eps.Items[0].Endpoints[0].TargetRef.Name != WebPod || *eps.Items[0].Endpoints[0].NodeName != "node-b" {
			t.Errorf("endpointslices of %s/%s: %+v", want.ns, want.name, eps.Items)
		}
	}
}

// selfAllowed asks, as user (its kubeconfig), whether user may do attrs.
func selfAllowed(ctx context.Context, t *testing.T, c *Cluster, user string, attrs authorizationv1.ResourceAttributes) bool {
	t.Helper()
	cs, err := c.Client(user)
	if err != nil {
		t.Fatal(err)
	}
	r := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &attrs}}
	got, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, r, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("%s: SelfSubjectAccessReview: %v", user, err)
	}
	return got.Status.Allowed
}

// checkDaemonIdentity does what a daemon does with a caller's token: a
// TokenReview and a SubjectAccessReview, with the daemon's ServiceAccount
// token.
func checkDaemonIdentity(ctx context.Context, t *testing.T, c *Cluster) {
	t.Helper()
	d, err := c.Client(UserDaemon)
	if err != nil {
		t.Fatal(err)
	}
	tr := &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: c.Token(UserTracer)}}
	got, err := d.AuthenticationV1().TokenReviews().Create(ctx, tr, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("daemon: TokenReview: %v", err)
	}
	if !got.Status.Authenticated || got.Status.User.Username != UserTracer {
		t.Errorf("daemon: TokenReview of tracer's token: %+v", got.Status)
	}
	for user, want := range map[string]bool{UserTracer: true, UserNobody: false} {
		attrs := tracesCreate
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user, Groups: []string{"system:authenticated"}, ResourceAttributes: &attrs,
		}}
		res, err := d.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("daemon: SubjectAccessReview for %s: %v", user, err)
		}
		if res.Status.Allowed != want {
			t.Errorf("daemon: SubjectAccessReview: %s may create traces: got %v, want %v (%s)", user, res.Status.Allowed, want, res.Status.Reason)
		}
	}
	if _, err := d.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{}); err != nil {
		t.Errorf("daemon: get node: %v", err)
	}
	if _, err := d.CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); err == nil {
		t.Error("daemon: listing pods was allowed; rbac.yaml grants it nodes, tokenreviews and subjectaccessreviews only")
	}
}

// checkRunPlugin runs kubectl as the plugin: inside the ctl netns with a
// user's kubeconfig file.
func checkRunPlugin(ctx context.Context, t *testing.T, c *Cluster) {
	t.Helper()
	out, errOut, code, err := c.RunPlugin(ctx, UserTracer, "get", "pods", "-A", "-o", "name")
	if err != nil || code != 0 || !strings.Contains(out, "pod/web") || !strings.Contains(out, "pod/client") {
		t.Errorf("kubectl get pods as tracer: exit %d err %v\nstdout: %s\nstderr: %s", code, err, out, errOut)
	}
	out, errOut, code, err = c.RunKubectl(ctx, UserNobody, "get", "nodes")
	if err != nil || code == 0 || !strings.Contains(errOut, "forbidden") {
		t.Errorf("kubectl get nodes as nobody: exit %d err %v (want non-zero, forbidden)\nstdout: %s\nstderr: %s", code, err, out, errOut)
	}
}

func TestLocateBinariesMissing(t *testing.T) {
	t.Setenv("SKBTRAIL_CACHE", t.TempDir())
	_, err := LocateBinaries()
	if err == nil || !strings.Contains(err.Error(), BuildScript) {
		t.Fatalf("LocateBinaries with an empty cache: %v, want an error naming %s", err, BuildScript)
	}
}

func TestDecodeManifests(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeManifest(root + "/deploy/kubernetes/rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, o := range objs {
		kinds = append(kinds, describe(o))
	}
	if len(objs) != 5 {
		t.Errorf("rbac.yaml: %d objects, want 5: %v", len(objs), kinds)
	}
	if _, err := os.Stat(root + "/deploy/kubernetes/daemonset.yaml"); err != nil {
		t.Fatal(err)
	}
}

// TestUpFailureCleansUp makes Up fail after etcd and kube-apiserver run (no
// manifests) and checks that nothing is left: no process using the
// cluster's directory, no ctl netns, no directory.
func TestUpFailureCleansUp(t *testing.T) {
	lab.RequirePrivileged(t)
	l := lab.NewForTest(t, lab.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Up(ctx, Options{Lab: l, Manifests: t.TempDir(), Logf: t.Logf})
	if err == nil {
		c.Down()
		t.Fatal("Up without manifests succeeded")
	}
	t.Logf("Up: %v", err)
	ctl := lab.NetnsName(l.Prefix, CtlRole)
	if _, err := os.Lstat(lab.NetnsPath(ctl)); err == nil {
		t.Errorf("netns %s left behind", ctl)
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "skbtrail-cluster-"+l.Prefix+"-*"))
	if len(dirs) != 0 {
		t.Errorf("directories left behind: %v", dirs)
	}
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range cmdlines {
		data, _ := os.ReadFile(p)
		if strings.Contains(string(data), "skbtrail-cluster-"+l.Prefix+"-") {
			t.Errorf("process left behind: %s: %q", p, data)
		}
	}
}
