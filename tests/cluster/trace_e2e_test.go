package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/tests/lab"
)

var (
	binOnce                sync.Once
	binErr                 error
	binSkbtrail, binPlugin string
)

// binaries builds skbtrail and kubectl-skbtrail once per test binary.
func binaries(t *testing.T) (string, string) {
	t.Helper()
	binOnce.Do(func() {
		root, err := repoRoot()
		if err != nil {
			binErr = err
			return
		}
		dir, err := os.MkdirTemp("", "skbtrail-cluster-bin-")
		if err != nil {
			binErr = err
			return
		}
		binSkbtrail, binPlugin = filepath.Join(dir, "skbtrail"), filepath.Join(dir, "kubectl-skbtrail")
		for out, pkg := range map[string]string{binSkbtrail: "./cmd/skbtrail", binPlugin: "./cmd/kubectl-skbtrail"} {
			cmd := exec.Command("go", "build", "-o", out, pkg)
			cmd.Dir = root
			if b, err := cmd.CombinedOutput(); err != nil {
				binErr = fmt.Errorf("build %s: %v\n%s", pkg, err, b)
				return
			}
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binSkbtrail, binPlugin
}

var journeySchema = sync.OnceValues(func() (*jsonschema.Schema, error) {
	return jsonschema.NewCompiler().Compile("../e2e/journey.schema.json")
})

// pluginTrace is one run of `kubectl skbtrail trace ... --json`.
type pluginTrace struct {
	j      *journey.Journey
	exit   int
	stderr string
}

func tracePlugin(t *testing.T, c *Cluster, user string, args ...string) pluginTrace {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	start := time.Now()
	out, errOut, code, err := c.RunPlugin(ctx, user, append([]string{"trace", "--json"}, args...)...)
	if err != nil {
		t.Fatalf("kubectl skbtrail %v: %v\n%s", args, err, errOut)
	}
	t.Logf("kubectl skbtrail trace %s: exit %d in %s\nstderr:\n%s\nstdout:\n%s", strings.Join(args, " "), code, time.Since(start).Round(time.Millisecond), errOut, out)
	res := pluginTrace{exit: code, stderr: errOut}
	if strings.TrimSpace(out) == "" {
		return res
	}
	var v any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, out)
	}
	s, err := journeySchema()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(v); err != nil {
		t.Errorf("journey does not match the contract's schema: %v", err)
	}
	res.j = &journey.Journey{}
	if err := json.Unmarshal([]byte(out), res.j); err != nil {
		t.Fatal(err)
	}
	return res
}

func findingCodes(j *journey.Journey) []string {
	var out []string
	for _, f := range j.Findings {
		out = append(out, f.Code)
	}
	return out
}

func finding(j *journey.Journey, code string) (journey.Finding, bool) {
	for _, f := range j.Findings {
		if f.Code == code {
			return f, true
		}
	}
	return journey.Finding{}, false
}

// hopNodes is the sequence of nodes the hops went through ("a,b").
func hopNodes(j *journey.Journey) string {
	var seq []string
	for _, h := range j.Hops {
		if len(seq) == 0 || seq[len(seq)-1] != h.Node {
			seq = append(seq, h.Node)
		}
	}
	return strings.Join(seq, ",")
}

func observed(j *journey.Journey) map[string]bool {
	m := map[string]bool{}
	for _, n := range j.Nodes {
		m[n.Name] = n.Observed
	}
	return m
}

var toWeb = []string{"client", "-n", "default", "--to", "svc/web:80", "--probe", "--timeout", "4s"}

// TestClusterTrace runs kubectl skbtrail against a real API server and one
// real skbtrail daemon per lab node, each observing only its own node's
// namespaces, through the faults of the seed incidents in turn. Faults add
// up (the lab is not rebuilt between subtests): each subtest's assertions
// hold with the faults before it in place.
func TestClusterTrace(t *testing.T) {
	skb, plugin := binaries(t)
	c := NewForTest(t, Options{Skbtrail: skb, Plugin: plugin})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, n := range []string{"node-a", "node-b"} {
		if err := c.StartDaemon(ctx, n); err != nil {
			t.Fatalf("start daemon on %s: %v", n, err)
		}
	}
	t.Run("healthy", func(t *testing.T) { clusterHealthy(t, c) })
	t.Run("passive", func(t *testing.T) { clusterPassive(ctx, t, c) })
	t.Run("nodes", func(t *testing.T) { clusterNodes(ctx, t, c) })
	t.Run("rbac-denied", func(t *testing.T) { clusterDenied(t, c) })
	t.Run("service-not-ready", func(t *testing.T) { clusterNotReady(ctx, t, c) })
	t.Run("direct-call-refused", func(t *testing.T) { clusterDirectCall(ctx, t, c) })
	t.Run("silent-dns", func(t *testing.T) { clusterSilentDNS(t, c) })
	t.Run("forward-drop", func(t *testing.T) { clusterForwardDrop(t, c) })
	t.Run("wrong-vtep", func(t *testing.T) { clusterWrongVTEP(t, c) })
	t.Run("wrong-src", func(t *testing.T) { clusterWrongSrc(t, c) })
	t.Run("node-b-unobserved", func(t *testing.T) { clusterUnobserved(t, c) })
}

func clusterHealthy(t *testing.T, c *Cluster) {
	r := tracePlugin(t, c, UserTracer, toWeb...)
	if r.j == nil {
		t.Fatalf("no journey (exit %d)", r.exit)
	}
	if r.exit != 0 || r.j.Verdict.Kind != journey.Delivered || r.j.Verdict.Node != "node-b" {
		t.Errorf("exit %d verdict %+v, want delivered on node-b with exit 0 (findings %v)", r.exit, r.j.Verdict, findingCodes(r.j))
	}
	if got := hopNodes(r.j); got != "node-a,node-b" {
		t.Errorf("hops go through %q, want node-a then node-b", got)
	}
	if o := observed(r.j); !o["node-a"] || !o["node-b"] {
		t.Errorf("nodes %+v, want both observed", r.j.Nodes)
	}
	if len(r.j.Encaps) != 1 || r.j.Encaps[0].Node != "node-a" || r.j.Encaps[0].OuterDst != lab.NodeBIP {
		t.Errorf("encaps %+v, want node-a's VXLAN toward %s", r.j.Encaps, lab.NodeBIP)
	}
	if r.j.Packet.Dst != lab.ClusterIP || len(r.j.Rewrites) == 0 || r.j.Rewrites[0].Kind != "DNAT" || r.j.Rewrites[0].Node != "node-a" {
		t.Errorf("packet %+v rewrites %+v, want the ClusterIP DNATed on node-a", r.j.Packet, r.j.Rewrites)
	}
}

func clusterNodes(ctx context.Context, t *testing.T, c *Cluster) {
	out, errOut, code, err := c.RunPlugin(ctx, UserTracer, "nodes", "--json")
	if err != nil || code != 0 {
		t.Fatalf("kubectl skbtrail nodes: exit %d %v\n%s\n%s", code, err, out, errOut)
	}
	var list []struct {
		Node string `json:"node"`
		Info *struct {
			Node     string   `json:"node"`
			Backends []string `json:"backends"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(list) != 2 {
		t.Fatalf("nodes %+v", list)
	}
	for _, n := range list {
		if n.Info == nil || n.Info.Node != n.Node || len(n.Info.Backends) == 0 {
			t.Errorf("node %s: info %+v", n.Node, n.Info)
		}
	}
}

func clusterDenied(t *testing.T, c *Cluster) {
	r := tracePlugin(t, c, UserNobody, toWeb...)
	if r.exit != 2 || r.j != nil {
		t.Errorf("exit %d, want 2 and no journey", r.exit)
	}
	if !strings.Contains(r.stderr, `cannot get resource "pods"`) || !strings.Contains(r.stderr, "skbtrail-tracer") {
		t.Errorf("stderr %q does not name the missing permission and the role that grants it", r.stderr)
	}
}

// clusterNotReady: a Service whose EndpointSlice lists only a pod that is
// not Ready (issue 19, through the real API server): the plugin names the
// Service, the not-ready pod and the readiness fix, and traces nothing.
func clusterNotReady(ctx context.Context, t *testing.T, c *Cluster) {
	web, err := c.Admin().CoreV1().Pods(metav1.NamespaceDefault).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc := labService(metav1.NamespaceDefault, "web-unready", "10.96.0.110", "http", corev1.ProtocolTCP, 80, map[string]string{"app": "web-unready"}, nil)
	svc.Spec.ClusterIP, svc.Spec.ClusterIPs = "", nil // allocated by the API server
	if _, err := c.Admin().CoreV1().Services(svc.Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	slice := endpointSlice(svc, web, "skbtrail-tests")
	notReady := false
	slice.Endpoints[0].Conditions.Ready = &notReady
	if _, err := c.Admin().DiscoveryV1().EndpointSlices(slice.Namespace).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Admin().DiscoveryV1().EndpointSlices(slice.Namespace).Delete(context.Background(), slice.Name, metav1.DeleteOptions{})
		_ = c.Admin().CoreV1().Services(svc.Namespace).Delete(context.Background(), svc.Name, metav1.DeleteOptions{})
	})
	r := tracePlugin(t, c, UserTracer, "client", "-n", "default", "--to", "svc/web-unready:80", "--probe", "--timeout", "4s")
	if r.exit != 2 || r.j != nil {
		t.Errorf("exit %d, want 2 and no journey", r.exit)
	}
	for _, w := range []string{"default/web-unready has no ready endpoints", "pod default/web on", "not Ready", "readiness"} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr %q lacks %q", r.stderr, w)
		}
	}
}

// clusterDirectCall calls a daemon's network endpoint without the API
// server, as anyone on the node network could.
func clusterDirectCall(ctx context.Context, t *testing.T, c *Cluster) {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the caller does not care who answers
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return DialIn(ctx, c.CtlNetns(), network, addr)
		},
	}}
	for _, tc := range []struct {
		token  string
		status int
	}{{"", http.StatusUnauthorized}, {"not-a-token", http.StatusUnauthorized}, {c.Token(UserNobody), http.StatusForbidden}} {
		for _, path := range []string{"/v1/info", "/v1/trace"} {
			method := http.MethodGet
			if path == "/v1/trace" {
				method = http.MethodPost
			}
			req, _ := http.NewRequestWithContext(ctx, method, "https://"+net.JoinHostPort(lab.NodeBIP, "9776")+path, strings.NewReader(`{"timeout":1000000000}`))
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("%s %s with token %q: %d, want %d", method, path, tc.token, resp.StatusCode, tc.status)
			}
		}
	}
}

func clusterForwardDrop(t *testing.T, c *Cluster) {
	if err := c.opts.Lab.ApplyFault("forward-drop"); err != nil {
		t.Fatal(err)
	}
	r := tracePlugin(t, c, UserTracer, toWeb...)
	if r.j == nil {
		t.Fatalf("no journey (exit %d)", r.exit)
	}
	v := r.j.Verdict
	if r.exit != 1 || v.Kind != journey.Dropped || v.Node != "node-b" || v.Hook != "FORWARD" || v.Rule != "policy DROP" {
		t.Errorf("exit %d verdict %+v, want dropped on node-b in FORWARD by the policy, exit 1", r.exit, v)
	}
	if codes := findingCodes(r.j); len(codes) == 0 || codes[0] != "NF_POLICY_DROP" {
		t.Errorf("findings %v, want NF_POLICY_DROP first", codes)
	}
	if got := hopNodes(r.j); got != "node-a,node-b" {
		t.Errorf("hops go through %q, want node-a then node-b", got)
	}
	for i := 1; i < len(r.j.Hops); i++ {
		if r.j.Hops[i].TUs < r.j.Hops[i-1].TUs {
			t.Errorf("hop %d at %d µs comes before hop %d at %d µs", i, r.j.Hops[i].TUs, i-1, r.j.Hops[i-1].TUs)
		}
	}
	if _, ok := finding(r.j, "LEFT_NODE"); ok {
		t.Error("LEFT_NODE stays although node-b saw the packet")
	}
}

func clusterWrongVTEP(t *testing.T, c *Cluster) {
	if err := c.opts.Lab.ApplyFault("wrong-vtep"); err != nil {
		t.Fatal(err)
	}
	r := tracePlugin(t, c, UserTracer, toWeb...)
	if r.j == nil {
		t.Fatalf("no journey (exit %d)", r.exit)
	}
	if r.exit != 1 || r.j.Verdict.Node != "node-a" || r.j.Verdict.Kind == journey.Delivered {
		t.Errorf("exit %d verdict %+v, want it ending on node-a, exit 1", r.exit, r.j.Verdict)
	}
	f, ok := finding(r.j, "VXLAN_DST_UNKNOWN")
	if !ok || !strings.Contains(f.Message, lab.BogusVTEP) || !strings.Contains(f.Message, "node node-b, known as "+lab.NodeBIP) {
		t.Errorf("VXLAN_DST_UNKNOWN %+v, want it naming %s and node-b's address %s", f, lab.BogusVTEP, lab.NodeBIP)
	}
	if codes := findingCodes(r.j); len(codes) == 0 || codes[0] != "VXLAN_DST_UNKNOWN" {
		t.Errorf("findings %v, want VXLAN_DST_UNKNOWN first", codes)
	}
}

func clusterUnobserved(t *testing.T, c *Cluster) {
	if err := c.StopDaemon("node-b"); err != nil {
		t.Fatal(err)
	}
	r := tracePlugin(t, c, UserTracer, toWeb...)
	if r.j == nil {
		t.Fatalf("no journey (exit %d)", r.exit)
	}
	if r.exit != 1 {
		t.Errorf("exit %d, want 1", r.exit)
	}
	f, ok := finding(r.j, "NODE_UNOBSERVED")
	if !ok || f.Node != "node-b" || !strings.Contains(f.Message, "node-b") {
		t.Errorf("NODE_UNOBSERVED %+v, want it naming node-b", f)
	}
	if o := observed(r.j); !o["node-a"] || o["node-b"] {
		t.Errorf("nodes %+v, want node-a observed and node-b not", r.j.Nodes)
	}
	if got := hopNodes(r.j); got != "node-a" {
		t.Errorf("hops go through %q, want node-a's part only", got)
	}
}

// clusterSilentDNS: seed 003's DNS timeout across nodes. The query reaches
// the DNS pod on node-b, which reads it and never answers. The target is
// the ClusterIP, as a resolv.conf names it: the plugin finds its Service.
func clusterSilentDNS(t *testing.T, c *Cluster) {
	if err := c.opts.Lab.ApplyFault("silent-dns"); err != nil {
		t.Fatal(err)
	}
	r := tracePlugin(t, c, UserTracer, "client", "-n", "default", "--to", lab.DNSClusterIP+":53", "--proto", "udp", "--probe", "--timeout", "4s")
	if r.j == nil {
		t.Fatalf("no journey (exit %d)", r.exit)
	}
	v := r.j.Verdict
	if r.exit != 1 || v.Kind != journey.Delivered || v.Node != "node-b" {
		t.Errorf("exit %d verdict %+v, want delivered on node-b, exit 1", r.exit, v)
	}
	if r.j.Packet.Proto != "udp" || r.j.Packet.Dst != lab.DNSClusterIP {
		t.Errorf("packet %+v, want udp to the DNS ClusterIP", r.j.Packet)
	}
	if f, ok := finding(r.j, "NO_REPLY"); !ok || f.Node != "node-b" {
		t.Errorf("findings %v (NO_REPLY %+v), want NO_REPLY on node-b", findingCodes(r.j), f)
	}
	if got := hopNodes(r.j); got != "node-a,node-b" {
		t.Errorf("hops go through %q, want node-a then node-b", got)
	}
}

// clusterWrongSrc: seed 001, a node with two addresses puts the one the
// cluster does not know it by as the VXLAN outer source.
func clusterWrongSrc(t *testing.T, c *Cluster) {
	if err := c.opts.Lab.ApplyFault("wrong-src"); err != nil {
		t.Fatal(err)
	}
	r := tracePlugin(t, c, UserTracer, toWeb...)
	if r.j == nil {
		t.Fatalf("no journey (exit %d)", r.exit)
	}
	f, ok := finding(r.j, "VXLAN_SRC_MISMATCH")
	if r.exit != 1 || !ok || f.Node != "node-a" || !strings.Contains(f.Message, lab.WrongSrcIP) || !strings.Contains(f.Message, lab.NodeAIP) {
		t.Errorf("exit %d, VXLAN_SRC_MISMATCH %+v: want it on node-a naming %s and the known %s", r.exit, f, lab.WrongSrcIP, lab.NodeAIP)
	}
}

// clusterPassive: no --probe; the pod's own connection is traced, once the
// plugin says it is tracing (scripts wait for that line the same way).
func clusterPassive(ctx context.Context, t *testing.T, c *Cluster) {
	tctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(tctx, "ip", "netns", "exec", c.CtlNetns(), c.opts.Plugin, "--kubeconfig", c.Kubeconfig(UserTracer),
		"trace", "client", "-n", "default", "--to", "svc/web:80", "--timeout", "8s", "--json")
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var errLog strings.Builder
	sc := bufio.NewScanner(stderr)
	tracing := false
	for !tracing && sc.Scan() {
		errLog.WriteString(sc.Text() + "\n")
		tracing = strings.HasPrefix(sc.Text(), "skbtrail: tracing ")
	}
	if !tracing {
		_ = cmd.Wait()
		t.Fatalf("the plugin never said it was tracing:\n%s", errLog.String())
	}
	go func() { _, _ = io.Copy(io.Discard, stderr) }()
	l := c.opts.Lab
	if err := l.Dial(tctx, l.PodA, l.WebService.Addr(), 2*time.Second); err != nil {
		t.Fatalf("the pod's own connection failed: %v", err)
	}
	err = cmd.Wait()
	exit := 0
	if ee, ok := err.(*exec.ExitError); ok {
		exit = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var j journey.Journey
	if err := json.Unmarshal(out.Bytes(), &j); err != nil {
		t.Fatalf("exit %d, output %q: %v\n%s", exit, out.String(), err, errLog.String())
	}
	if exit != 0 || j.Verdict.Kind != journey.Delivered || j.Verdict.Node != "node-b" || hopNodes(&j) != "node-a,node-b" {
		t.Errorf("exit %d verdict %+v hops through %q: want the pod's own SYN delivered on node-b after node-a", exit, j.Verdict, hopNodes(&j))
	}
}
