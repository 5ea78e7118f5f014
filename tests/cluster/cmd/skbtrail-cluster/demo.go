package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skbtrail/skbtrail/tests/cluster"
	"github.com/skbtrail/skbtrail/tests/lab"
)

const defaultFault = "forward-drop"

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	fs := newFlagSet("demo", stderr)
	skb := fs.String("skbtrail", "", "path of the skbtrail binary (required)")
	plugin := fs.String("plugin", "", "path of the kubectl-skbtrail binary (required)")
	fault := fs.String("fault", defaultFault, "fault to apply before tracing (see 'skbtrail-lab faults'; none: the healthy lab)")
	jsonOut := fs.Bool("json", false, "pass --json to the plugin")
	manifests := fs.String("manifests", "", "directory with daemonset.yaml and rbac.yaml (default: deploy/kubernetes of the repository)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *fault == "" {
		*fault = "none"
	}
	if !slices.Contains(lab.FaultNames(), *fault) {
		return fmt.Errorf("demo: unknown fault %q (known: %s)", *fault, strings.Join(lab.FaultNames(), ", "))
	}
	cfg := envConfig{manifests: *manifests, logf: logTo(stderr)}
	if cfg.skbtrail, err = absBinary("skbtrail", *skb); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if cfg.plugin, err = absBinary("plugin", *plugin); err != nil {
		return fmt.Errorf("demo: %w", err)
	}

	e, err := upEnv(ctx, cfg)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer func() {
		if derr := e.down(); derr != nil {
			fmt.Fprintf(stderr, "skbtrail-cluster: teardown: %v\n", derr)
			if err == nil {
				err = fmt.Errorf("demo: teardown: %w", derr)
			}
		}
	}()
	if err := e.lab.ApplyFaultContext(ctx, *fault); err != nil {
		return fmt.Errorf("demo: %w", err)
	}

	targs := demoTraceArgs(e.lab, *fault)
	if *jsonOut {
		targs = append(targs, "--json")
	}
	// The description goes to stderr so that --json output on stdout stays parseable.
	if err := describe(ctx, stderr, e, *fault, targs); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	cmd := e.pluginCmd(ctx, targs...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	code, err := exitStatus(cmd.Run())
	if err != nil {
		return fmt.Errorf("demo: run %s: %w", cfg.plugin, err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if code != 0 {
		return exitCodeError{code: code}
	}
	return nil
}

// demoTraceArgs is the plugin command line for fault: the web Service, or
// for a fault that shows on the DNS service (silent-dns) the DNS ClusterIP
// over UDP (its Service lives in kube-system, the client pod in default).
func demoTraceArgs(l *lab.Lab, fault string) []string {
	args := []string{"trace", cluster.ClientPod, "-n", metav1.NamespaceDefault}
	if s := l.ProbeService(fault); s.Protocol == "udp" {
		return append(args, "--to", s.Addr(), "--proto", "udp", "--probe")
	}
	return append(args, "--to", "svc/"+cluster.WebService+":80", "--probe")
}

// describe prints what runs, as the API server describes it.
func describe(ctx context.Context, w io.Writer, e *env, fault string, targs []string) error {
	cs := e.c.Admin()
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	daemons, err := cs.CoreV1().Pods(cluster.SkbtrailNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=skbtrail"})
	if err != nil {
		return fmt.Errorf("list daemon pods: %w", err)
	}
	pods, err := cs.CoreV1().Pods(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	l := e.lab
	fmt.Fprintf(w, "\ncluster: kube-apiserver %s + etcd 127.0.0.1:2379 in netns %s (real processes; RBAC, token auth; no scheduler, controller-manager or kubelet: the lab's objects are written by the harness)\n",
		"https://"+e.c.APIServerAddr(), e.c.CtlNetns())
	for _, n := range nodes.Items {
		netns := l.NodeA + " + " + l.PodA
		if n.Name == lab.RoleNodeB {
			netns = l.NodeB + " + " + l.PodB
		}
		fmt.Fprintf(w, "  node %-7s %-15s pod CIDR %-14s lab netns %s\n", n.Name, internalIP(&n), n.Spec.PodCIDR, netns)
	}
	for _, p := range daemons.Items {
		fmt.Fprintf(w, "  daemon %s/%s on %s: skbtrail daemon --node-name %s, cluster endpoint https://%s:%d (reached through the API server's pod proxy)\n",
			p.Namespace, p.Name, p.Spec.NodeName, p.Spec.NodeName, p.Status.PodIP, cluster.DaemonTracePort)
	}
	for _, p := range pods.Items {
		fmt.Fprintf(w, "  pod %s/%s on %s (%s)\n", p.Namespace, p.Name, p.Spec.NodeName, p.Status.PodIP)
	}
	fmt.Fprintf(w, "  service %s/%s %s -> %s (kube-proxy-style DNAT on %s)\n", metav1.NamespaceDefault, cluster.WebService, l.WebService.Addr(), l.WebService.Endpoint, lab.RoleNodeA)
	desc := "the healthy lab"
	for _, f := range lab.Faults() {
		if f.Name == fault && fault != "none" {
			desc = f.Description
		}
	}
	fmt.Fprintf(w, "fault: %s (%s)\n", fault, desc)
	fmt.Fprintf(w, "\n$ kubectl skbtrail %s    # as user %q (ClusterRole skbtrail-tracer), from netns %s\n\n",
		strings.Join(targs, " "), cluster.UserTracer, e.c.CtlNetns())
	return nil
}

func internalIP(n *corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return "-"
}
