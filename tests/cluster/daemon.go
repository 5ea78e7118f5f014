package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Daemon settings.
const (
	DaemonServiceAccount = "skbtrail" // skbtrail/skbtrail, from rbac.yaml
	DaemonTracePort      = 9776
	DaemonImage          = "ghcr.io/skbtrail/skbtrail:latest"
	DaemonReadyLine      = "skbtrail daemon ready"
	DaemonReadyTimeout   = 20 * time.Second
)

// writeDaemonKubeconfig gets a 1h token of ServiceAccount skbtrail/skbtrail
// (TokenRequest API) and writes the daemons' kubeconfig ("daemon").
func (c *Cluster) writeDaemonKubeconfig(ctx context.Context) error {
	exp := int64(3600)
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}
	got, err := c.admin.CoreV1().ServiceAccounts(SkbtrailNamespace).CreateToken(ctx, DaemonServiceAccount, tr, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("cluster: token for serviceaccount %s/%s: %w", SkbtrailNamespace, DaemonServiceAccount, err)
	}
	_, err = c.writeKubeconfig(UserDaemon, got.Status.Token)
	return err
}

func (c *Cluster) node(name string) (node, error) {
	for _, n := range c.nodes {
		if n.name == name {
			return n, nil
		}
	}
	return node{}, fmt.Errorf("cluster: unknown node %q (have %s, %s)", name, c.nodes[0].name, c.nodes[1].name)
}

func (c *Cluster) daemonLogPath(node string) string {
	return filepath.Join(c.dir, "daemon-"+node+".log")
}

// DaemonSocket returns the path of node's daemon API socket.
func (c *Cluster) DaemonSocket(node string) string { return filepath.Join(c.dir, node+".sock") }

// StartDaemon starts `skbtrail daemon` for node inside its lab node netns:
//
//	ip netns exec <node netns> <Skbtrail> daemon --listen unix://<dir>/<node>.sock
//	  --metrics "" --node-name <node> --node-netns <node netns>,<pod netns>
//	  --kubeconfig <daemon kubeconfig> --cluster-listen 0.0.0.0:9776 <extraArgs>
//
// waits (20 s) for "skbtrail daemon ready" in its stderr and then creates or
// updates the Pod skbtrail/skbtrail-<node> (hostNetwork, Running, Ready,
// podIP = the node's underlay address).
func (c *Cluster) StartDaemon(ctx context.Context, nodeName string, extraArgs ...string) error {
	n, err := c.node(nodeName)
	if err != nil {
		return err
	}
	if c.opts.Skbtrail == "" {
		return errors.New("cluster: StartDaemon: Options.Skbtrail (path of the skbtrail binary) is empty")
	}
	logPath := c.daemonLogPath(n.name)
	offset := fileSize(logPath)
	args := append([]string{"daemon",
		"--listen", "unix://" + c.DaemonSocket(n.name),
		"--metrics", "",
		"--node-name", n.name,
		"--node-netns", n.netns + "," + n.podNetns,
		"--kubeconfig", c.Kubeconfig(UserDaemon),
		"--cluster-listen", fmt.Sprintf("0.0.0.0:%d", DaemonTracePort),
	}, extraArgs...)
	p, err := c.registerDaemon(n.name, func() (*proc, error) {
		return startProcOut("skbtrail daemon "+n.name, n.netns, logPath, filepath.Join(c.dir, "daemon-"+n.name+".out"), c.opts.Skbtrail, args...)
	})
	if err != nil {
		return err
	}
	err = p.WaitFor(ctx, DaemonReadyTimeout, "ready ("+DaemonReadyLine+")", func(context.Context) (bool, error) {
		data, _ := os.ReadFile(logPath)
		return int64(len(data)) > offset && bytes.Contains(data[offset:], []byte(DaemonReadyLine)), nil
	})
	if err == nil {
		err = c.ensureDaemonPod(ctx, n)
	}
	if err != nil {
		return errors.Join(err, c.StopDaemon(n.name))
	}
	return nil
}

// registerDaemon starts a daemon with start and records it (so that Down
// stops it) unless one runs for node already or the cluster is down.
func (c *Cluster) registerDaemon(node string, start func() (*proc, error)) (*proc, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down {
		return nil, errors.New("cluster: StartDaemon after Down")
	}
	if old := c.daemons[node]; old != nil && !old.Exited() {
		return nil, fmt.Errorf("cluster: a daemon for %s runs already (pid %d)", node, old.PID())
	}
	p, err := start()
	if err != nil {
		return nil, err
	}
	c.daemons[node] = p
	return p, nil
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// DaemonPodName returns the name of node's daemon Pod in namespace skbtrail.
func DaemonPodName(node string) string { return "skbtrail-" + node }

// ensureDaemonPod creates (or finds) skbtrail/skbtrail-<node> and reports it
// Running and Ready on the node's underlay address.
func (c *Cluster) ensureDaemonPod(ctx context.Context, n node) error {
	pods := c.admin.CoreV1().Pods(SkbtrailNamespace)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: DaemonPodName(n.name), Namespace: SkbtrailNamespace,
			Labels: map[string]string{"app.kubernetes.io/name": "skbtrail"},
		},
		Spec: corev1.PodSpec{
			NodeName: n.name, HostNetwork: true, ServiceAccountName: DaemonServiceAccount,
			Containers: []corev1.Container{{
				Name: "skbtrail", Image: DaemonImage,
				Ports: []corev1.ContainerPort{{Name: "trace", ContainerPort: DaemonTracePort, Protocol: corev1.ProtocolTCP}},
			}},
		},
	}
	got, err := pods.Create(ctx, pod, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, err = pods.Get(ctx, pod.Name, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("cluster: daemon pod %s/%s: %w", SkbtrailNamespace, pod.Name, err)
	}
	_, err = c.setPodRunning(ctx, got, n.ip, n.ip)
	return err
}

// StopDaemon stops node's daemon (SIGTERM by PID, SIGKILL after 5 s). Its
// Pod object stays, still Running and Ready, as after a crash the kubelet
// has not noticed yet. Stopping a node without a daemon is not an error.
func (c *Cluster) StopDaemon(node string) error {
	c.mu.Lock()
	p := c.daemons[node]
	delete(c.daemons, node)
	c.mu.Unlock()
	return p.Stop(5 * time.Second)
}

// DaemonLog returns node's daemon stderr log so far (every start of it).
func (c *Cluster) DaemonLog(node string) string { return readFile(c.daemonLogPath(node)) }

// DaemonStdout returns node's daemon stdout so far.
func (c *Cluster) DaemonStdout(node string) string {
	return readFile(filepath.Join(c.dir, "daemon-"+node+".out"))
}

// RunPlugin runs `ip netns exec <ctl> <Plugin> --kubeconfig <Kubeconfig(user)>
// args...` and returns its stdout, stderr and exit code. err is set only
// when it could not be run or ctx ended, not for a non-zero exit.
func (c *Cluster) RunPlugin(ctx context.Context, user string, args ...string) (stdout, stderr string, exit int, err error) {
	if c.opts.Plugin == "" {
		return "", "", -1, errors.New("cluster: RunPlugin: Options.Plugin (path of kubectl-skbtrail) is empty")
	}
	return c.runInCtl(ctx, c.opts.Plugin, user, args...)
}

// RunKubectl is RunPlugin with the kubectl built with kube-apiserver.
func (c *Cluster) RunKubectl(ctx context.Context, user string, args ...string) (stdout, stderr string, exit int, err error) {
	return c.runInCtl(ctx, c.bins.Kubectl, user, args...)
}

func (c *Cluster) runInCtl(ctx context.Context, bin, user string, args ...string) (string, string, int, error) {
	kc := c.Kubeconfig(user)
	if kc == "" {
		return "", "", -1, fmt.Errorf("cluster: no kubeconfig for user %q", user)
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", c.ctlNetns, bin, "--kubeconfig", kc}, args...)...)
	cmd.WaitDelay = 5 * time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return out.String(), errb.String(), -1, fmt.Errorf("cluster: %s %s: %w", filepath.Base(bin), strings.Join(args, " "), ctx.Err())
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode(), nil
	case err != nil:
		return out.String(), errb.String(), -1, fmt.Errorf("cluster: run %s: %w", bin, err)
	}
	return out.String(), errb.String(), 0, nil
}
