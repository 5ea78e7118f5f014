package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skbtrail/skbtrail/tests/cluster"
	"github.com/skbtrail/skbtrail/tests/lab"
)

// Extra nodes (bench only). The lab has two real nodes; a cluster trace with
// more nodes on the path needs more nodes whose daemons are asked. Extra
// node i (0-based) is:
//   - a network namespace <lab prefix>-x<i+1> of its own, empty but for a
//     veth "eth0" 203.0.113.(130+4i)/30 to the lab's router (device x<i+1>,
//     203.0.113.(129+4i)/30), so the API server's pod proxy reaches its
//     daemon and the daemon reaches the API server;
//   - a Node object node-x<i+1> (Ready, InternalIP = that address, pod CIDR
//     10.244.(2+i).0/24);
//   - a real `skbtrail daemon --node-netns <that namespace>` and its Pod
//     object skbtrail/skbtrail-node-x<i+1>;
//   - a Pod object default/web-node-x<i+1> (10.244.(2+i).2, no such address
//     anywhere) and an EndpointSlice that makes it an endpoint of Service
//     default/web, so the plugin asks that node's daemon too.
//
// The lab's kube-proxy-style DNAT on node-a still sends the probe to
// 10.244.1.2 on node-b: the extra daemons watch a namespace no packet of the
// trace enters and answer "nothing seen" when their trace times out.
const (
	extraNet   = "203.0.113.128/26" // TEST-NET-3; the ctl link is 203.0.113.0/28
	maxExtra   = 16                 // /30 per extra node in extraNet
	extraFirst = 2                  // 10.244.2.0/24 is the first extra pod CIDR
	benchOwner = "skbtrail-cluster-bench"
)

// extraNode is one extra node and what was created for it.
type extraNode struct {
	index    int
	name     string // Kubernetes node name
	netns    string
	routerIf string // its veth peer's name in the router netns
	ip       netip.Addr
	routerIP netip.Addr
	podCIDR  string
	podIP    string // the fake web endpoint

	nsDev, nsIno uint64 // identity of the netns we created (0: none)
	daemon       *exec.Cmd
	done         chan struct{}
	logPath      string
}

func newExtraNode(prefix string, i int) (*extraNode, error) {
	if i < 0 || i >= maxExtra {
		return nil, fmt.Errorf("at most %d extra nodes (%d nodes in all)", maxExtra, maxExtra+len(labNodes))
	}
	base := netip.MustParsePrefix(extraNet).Addr().As4()
	base[3] += byte(4 * i)
	router := netip.AddrFrom4(base).Next()
	return &extraNode{
		index: i, name: fmt.Sprintf("node-x%d", i+1),
		netns: lab.NetnsName(prefix, fmt.Sprintf("x%d", i+1)), routerIf: fmt.Sprintf("x%d", i+1),
		ip: router.Next(), routerIP: router,
		podCIDR: fmt.Sprintf("10.244.%d.0/24", extraFirst+i),
		podIP:   fmt.Sprintf("10.244.%d.2", extraFirst+i),
	}, nil
}

// addExtra creates the next extra node (see extraNet); on error what it
// created is removed again.
func (e *env) addExtra(ctx context.Context) (*extraNode, error) {
	x, err := newExtraNode(e.lab.Prefix, len(e.extras))
	if err != nil {
		return nil, err
	}
	if err := x.create(ctx, e); err != nil {
		return nil, errors.Join(err, x.remove())
	}
	e.extras = append(e.extras, x)
	return x, nil
}

func (x *extraNode) create(ctx context.Context, e *env) error {
	if err := x.createNetns(ctx, e.lab.Router); err != nil {
		return err
	}
	cs := e.c.Admin()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        x.name,
			Labels:      map[string]string{"kubernetes.io/hostname": x.name, "kubernetes.io/os": "linux", benchOwner: "extra-node"},
			Annotations: map[string]string{"flannel.alpha.coreos.com/public-ip": x.ip.String()},
		},
		Spec: corev1.NodeSpec{PodCIDR: x.podCIDR, PodCIDRs: []string{x.podCIDR}},
	}
	created, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create node %s: %w", x.name, err)
	}
	now := metav1.Now()
	created.Status = corev1.NodeStatus{
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: x.ip.String()}, {Type: corev1.NodeHostName, Address: x.name}},
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "bench node: empty netns " + x.netns, LastHeartbeatTime: now, LastTransitionTime: now}},
	}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("node %s status: %w", x.name, err)
	}
	if err := x.startDaemon(ctx, e); err != nil {
		return err
	}
	daemonPod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: cluster.DaemonPodName(x.name), Namespace: cluster.SkbtrailNamespace,
			Labels: map[string]string{"app.kubernetes.io/name": "skbtrail"}},
		Spec: corev1.PodSpec{NodeName: x.name, HostNetwork: true, ServiceAccountName: cluster.DaemonServiceAccount,
			Containers: []corev1.Container{{Name: "skbtrail", Image: cluster.DaemonImage,
				Ports: []corev1.ContainerPort{{Name: "trace", ContainerPort: cluster.DaemonTracePort, Protocol: corev1.ProtocolTCP}}}}},
	}
	if _, err := createRunningPod(ctx, e, daemonPod, x.ip.String(), x.ip.String()); err != nil {
		return err
	}
	web := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: cluster.WebPod + "-" + x.name, Namespace: metav1.NamespaceDefault,
			Labels: map[string]string{benchOwner: "fake-endpoint"}}, // not app=web: no controller runs anyway
		Spec: corev1.PodSpec{NodeName: x.name, Containers: []corev1.Container{{Name: "web", Image: "docker.io/library/nginx:1.27",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP}}}}},
	}
	web, err = createRunningPod(ctx, e, web, x.podIP, x.ip.String())
	if err != nil {
		return err
	}
	ready, serving, terminating := true, true, false
	portName, proto, port := "http", corev1.ProtocolTCP, int32(80)
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: cluster.WebService + "-" + x.name, Namespace: metav1.NamespaceDefault,
			Labels: map[string]string{discoveryv1.LabelServiceName: cluster.WebService, discoveryv1.LabelManagedBy: benchOwner}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{x.podIP},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating},
			NodeName:   &x.name,
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: web.Namespace, Name: web.Name, UID: web.UID},
		}},
		Ports: []discoveryv1.EndpointPort{{Name: &portName, Protocol: &proto, Port: &port}},
	}
	if _, err := cs.DiscoveryV1().EndpointSlices(slice.Namespace).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create endpointslice %s: %w", slice.Name, err)
	}
	return nil
}

// createRunningPod creates pod and reports it Running and Ready on podIP,
// as a kubelet would.
func createRunningPod(ctx context.Context, e *env, pod *corev1.Pod, podIP, hostIP string) (*corev1.Pod, error) {
	pods := e.c.Admin().CoreV1().Pods(pod.Namespace)
	created, err := pods.Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	now := metav1.Now()
	started := true
	st := corev1.PodStatus{Phase: corev1.PodRunning, HostIP: hostIP, HostIPs: []corev1.HostIP{{IP: hostIP}},
		PodIP: podIP, PodIPs: []corev1.PodIP{{IP: podIP}}, StartTime: &now}
	for _, t := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now})
	}
	for _, c := range created.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{Name: c.Name, Image: c.Image, ImageID: c.Image,
			Ready: true, Started: &started, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}})
	}
	created.Status = st
	updated, err := pods.UpdateStatus(ctx, created, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s status: %w", pod.Namespace, pod.Name, err)
	}
	return updated, nil
}

func ipCmd(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.WaitDelay = 5 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func netnsIdentity(name string) (dev, ino uint64, err error) {
	var st syscall.Stat_t
	if err := syscall.Stat(lab.NetnsPath(name), &st); err != nil {
		return 0, 0, err
	}
	return st.Dev, st.Ino, nil
}

// createNetns creates the extra node's namespace and links it to router.
func (x *extraNode) createNetns(ctx context.Context, router string) error {
	if _, err := os.Lstat(lab.NetnsPath(x.netns)); err == nil {
		return fmt.Errorf("network namespace %s already exists", x.netns)
	}
	if err := ipCmd(ctx, "netns", "add", x.netns); err != nil {
		return err
	}
	var err error
	if x.nsDev, x.nsIno, err = netnsIdentity(x.netns); err != nil {
		return fmt.Errorf("netns %s: %w", x.netns, err)
	}
	if _, err := os.Stat("/proc/sys/net/ipv6"); err == nil {
		if err := ipCmd(ctx, "netns", "exec", x.netns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"); err != nil {
			return err
		}
	}
	steps := [][]string{
		{"-n", x.netns, "link", "set", "lo", "up"},
		{"-n", x.netns, "link", "add", "eth0", "type", "veth", "peer", "name", x.routerIf, "netns", router},
		{"-n", x.netns, "addr", "add", x.ip.String() + "/30", "dev", "eth0"},
		{"-n", x.netns, "link", "set", "eth0", "up"},
		{"-n", router, "addr", "add", x.routerIP.String() + "/30", "dev", x.routerIf},
		{"-n", router, "link", "set", x.routerIf, "up"},
		{"-n", x.netns, "route", "add", "default", "via", x.routerIP.String(), "dev", "eth0"},
	}
	for _, s := range steps {
		if err := ipCmd(ctx, s...); err != nil {
			return err
		}
	}
	return nil
}

// startDaemon starts the extra node's daemon like cluster.StartDaemon does
// for a lab node, observing only the extra node's own namespace, and waits
// until it is ready.
func (x *extraNode) startDaemon(ctx context.Context, e *env) error {
	dir := e.c.Dir()
	x.logPath = filepath.Join(dir, "daemon-"+x.name+".log")
	logf, err := os.OpenFile(x.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	outf, err := os.OpenFile(filepath.Join(dir, "daemon-"+x.name+".out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer outf.Close()
	cmd := exec.Command("ip", "netns", "exec", x.netns, e.cfg.skbtrail, "daemon",
		"--listen", "unix://"+filepath.Join(dir, x.name+".sock"),
		"--metrics", "",
		"--node-name", x.name,
		"--node-netns", x.netns,
		"--kubeconfig", e.c.Kubeconfig(cluster.UserDaemon),
		"--cluster-listen", fmt.Sprintf("0.0.0.0:%d", cluster.DaemonTracePort))
	cmd.Stdout, cmd.Stderr = outf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start daemon for %s: %w", x.name, err)
	}
	x.daemon, x.done = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(x.done)
	}()
	deadline := time.After(cluster.DaemonReadyTimeout)
	for {
		if data, _ := os.ReadFile(x.logPath); bytes.Contains(data, []byte(cluster.DaemonReadyLine)) {
			return nil
		}
		select {
		case <-x.done:
			return fmt.Errorf("daemon for %s (pid %d) exited before it was ready: %s", x.name, cmd.Process.Pid, tail(x.logPath, 15))
		case <-deadline:
			return fmt.Errorf("daemon for %s (pid %d) not ready after %s: %s", x.name, cmd.Process.Pid, cluster.DaemonReadyTimeout, tail(x.logPath, 15))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func tail(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// remove stops the daemon (SIGTERM by PID, SIGKILL after 5 s) and deletes
// the namespace if it is still the one created here (its router-side veth
// goes with it). The API objects go with the control plane.
func (x *extraNode) remove() error {
	var errs []error
	if x.daemon != nil {
		select {
		case <-x.done:
		default:
			_ = x.daemon.Process.Signal(syscall.SIGTERM)
			select {
			case <-x.done:
			case <-time.After(5 * time.Second):
				_ = x.daemon.Process.Kill()
				select {
				case <-x.done:
				case <-time.After(10 * time.Second):
					errs = append(errs, fmt.Errorf("daemon for %s (pid %d) did not exit after SIGKILL", x.name, x.daemon.Process.Pid))
				}
			}
		}
		x.daemon = nil
	}
	if x.nsIno != 0 {
		if dev, ino, err := netnsIdentity(x.netns); err == nil && dev == x.nsDev && ino == x.nsIno {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			errs = append(errs, ipCmd(ctx, "netns", "del", x.netns))
			cancel()
		}
		x.nsIno = 0
	}
	return errors.Join(errs...)
}
