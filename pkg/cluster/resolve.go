// Package cluster is the workstation side of cluster mode (kubectl
// skbtrail): it resolves a pod and a target through the Kubernetes API,
// asks the skbtrail daemon of every node on the path (through the API
// server's pod proxy) to trace the flow, and stitches the nodes' parts into
// one journey with findings that need the whole cluster's view.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/skbtrail/skbtrail/pkg/wire"
)

// Target is what the traced packets go to: svc/NAME:PORT, pod/NAME:PORT or IP:PORT.
type Target struct {
	Kind      string // "svc", "pod" or "ip"
	Name      string // Service or pod name, or the address
	Port      string // a number, or a Service port's name
	Namespace string // svc/NAME.NAMESPACE, pod/NAME.NAMESPACE; "": the source pod's
}

// ParseTarget parses a --to value.
func ParseTarget(s string) (Target, error) {
	bad := fmt.Errorf("--to %q: want svc/NAME:PORT, pod/NAME:PORT or IP:PORT", s)
	kind, rest := "ip", s
	if k, r, ok := strings.Cut(s, "/"); ok {
		switch k {
		case "svc", "service":
			kind, rest = "svc", r
		case "pod":
			kind, rest = "pod", r
		}
	}
	host, port, err := net.SplitHostPort(rest)
	if err != nil || host == "" || port == "" {
		return Target{}, bad
	}
	var ns string
	if kind != "ip" {
		var dotted bool
		host, ns, dotted = strings.Cut(host, ".")
		if host == "" || strings.Contains(ns, ".") || (dotted && ns == "") {
			return Target{}, fmt.Errorf("--to %q: want %s/NAME[.NAMESPACE]:PORT", s, kind)
		}
		if errs := validation.IsDNS1123Label(host); len(errs) > 0 {
			return Target{}, fmt.Errorf("--to %q: %q is not a valid %s name: %s", s, host, kind, errs[0])
		}
		if errs := validation.IsDNS1123Label(ns); ns != "" && len(errs) > 0 {
			return Target{}, fmt.Errorf("--to %q: %q is not a valid namespace: %s", s, ns, errs[0])
		}
	}
	if kind == "ip" {
		if _, err := netip.ParseAddr(host); err != nil {
			return Target{}, fmt.Errorf("--to %q: %q is not an IP address (use svc/NAME:PORT or pod/NAME:PORT for names)", s, host)
		}
	}
	if kind != "svc" {
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return Target{}, fmt.Errorf("--to %q: port must be 1-65535", s)
		}
	}
	return Target{Kind: kind, Name: host, Port: port, Namespace: ns}, nil
}

// Endpoint is where a packet should end up.
type Endpoint struct {
	IP   netip.Addr
	Port uint16
	Node string // "" when the address is not a pod's or node's
	Pod  string // "ns/name" when known
}

// Plan is a resolved trace: who sends, where to, which nodes are on the path.
type Plan struct {
	Pod       string // "ns/name" of the source pod
	PodIP     netip.Addr
	Node      string // the source pod's node
	Proto     string
	Dst       netip.AddrPort // what the source sends to (a ClusterIP or the endpoint)
	Service   string         // "ns/name" when the target is a Service
	Endpoints []Endpoint
	// Nodes: the source node first, then every endpoint's node, once each.
	Nodes []string
	// NodeAddrs names the node of every address the API knows for nodes
	// (InternalIP, ExternalIP, flannel's public-ip annotation).
	NodeAddrs map[netip.Addr]string
	// NodeObjects are the Node objects by name.
	NodeObjects map[string]*corev1.Node
}

// apiErr adds, to an RBAC refusal, which role grants what was refused.
func apiErr(what string, err error) error {
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("%s: %w (the ClusterRole skbtrail-tracer grants it: see deploy/kubernetes/rbac.yaml)", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Resolve resolves the source pod and the target through the API server.
func Resolve(ctx context.Context, cs kubernetes.Interface, ns, pod string, t Target, proto string) (*Plan, error) {
	p, err := cs.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		return nil, apiErr("source pod", err)
	}
	ip, err := runningPodIP(p)
	if err != nil {
		return nil, err
	}
	plan := &Plan{Pod: ns + "/" + pod, PodIP: ip, Node: p.Spec.NodeName, Proto: proto}
	if t.Namespace != "" {
		ns = t.Namespace
	}
	if err := plan.readNodes(ctx, cs); err != nil {
		return nil, err
	}
	switch t.Kind {
	case "svc":
		err = plan.resolveService(ctx, cs, ns, t)
	case "pod":
		err = plan.resolvePod(ctx, cs, ns, t)
	default:
		err = plan.resolveIP(ctx, cs, t)
	}
	if err != nil {
		return nil, err
	}
	plan.Nodes = []string{plan.Node}
	for _, e := range plan.Endpoints {
		if e.Node != "" && !slices.Contains(plan.Nodes, e.Node) {
			plan.Nodes = append(plan.Nodes, e.Node)
		}
	}
	return plan, nil
}

func runningPodIP(p *corev1.Pod) (netip.Addr, error) {
	ref := p.Namespace + "/" + p.Name
	if p.Status.Phase != corev1.PodRunning {
		return netip.Addr{}, fmt.Errorf("pod %s is not running (phase %s)", ref, orUnknown(string(p.Status.Phase)))
	}
	if p.Spec.NodeName == "" {
		return netip.Addr{}, fmt.Errorf("pod %s is not scheduled to a node", ref)
	}
	ip, err := netip.ParseAddr(p.Status.PodIP)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("pod %s has no IP address yet", ref)
	}
	return ip, nil
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// FlannelPublicIP is the annotation where flannel records a node's VTEP address.
const FlannelPublicIP = "flannel.alpha.coreos.com/public-ip"

func (p *Plan) readNodes(ctx context.Context, cs kubernetes.Interface) error {
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return apiErr("list nodes", err)
	}
	p.NodeAddrs = map[netip.Addr]string{}
	p.NodeObjects = map[string]*corev1.Node{}
	for i := range nodes.Items {
		n := &nodes.Items[i]
		p.NodeObjects[n.Name] = n
		for _, a := range NodeAddresses(n) {
			p.NodeAddrs[a] = n.Name
		}
	}
	return nil
}

// NodeAddresses lists the addresses the API knows a node by: its
// InternalIP and ExternalIP addresses and flannel's public-ip annotation.
func NodeAddresses(n *corev1.Node) []netip.Addr {
	var out []netip.Addr
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil && !slices.Contains(out, ip) {
			out = append(out, ip)
		}
	}
	if ip, err := netip.ParseAddr(n.Annotations[FlannelPublicIP]); err == nil && !slices.Contains(out, ip) {
		out = append(out, ip)
	}
	return out
}

func (p *Plan) resolveService(ctx context.Context, cs kubernetes.Interface, ns string, t Target) error {
	svc, err := cs.CoreV1().Services(ns).Get(ctx, t.Name, metav1.GetOptions{})
	if err != nil {
		return apiErr("Service", err)
	}
	p.Service = ns + "/" + t.Name
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		q := &svc.Spec.Ports[i]
		if q.Name == t.Port || strconv.Itoa(int(q.Port)) == t.Port {
			sp = q
		}
	}
	if sp == nil {
		return fmt.Errorf("service %s has no port %s", p.Service, t.Port)
	}
	if p.Proto == "" {
		p.Proto = strings.ToLower(string(sp.Protocol))
	}
	slices, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + t.Name})
	if err != nil {
		return apiErr("EndpointSlices of Service "+p.Service, err)
	}
	var notReady []string
	for _, sl := range slices.Items {
		notReady = append(notReady, p.addSliceEndpoints(sl, sp.Name)...)
	}
	if len(p.Endpoints) == 0 {
		look := fmt.Sprintf("kubectl -n %s get endpointslices -l %s=%s", ns, discoveryv1.LabelServiceName, t.Name)
		if len(notReady) > 0 {
			if len(notReady) > 5 {
				notReady = append(notReady[:5], fmt.Sprintf("and %d more", len(notReady)-5))
			}
			return fmt.Errorf("service %s has no ready endpoints: its EndpointSlices list only endpoints that are not Ready (%s): see why their readiness probes fail (kubectl describe pod; %s)",
				p.Service, strings.Join(notReady, ", "), look)
		}
		return fmt.Errorf("service %s has no endpoints: its selector matches no running pod (compare kubectl -n %s get service %s -o jsonpath='{.spec.selector}' with the pods' labels; %s)", p.Service, ns, t.Name, look)
	}
	if ip, err := netip.ParseAddr(svc.Spec.ClusterIP); err == nil {
		p.Dst = netip.AddrPortFrom(ip, uint16(sp.Port))
	} else {
		p.Dst = netip.AddrPortFrom(p.Endpoints[0].IP, p.Endpoints[0].Port) // headless: straight to a pod
	}
	return nil
}

// addSliceEndpoints adds the ready endpoints of a slice to the plan and
// returns the ones that are not ready (their pod, else their address, and
// node).
func (p *Plan) addSliceEndpoints(sl discoveryv1.EndpointSlice, portName string) (notReady []string) {
	var port uint16
	for _, sp := range sl.Ports {
		if sp.Port != nil && (sp.Name == nil && portName == "" || sp.Name != nil && *sp.Name == portName) {
			port = uint16(*sp.Port)
		}
	}
	for _, ep := range sl.Endpoints {
		if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
			name := strings.Join(ep.Addresses, "/")
			if r := ep.TargetRef; r != nil && r.Kind == "Pod" {
				name = "pod " + r.Namespace + "/" + r.Name
			}
			if ep.NodeName != nil {
				name += " on " + *ep.NodeName
			}
			notReady = append(notReady, name)
			continue
		}
		e := Endpoint{Port: port}
		if ep.NodeName != nil {
			e.Node = *ep.NodeName
		}
		if r := ep.TargetRef; r != nil && r.Kind == "Pod" {
			e.Pod = r.Namespace + "/" + r.Name
		}
		for _, a := range ep.Addresses {
			if ip, err := netip.ParseAddr(a); err == nil {
				e.IP = ip
				p.Endpoints = append(p.Endpoints, e)
			}
		}
	}
	return notReady
}

func (p *Plan) resolvePod(ctx context.Context, cs kubernetes.Interface, ns string, t Target) error {
	dst, err := cs.CoreV1().Pods(ns).Get(ctx, t.Name, metav1.GetOptions{})
	if err != nil {
		return apiErr("destination pod", err)
	}
	ip, err := runningPodIP(dst)
	if err != nil {
		return err
	}
	port, _ := strconv.ParseUint(t.Port, 10, 16)
	p.Dst = netip.AddrPortFrom(ip, uint16(port))
	p.Endpoints = []Endpoint{{IP: ip, Port: uint16(port), Node: dst.Spec.NodeName, Pod: ns + "/" + t.Name}}
	return nil
}

// resolveIP finds the owner of an address: a Service (by its ClusterIPs),
// a pod (by status.podIP), else a node.
func (p *Plan) resolveIP(ctx context.Context, cs kubernetes.Interface, t Target) error {
	ip := netip.MustParseAddr(t.Name)
	port, _ := strconv.ParseUint(t.Port, 10, 16)
	// a ClusterIP is its Service (best effort: without the right to list
	// Services the address is looked up as a pod's or a node's)
	if svcs, err := cs.CoreV1().Services("").List(ctx, metav1.ListOptions{}); err == nil {
		for _, sv := range svcs.Items {
			if sv.Spec.ClusterIP == ip.String() || slices.Contains(sv.Spec.ClusterIPs, ip.String()) {
				return p.resolveService(ctx, cs, sv.Namespace, Target{Kind: "svc", Name: sv.Name, Port: t.Port})
			}
		}
	}
	p.Dst = netip.AddrPortFrom(ip, uint16(port))
	e := Endpoint{IP: ip, Port: uint16(port)}
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "status.podIP=" + ip.String()})
	if err != nil {
		return apiErr("find the pod with IP "+ip.String(), err)
	}
	for _, q := range pods.Items {
		if q.Status.PodIP == ip.String() && q.Status.Phase == corev1.PodRunning && !q.Spec.HostNetwork {
			e.Node, e.Pod = q.Spec.NodeName, q.Namespace+"/"+q.Name
			break
		}
	}
	if e.Node == "" {
		e.Node = p.NodeAddrs[ip]
	}
	p.Endpoints = []Endpoint{e}
	return nil
}

// Daemon is the skbtrail daemon pod of one node.
type Daemon struct {
	Node      string
	Namespace string
	Pod       string
	Port      int
	Phase     string
	Ready     bool
}

// DaemonLabel selects skbtrail's daemon pods.
const DaemonLabel = "app.kubernetes.io/name=skbtrail"

// DefaultTracePort is the daemon's cluster endpoint port.
const DefaultTracePort = 9776

// FindDaemons lists the daemon pods of namespace ns by node.
func FindDaemons(ctx context.Context, cs kubernetes.Interface, ns string) (map[string]Daemon, error) {
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: DaemonLabel})
	if err != nil {
		return nil, apiErr("list skbtrail daemon pods in namespace "+ns, err)
	}
	out := map[string]Daemon{}
	for _, q := range pods.Items {
		if q.Spec.NodeName == "" || q.DeletionTimestamp != nil {
			continue
		}
		d := Daemon{Node: q.Spec.NodeName, Namespace: q.Namespace, Pod: q.Name, Port: DefaultTracePort, Phase: string(q.Status.Phase)}
		for _, c := range q.Spec.Containers {
			for _, cp := range c.Ports {
				if cp.Name == "trace" {
					d.Port = int(cp.ContainerPort)
				}
			}
		}
		for _, c := range q.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				d.Ready = true
			}
		}
		if old, ok := out[d.Node]; ok && old.Phase == string(corev1.PodRunning) {
			continue // keep a running one over a terminating or pending one
		}
		out[d.Node] = d
	}
	return out, nil
}

// errDaemon is the reason a node's daemon could not be asked.
type errDaemon struct{ why string }

func (e *errDaemon) Error() string { return e.why }

// IsUnobserved reports whether err says a node's daemon could not be asked
// (the journey goes on with NODE_UNOBSERVED) rather than a user error.
func IsUnobserved(err error) bool {
	var d *errDaemon
	return errors.As(err, &d)
}

// NodeStatus is one node's daemon as `kubectl skbtrail nodes` shows it.
type NodeStatus struct {
	Node   string     `json:"node"`
	Daemon string     `json:"daemon,omitempty"` // namespace/pod
	Info   *wire.Info `json:"info,omitempty"`   // nil: it did not answer
	Why    string     `json:"why,omitempty"`
}

// Nodes asks every node's daemon for its info.
func Nodes(ctx context.Context, cs kubernetes.Interface, c Caller, ns string) ([]NodeStatus, error) {
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, apiErr("list nodes", err)
	}
	daemons, err := FindDaemons(ctx, cs, ns)
	if err != nil {
		return nil, err
	}
	out := make([]NodeStatus, len(nodes.Items))
	var wg sync.WaitGroup
	var fatal error
	var mu sync.Mutex
	for i, n := range nodes.Items {
		out[i].Node = n.Name
		d, ok := daemons[n.Name]
		if !ok {
			out[i].Why = "no skbtrail daemon pod on this node"
			continue
		}
		out[i].Daemon = d.Namespace + "/" + d.Pod
		wg.Add(1)
		go func(s *NodeStatus) {
			defer wg.Done()
			info, err := c.Info(ctx, d)
			switch {
			case err == nil:
				s.Info = &info
			case IsUnobserved(err):
				s.Why = err.Error()
			default:
				mu.Lock()
				fatal = err
				mu.Unlock()
			}
		}(&out[i])
	}
	wg.Wait()
	return out, fatal
}
