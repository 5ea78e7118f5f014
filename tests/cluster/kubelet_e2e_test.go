package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/skbtrail/skbtrail/tests/containerd"
	"github.com/skbtrail/skbtrail/tests/lab"
)

// kubeletTestVersion is the version the image's skbtrail reports.
const kubeletTestVersion = "e2e-kubelet"

// staticBinaries builds skbtrail (statically: it goes into an image) and
// kubectl-skbtrail with CGO_ENABLED=0.
func staticBinaries(t *testing.T) (skbtrail, plugin string) {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	skbtrail, plugin = filepath.Join(dir, "skbtrail"), filepath.Join(dir, "kubectl-skbtrail")
	for _, b := range []struct{ out, pkg, ldflags string }{
		{skbtrail, "./cmd/skbtrail", "-X main.version=" + kubeletTestVersion},
		{plugin, "./cmd/kubectl-skbtrail", ""},
	} {
		cmd := exec.Command("go", "build", "-ldflags", b.ldflags, "-o", b.out, b.pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", b.pkg, err, out)
		}
	}
	return skbtrail, plugin
}

// TestKubeletDaemonSet deploys skbtrail the way the README says, on a real
// kubelet: deploy/kubernetes/daemonset.yaml (and rbac.yaml, which Up
// applies) go to the real API server; the daemon pod, made from the
// DaemonSet's template as the DaemonSet controller would (none runs here),
// runs on a real kubelet v1.37 with a private containerd, from an image
// built here with a static skbtrail and imported under the manifest's image
// name. The daemon finds the API server through its pod's in-cluster
// configuration (service account token and KUBERNETES_SERVICE_HOST/PORT
// injected by the kubelet; the node DNATs the `kubernetes` Service as
// kube-proxy would); its log is read through the API server and the
// kubelet (pods/log), and `kubectl skbtrail nodes` reaches it through the
// pod proxy as user tracer.
//
// The one change to the manifest: imagePullPolicy Never, patched into the
// applied DaemonSet. The manifest's `image: ...:latest` defaults to Always,
// and the image exists only in the node's containerd (pulling would leave
// the lab).
func TestKubeletDaemonSet(t *testing.T) {
	lab.RequirePrivileged(t)
	if _, err := LocateKubelet(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	skb, plugin := staticBinaries(t)
	t.Logf("built static skbtrail and kubectl-skbtrail in %s", time.Since(start).Round(time.Millisecond))
	c := NewForTest(t, Options{Plugin: plugin, RealKubelet: true})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// The DaemonSet as the manifest has it, and its image.
	ds, err := c.ApplyDaemonSet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ctrs := ds.Spec.Template.Spec.Containers
	if len(ctrs) != 1 || ctrs[0].Image != DaemonImage {
		t.Fatalf("daemonset.yaml: containers %+v, want one with image %s", ctrs, DaemonImage)
	}
	img, err := containerd.BinaryImage(skb, "skbtrail", ctrs[0].Image)
	if err != nil {
		t.Fatal(err)
	}
	imgTar := filepath.Join(t.TempDir(), "skbtrail-oci.tar")
	if err := containerd.WriteArchive(imgTar, img); err != nil {
		t.Fatal(err)
	}

	k, err := c.StartKubelet(ctx, KubeletOptions{Node: DefaultKubeletNode, Images: []string{imgTar}})
	if err != nil {
		t.Fatalf("start kubelet node: %v", err)
	}
	t.Cleanup(func() {
		if err := k.Stop(); err != nil {
			t.Errorf("stop kubelet node: %v", err)
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kubelet log tail:\n%s", tail(k.KubeletLog(), 40))
			t.Logf("containerd log tail:\n%s", tail(k.ContainerdLog(), 20))
		}
	})

	// imagePullPolicy: the only change to the manifest (see above).
	patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"containers":[{"name":%q,"imagePullPolicy":"Never"}]}}}}`, ctrs[0].Name)
	ds, err = c.Admin().AppsV1().DaemonSets(ds.Namespace).Patch(ctx, ds.Name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
	if err != nil {
		t.Fatalf("patch daemonset: %v", err)
	}
	t.Logf("patched daemonset %s/%s: %s", ds.Namespace, ds.Name, patch)

	pod, err := c.Admin().CoreV1().Pods(ds.Namespace).Create(ctx, DaemonSetPod(ds, k.Node), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create daemon pod: %v", err)
	}
	t.Cleanup(func() { deletePod(t, c, k, pod) })
	podStart := time.Now()
	pod = waitPodReady(ctx, t, c, pod)
	t.Logf("pod %s/%s Running and Ready on %s after %s (podIP %s)", pod.Namespace, pod.Name, pod.Spec.NodeName,
		time.Since(podStart).Round(time.Millisecond), pod.Status.PodIP)
	checkDaemonSetPod(t, ds, pod, k)

	// The daemon's log, through the API server and the kubelet.
	line := waitPodLog(ctx, t, c, pod, "cluster trace endpoint ready")
	var ready struct {
		Node      string `json:"node"`
		APIServer string `json:"api_server"`
		Listen    string `json:"listen"`
	}
	if err := json.Unmarshal([]byte(line), &ready); err != nil {
		t.Fatalf("log line %q: %v", line, err)
	}
	// in-cluster configuration: the kubernetes Service's address, from
	// the environment the kubelet injected
	if ready.Node != k.Node || ready.APIServer != "https://"+KubernetesServiceIP+":443" || ready.Listen != ":9776" {
		t.Errorf("ready line %q: want node %s, api_server https://%s:443 (in-cluster), listen :9776", line, k.Node, KubernetesServiceIP)
	}

	clusterNodesKubelet(ctx, t, c, k, pod)
	t.Logf("TestKubeletDaemonSet: %s in all", time.Since(start).Round(time.Millisecond))
}

// checkDaemonSetPod checks what the kubelet made of the pod: hostNetwork
// on the node's address, the downward API's NODE_NAME, the service
// account, the image.
func checkDaemonSetPod(t *testing.T, ds *appsv1.DaemonSet, pod *corev1.Pod, k *Kubelet) {
	t.Helper()
	if pod.Status.PodIP != k.IP || pod.Status.HostIP != k.IP {
		t.Errorf("podIP %s hostIP %s, want both %s (hostNetwork)", pod.Status.PodIP, pod.Status.HostIP, k.IP)
	}
	if pod.Spec.ServiceAccountName != ds.Spec.Template.Spec.ServiceAccountName {
		t.Errorf("service account %q, want the template's %q", pod.Spec.ServiceAccountName, ds.Spec.Template.Spec.ServiceAccountName)
	}
	if len(pod.Status.ContainerStatuses) != 1 || pod.Status.ContainerStatuses[0].Image != DaemonImage ||
		!strings.HasPrefix(pod.Status.ContainerStatuses[0].ContainerID, "containerd://") {
		t.Errorf("container statuses %+v, want one running %s in containerd", pod.Status.ContainerStatuses, DaemonImage)
	}
	found := false
	for _, e := range pod.Spec.Containers[0].Env {
		if e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName" {
			found = true
		}
	}
	if !found {
		t.Errorf("env %+v has no NODE_NAME from spec.nodeName", pod.Spec.Containers[0].Env)
	}
}

// clusterNodesKubelet runs `kubectl skbtrail nodes` as tracer, JSON and
// table: the kubelet node's daemon answers; the lab's two nodes (described
// by the harness, no daemon started on them here) have none, which makes
// the table's exit status 1 (the JSON form leaves judging to its reader).
func clusterNodesKubelet(ctx context.Context, t *testing.T, c *Cluster, k *Kubelet, pod *corev1.Pod) {
	t.Helper()
	out, errOut, code, err := c.RunPlugin(ctx, UserTracer, "nodes", "--json")
	if err != nil {
		t.Fatalf("kubectl skbtrail nodes: %v\n%s", err, errOut)
	}
	t.Logf("kubectl skbtrail nodes --json: exit %d\n%s%s", code, out, errOut)
	var list []struct {
		Node   string `json:"node"`
		Daemon string `json:"daemon"`
		Why    string `json:"why"`
		Info   *struct {
			Node     string   `json:"node"`
			Version  string   `json:"version"`
			Kernel   string   `json:"kernel"`
			Backends []string `json:"backends"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	seen := map[string]bool{}
	for _, n := range list {
		seen[n.Node] = true
		switch n.Node {
		case k.Node:
			if n.Daemon != pod.Namespace+"/"+pod.Name || n.Info == nil || n.Info.Node != k.Node ||
				n.Info.Version != kubeletTestVersion || len(n.Info.Backends) == 0 {
				t.Errorf("%s: %+v (info %+v), want daemon %s/%s answering as %s, version %s, with backends",
					n.Node, n, n.Info, pod.Namespace, pod.Name, k.Node, kubeletTestVersion)
			}
		case "node-a", "node-b":
			if n.Info != nil || !strings.Contains(n.Why, "no skbtrail daemon pod") {
				t.Errorf("%s: %+v, want no daemon", n.Node, n)
			}
		default:
			t.Errorf("unexpected node %+v", n)
		}
	}
	if !seen[k.Node] || len(list) != 3 {
		t.Errorf("nodes %v, want %s, node-a and node-b", seen, k.Node)
	}
	if code != 0 {
		t.Errorf("nodes --json: exit %d, want 0", code)
	}

	out, errOut, code, err = c.RunPlugin(ctx, UserTracer, "nodes")
	if err != nil {
		t.Fatalf("kubectl skbtrail nodes: %v\n%s", err, errOut)
	}
	t.Logf("kubectl skbtrail nodes: exit %d\n%s%s", code, out, errOut)
	row := ""
	for line := range strings.SplitSeq(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == k.Node {
			row = line
		}
	}
	f := strings.Fields(row)
	if len(f) < 6 || f[1] != pod.Namespace+"/"+pod.Name || f[2] != "yes" || f[3] != kubeletTestVersion || !strings.Contains(f[5], "tp_btf") {
		t.Errorf("nodes: row %q, want %s %s/%s yes %s <kernel> <backends with tp_btf>", row, k.Node, pod.Namespace, pod.Name, kubeletTestVersion)
	}
	if code != 1 {
		t.Errorf("nodes: exit %d, want 1 (node-a and node-b have no daemon)", code)
	}
}

// waitPodReady waits until pod runs and is Ready, failing with its status
// and events otherwise.
func waitPodReady(ctx context.Context, t *testing.T, c *Cluster, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for {
		got, err := c.Admin().CoreV1().Pods(pod.Namespace).Get(wctx, pod.Name, metav1.GetOptions{})
		if err == nil {
			pod = got
			if pod.Status.Phase == corev1.PodRunning && podReady(pod) {
				return pod
			}
			if pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
				break
			}
		}
		select {
		case <-wctx.Done():
		case <-time.After(200 * time.Millisecond):
			continue
		}
		break
	}
	st, _ := json.MarshalIndent(pod.Status, "", "  ")
	t.Fatalf("pod %s/%s not Running and Ready: phase %s\nstatus %s\nevents:\n%s", pod.Namespace, pod.Name, pod.Status.Phase, st, podEvents(c, pod))
	return nil
}

func podReady(pod *corev1.Pod) bool {
	for _, cond := range pod.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podEvents(c *Cluster, pod *corev1.Pod) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	evs, err := c.Admin().CoreV1().Events(pod.Namespace).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod.Name})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, e := range evs.Items {
		fmt.Fprintf(&b, "  %s %s %s: %s\n", e.Type, e.Reason, e.Source.Component, e.Message)
	}
	return b.String()
}

// waitPodLog reads the pod's log through the API server (pods/log, which
// the API server gets from the kubelet) until a line contains want, and
// returns that line.
func waitPodLog(ctx context.Context, t *testing.T, c *Cluster, pod *corev1.Pod, want string) string {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var logs []byte
	var err error
	for {
		logs, err = c.Admin().CoreV1().Pods(pod.Namespace).GetLogs(pod.Name, &corev1.PodLogOptions{Container: pod.Spec.Containers[0].Name}).DoRaw(wctx)
		if err == nil {
			for line := range bytes.SplitSeq(logs, []byte("\n")) {
				if bytes.Contains(line, []byte(want)) {
					return string(line)
				}
			}
		}
		select {
		case <-wctx.Done():
			t.Fatalf("pods/log of %s/%s: no %q (last error %v); log:\n%s", pod.Namespace, pod.Name, want, err, tail(string(logs), 30))
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// deletePod deletes pod (default grace period) and waits until the
// kubelet has stopped it and removed the object. Without a kubelet running
// any more (Kubelet.Stop removed its containers), it removes the object at
// once (grace period 0).
func deletePod(t *testing.T, c *Cluster, k *Kubelet, pod *corev1.Pod) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pods := c.Admin().CoreV1().Pods(pod.Namespace)
	if err := pods.Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
		if !apierrors.IsNotFound(err) {
			t.Errorf("delete pod %s/%s: %v", pod.Namespace, pod.Name, err)
		}
		return
	}
	start := time.Now()
	for {
		if _, err := pods.Get(ctx, pod.Name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			t.Logf("pod %s/%s deleted by the kubelet after %s", pod.Namespace, pod.Name, time.Since(start).Round(time.Millisecond))
			return
		}
		if !k.Running() {
			zero := int64(0)
			if err := pods.Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("delete pod %s/%s with the kubelet stopped: %v", pod.Namespace, pod.Name, err)
			}
			return
		}
		select {
		case <-ctx.Done():
			t.Errorf("pod %s/%s still there 60 s after its deletion", pod.Namespace, pod.Name)
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
