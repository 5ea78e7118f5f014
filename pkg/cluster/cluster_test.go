package cluster

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/skbtrail/skbtrail/pkg/journey"
)

func TestParseTarget(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Target
		err  string
	}{
		{in: "svc/web:80", want: Target{"svc", "web", "80", ""}},
		{in: "service/web:http", want: Target{"svc", "web", "http", ""}},
		{in: "svc/kube-dns.kube-system:53", want: Target{"svc", "kube-dns", "53", "kube-system"}},
		{in: "pod/web-0:8080", want: Target{"pod", "web-0", "8080", ""}},
		{in: "10.244.1.2:80", want: Target{"ip", "10.244.1.2", "80", ""}},
		{in: "[fd00::2]:80", want: Target{"ip", "fd00::2", "80", ""}},
		{in: "svc/a.b.c:80", err: "want svc/NAME[.NAMESPACE]:PORT"},
		{in: "svc/web.:80", err: "want svc/NAME[.NAMESPACE]:PORT"},
		{in: "pod/A_B:80", err: "not a valid pod name"},
		{in: "svc/x/y:80", err: "not a valid svc name"},
		{in: "svc/web.Default:80", err: "not a valid namespace"},
		{in: "web:80", err: "not an IP address"},
		{in: "pod/web:0", err: "port must be"},
		{in: "pod/web:http", err: "port must be"},
		{in: "svc/web", err: "want svc/NAME:PORT"},
		{in: "", err: "want svc/NAME:PORT"},
	} {
		got, err := ParseTarget(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseTarget(%q) = %v, %v; want error with %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseTarget(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func node(name, ip, cidr, public string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{}}, Spec: corev1.NodeSpec{PodCIDR: cidr}}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: name}}
	if public != "" {
		n.Annotations[FlannelPublicIP] = public
	}
	return n
}

func pod(ns, name, nodeName, ip string, phase corev1.PodPhase) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.PodSpec{NodeName: nodeName},
		Status: corev1.PodStatus{Phase: phase, PodIP: ip}}
}

func fixture() *fake.Clientset {
	return fake.NewClientset(
		node("node-a", "192.0.2.10", "10.244.0.0/24", "192.0.2.10"),
		node("node-b", "198.51.100.20", "10.244.1.0/24", ""),
		pod("default", "client", "node-a", "10.244.0.5", corev1.PodRunning),
		pod("default", "web", "node-b", "10.244.1.2", corev1.PodRunning),
		pod("default", "pending", "", "", corev1.PodPending),
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.100",
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "empty"}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.101",
			Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}}},
		&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			Ports: []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080))}},
			Endpoints: []discoveryv1.Endpoint{
				{Addresses: []string{"10.244.1.2"}, NodeName: ptr("node-b"), Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: "web"}},
				{Addresses: []string{"10.244.1.9"}, NodeName: ptr("node-c"), Conditions: discoveryv1.EndpointConditions{Ready: ptr(false)}},
			}},
		&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "empty-1", Labels: map[string]string{discoveryv1.LabelServiceName: "empty"}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.7"}, NodeName: ptr("node-b"), Conditions: discoveryv1.EndpointConditions{Ready: ptr(false)},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: "web-old"}}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "unselected"}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.102",
			Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}}},
	)
}

func TestResolveService(t *testing.T) {
	p, err := Resolve(context.Background(), fixture(), "default", "client", Target{Kind: "svc", Name: "web", Port: "80"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if p.Node != "node-a" || p.PodIP.String() != "10.244.0.5" || p.Proto != "tcp" || p.Dst.String() != "10.96.0.100:80" {
		t.Fatalf("plan %+v", p)
	}
	if len(p.Endpoints) != 1 || p.Endpoints[0].Node != "node-b" || p.Endpoints[0].Port != 8080 || p.Endpoints[0].Pod != "default/web" {
		t.Fatalf("endpoints %+v (the not-ready one must be left out)", p.Endpoints)
	}
	if strings.Join(p.Nodes, ",") != "node-a,node-b" || p.NodeAddrs[p.Endpoints[0].IP] != "" {
		t.Fatalf("nodes %v addrs %v", p.Nodes, p.NodeAddrs)
	}
	reqs := p.Requests(Options{Timeout: 5e9, Probe: true})
	a, b := reqs["node-a"], reqs["node-b"]
	if a.FromIP != "10.244.0.5" || a.To != "10.96.0.100:80" || !a.Probe || !a.SYN || a.NodeAddrs["198.51.100.20"] != "node-b" {
		t.Errorf("source request %+v", a)
	}
	if b.Src != "10.244.0.5" || b.Dst != "10.244.1.2" || b.Dport != 8080 || b.Probe || b.FromIP != "" || b.Timeout <= a.Timeout {
		t.Errorf("destination request %+v", b)
	}
}

func TestResolveErrors(t *testing.T) {
	cs := fixture()
	for _, c := range []struct {
		pod string
		t   Target
		err string
	}{
		{"client", Target{Kind: "svc", Name: "empty", Port: "80"}, "service default/empty has no ready endpoints: its EndpointSlices list only endpoints that are not Ready (pod default/web-old on node-b)"},
		{"client", Target{Kind: "svc", Name: "unselected", Port: "80"}, "service default/unselected has no endpoints: its selector matches no running pod"},
		{"client", Target{Kind: "svc", Name: "web", Port: "443"}, "has no port 443"},
		{"client", Target{Kind: "svc", Name: "nope", Port: "80"}, "Service"},
		{"pending", Target{Kind: "svc", Name: "web", Port: "80"}, "pod default/pending is not running (phase Pending)"},
		{"ghost", Target{Kind: "svc", Name: "web", Port: "80"}, "source pod"},
		{"client", Target{Kind: "pod", Name: "pending", Port: "80"}, "not running"},
	} {
		if _, err := Resolve(context.Background(), cs, "default", c.pod, c.t, ""); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("Resolve(%s, %v) = %v, want %q", c.pod, c.t, err, c.err)
		}
	}
}

func TestResolvePodAndIP(t *testing.T) {
	cs := fixture()
	p, err := Resolve(context.Background(), cs, "default", "client", Target{Kind: "pod", Name: "web", Port: "80"}, "udp")
	if err != nil || p.Dst.String() != "10.244.1.2:80" || p.Endpoints[0].Node != "node-b" || p.Proto != "udp" {
		t.Fatalf("pod target: %+v %v", p, err)
	}
	p, err = Resolve(context.Background(), cs, "default", "client", Target{Kind: "ip", Name: "10.96.0.100", Port: "80"}, "")
	if err != nil || p.Service != "default/web" || p.Endpoints[0].Node != "node-b" || p.Dst.String() != "10.96.0.100:80" || p.Proto != "tcp" {
		t.Fatalf("ClusterIP target: %+v %v, want Service default/web", p, err)
	}
	p, err = Resolve(context.Background(), cs, "default", "client", Target{Kind: "ip", Name: "198.51.100.20", Port: "10250"}, "tcp")
	if err != nil || p.Endpoints[0].Node != "node-b" || strings.Join(p.Nodes, ",") != "node-a,node-b" {
		t.Fatalf("node address target: %+v %v", p, err)
	}
	p, err = Resolve(context.Background(), cs, "default", "client", Target{Kind: "ip", Name: "203.0.113.7", Port: "80"}, "tcp")
	if err != nil || p.Endpoints[0].Node != "" || len(p.Nodes) != 1 {
		t.Fatalf("outside target: %+v %v", p, err)
	}
}

// parts of seed 002 as two nodes' daemons report them
func twoParts() (*Part, *Part) {
	a := &journey.Journey{
		Packet:   journey.Packet{Proto: "tcp", Src: "10.244.0.5", Sport: 40000, Dst: "10.96.0.100", Dport: 80, TCPFlags: "SYN"},
		Verdict:  journey.Verdict{Kind: journey.Left, Netns: "node-a", Device: "eth0"},
		Rewrites: []journey.Rewrite{{Kind: "DNAT", Netns: "node-a", Hook: "PREROUTING", Before: journey.TupleJSON{Src: "10.244.0.5", Sport: 40000, Dst: "10.96.0.100", Dport: 80}, After: journey.TupleJSON{Src: "10.244.0.5", Sport: 40000, Dst: "10.244.1.2", Dport: 80}}},
		Encaps:   []journey.Encap{{Kind: "vxlan", Netns: "node-a", Device: "flannel.1", VNI: 1, OuterSrc: "192.0.2.10", OuterDst: "198.51.100.20", OuterDport: 8472}},
		Hops:     []journey.Hop{{TUs: 0, Netns: "pod-a", Device: "eth0", Event: "tx"}, {TUs: 90, Netns: "node-a", Device: "eth0", Event: "tx"}},
		Findings: []journey.Finding{{Code: CodeLeftNode, Severity: journey.SeverityInfo, Message: "left"}},
	}
	b := &journey.Journey{
		Packet:   journey.Packet{Proto: "tcp", Src: "10.244.0.5", Sport: 40000, Dst: "10.244.1.2", Dport: 80, TCPFlags: "SYN"},
		Verdict:  journey.Verdict{Kind: journey.Dropped, Netns: "node-b", Device: "flannel.1", Reason: "NETFILTER_DROP", Hook: "FORWARD", Table: "filter", Chain: "FORWARD", Rule: "policy DROP"},
		Encaps:   []journey.Encap{{Kind: "vxlan", Netns: "node-b", VNI: 1, OuterSrc: "192.0.2.10", OuterDst: "198.51.100.20", OuterDport: 8472}},
		Hops:     []journey.Hop{{TUs: 0, Netns: "node-b", Device: "eth0", Event: "rx"}, {TUs: 40, Netns: "node-b", Device: "flannel.1", Event: "drop"}},
		Findings: []journey.Finding{{Code: "NF_POLICY_DROP", Severity: journey.SeverityError, Message: "policy"}},
	}
	return &Part{Node: "node-a", Journey: a, Start: 1_000_000_000}, &Part{Node: "node-b", Journey: b, Start: 1_000_500_000}
}

func TestStitch(t *testing.T) {
	a, b := twoParts()
	other := &Part{Node: "node-b", Journey: &journey.Journey{Packet: journey.Packet{Proto: "tcp", Src: "10.244.0.5", Sport: 40001, Dst: "10.244.1.2", Dport: 80}}}
	j, used := Stitch(a, []*Part{other, b})
	if used != b {
		t.Fatalf("stitched with %+v, want node-b's matching part", used)
	}
	if j.Verdict.Kind != journey.Dropped || j.Verdict.Node != "node-b" || j.Verdict.Hook != "FORWARD" {
		t.Errorf("verdict %+v", j.Verdict)
	}
	if len(j.Hops) != 4 || j.Hops[0].Node != "node-a" || j.Hops[2].Node != "node-b" || j.Hops[2].TUs != 500 || j.Hops[3].TUs != 540 {
		t.Errorf("hops %+v", j.Hops)
	}
	if len(j.Encaps) != 1 || j.Encaps[0].Node != "node-a" {
		t.Errorf("encaps %+v (node-b's decap of the same outer header is not a second encap)", j.Encaps)
	}
	if len(j.Findings) != 1 || j.Findings[0].Code != "NF_POLICY_DROP" || j.Findings[0].Node != "node-b" {
		t.Errorf("findings %+v (LEFT_NODE goes once the next node saw the packet)", j.Findings)
	}
}

func TestStitchClockBehind(t *testing.T) {
	a, b := twoParts()
	b.Start = a.Start - 5_000_000 // node-b's clock 5 ms behind
	j, _ := Stitch(a, []*Part{b})
	if j.Hops[2].TUs < j.Hops[1].TUs {
		t.Errorf("node-b's hops start before node-a's last: %+v", j.Hops)
	}
}

func TestStitchOuterMismatch(t *testing.T) {
	a, b := twoParts()
	b.Journey.Encaps[0].OuterDst = "203.0.113.20"
	if _, used := Stitch(a, []*Part{b}); used != nil {
		t.Error("a part with other outer addresses is not the continuation")
	}
}

func TestDiagnoseCluster(t *testing.T) {
	plan, err := Resolve(context.Background(), fixture(), "default", "client", Target{Kind: "svc", Name: "web", Port: "80"}, "")
	if err != nil {
		t.Fatal(err)
	}
	// wrong VTEP: node-a encapsulates toward an address no node has
	a, _ := twoParts()
	j, _ := Stitch(a, nil)
	j.Encaps[0].OuterDst = "203.0.113.20"
	j.Nodes = []journey.NodeObserved{{Name: "node-a", Observed: true}, {Name: "node-b", Observed: false, Why: "no skbtrail daemon pod runs on it"}}
	Diagnose(j, plan)
	codes := map[string]journey.Finding{}
	for _, f := range j.Findings {
		codes[f.Code] = f
	}
	dst, ok := codes[CodeVXLANDstUnknown]
	if !ok || !strings.Contains(dst.Message, "203.0.113.20") || !strings.Contains(dst.Message, "node node-b, known as 198.51.100.20") {
		t.Errorf("VXLAN_DST_UNKNOWN %+v", dst)
	}
	if u, ok := codes[CodeNodeUnobserved]; !ok || u.Node != "node-b" || !strings.Contains(u.Message, "no skbtrail daemon pod") {
		t.Errorf("NODE_UNOBSERVED %+v", u)
	}
	if _, ok := codes[CodeVXLANSrcMismatch]; ok {
		t.Error("outer source 192.0.2.10 is node-a's address: no mismatch")
	}
	// wrong source: node-a sends from an address the cluster does not know it by
	a, _ = twoParts()
	j, _ = Stitch(a, nil)
	j.Encaps[0].OuterSrc = "192.0.2.11"
	Diagnose(j, plan)
	if len(j.Findings) == 0 || j.Findings[0].Code != CodeVXLANSrcMismatch || !strings.Contains(j.Findings[0].Message, "192.0.2.10") {
		t.Errorf("findings %+v, want VXLAN_SRC_MISMATCH naming 192.0.2.10 first", j.Findings)
	}
	// healthy: nothing to add
	a, _ = twoParts()
	j, _ = Stitch(a, nil)
	n := len(j.Findings)
	Diagnose(j, plan)
	if len(j.Findings) != n {
		t.Errorf("healthy encapsulation got findings %+v", j.Findings[n:])
	}
}

func TestUnaskedNodeOnThePath(t *testing.T) {
	plan, err := Resolve(context.Background(), fixture(), "default", "client", Target{Kind: "ip", Name: "10.244.1.77", Port: "53"}, "udp")
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Nodes) != 1 {
		t.Fatalf("plan nodes %v: an address no pod has leads nowhere", plan.Nodes)
	}
	a, _ := twoParts()
	j, _ := Stitch(a, nil)
	j.Encaps[0].Underlay = "eth0"
	u := plan.unasked(j)
	if len(u) != 1 || u[0].Name != "node-b" || u[0].Observed || !strings.Contains(u[0].Why, "198.51.100.20") {
		t.Fatalf("unasked %+v, want node-b (owner of the VXLAN outer destination) not observed", u)
	}
	j.Nodes = append([]journey.NodeObserved{{Name: "node-a", Observed: true}}, u...)
	Diagnose(j, plan)
	if f, ok := findingByCode(j, CodeNodeUnobserved); !ok || f.Node != "node-b" {
		t.Errorf("findings %+v, want NODE_UNOBSERVED for node-b", j.Findings)
	}
}

func findingByCode(j *journey.Journey, code string) (journey.Finding, bool) {
	for _, f := range j.Findings {
		if f.Code == code {
			return f, true
		}
	}
	return journey.Finding{}, false
}
