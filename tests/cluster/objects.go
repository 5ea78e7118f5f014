package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skbtrail/skbtrail/tests/lab"
)

// Objects describing the lab.
const (
	ClientPod  = "client"   // default/client on node-a, lab.PodAIP
	WebPod     = "web"      // default/web on node-b, lab.PodBIP, app=web
	WebService = "web"      // default/web, lab.ClusterIP:80/tcp
	DNSService = "kube-dns" // kube-system/kube-dns, lab.DNSClusterIP:53/udp -> default/web
	// Version reported for the fake kubelets.
	kubeletVersion = DefaultK8sVersion
)

func (c *Cluster) createLabObjects(ctx context.Context) error {
	for _, n := range c.nodes {
		if err := c.createNode(ctx, n); err != nil {
			return err
		}
	}
	a, b := c.nodes[0], c.nodes[1]
	client := labPod(metav1.NamespaceDefault, ClientPod, a.name, nil,
		corev1.Container{Name: "client", Image: "docker.io/library/busybox:1.36", Command: []string{"sleep", "infinity"}})
	if _, err := c.createPod(ctx, client, lab.PodAIP, a.ip); err != nil {
		return err
	}
	web := labPod(metav1.NamespaceDefault, WebPod, b.name, map[string]string{"app": "web"},
		corev1.Container{Name: "web", Image: "docker.io/library/nginx:1.27", Ports: []corev1.ContainerPort{
			{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP},
			{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
		}})
	web, err := c.createPod(ctx, web, lab.PodBIP, b.ip)
	if err != nil {
		return err
	}
	return c.createServices(ctx, web)
}

// createNode creates the Node with flannel's annotations and reports it
// Ready through the status subresource.
func (c *Cluster) createNode(ctx context.Context, n node) error {
	obj := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: n.name,
			Labels: map[string]string{
				"kubernetes.io/hostname": n.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
			},
			Annotations: map[string]string{
				"flannel.alpha.coreos.com/public-ip":    n.ip,
				"flannel.alpha.coreos.com/backend-type": "vxlan",
				"flannel.alpha.coreos.com/backend-data": fmt.Sprintf(`{"VNI":1,"VtepMAC":"%s"}`, n.vtepMAC),
			},
		},
		Spec: corev1.NodeSpec{PodCIDR: n.podCIDR, PodCIDRs: []string{n.podCIDR}},
	}
	created, err := c.admin.CoreV1().Nodes().Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("cluster: create node %s: %w", n.name, err)
	}
	now := metav1.Now()
	created.Status = corev1.NodeStatus{
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: n.ip},
			{Type: corev1.NodeHostName, Address: n.name},
		},
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "lab node " + n.netns, LastHeartbeatTime: now, LastTransitionTime: now,
		}},
		NodeInfo: corev1.NodeSystemInfo{
			KubeletVersion: kubeletVersion, OperatingSystem: "linux", Architecture: "amd64",
			ContainerRuntimeVersion: "containerd://2.1.0", OSImage: "skbtrail lab (" + n.netns + ")",
		},
	}
	if _, err := c.admin.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("cluster: node %s status: %w", n.name, err)
	}
	return nil
}

func labPod(ns, name, nodeName string, labels map[string]string, ctr corev1.Container) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{ctr}},
	}
}

// createPod creates pod (already bound to its node) and reports it Running
// and Ready with podIP on hostIP.
func (c *Cluster) createPod(ctx context.Context, pod *corev1.Pod, podIP, hostIP string) (*corev1.Pod, error) {
	created, err := c.admin.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("cluster: create pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return c.setPodRunning(ctx, created, podIP, hostIP)
}

func (c *Cluster) setPodRunning(ctx context.Context, pod *corev1.Pod, podIP, hostIP string) (*corev1.Pod, error) {
	now := metav1.Now()
	st := corev1.PodStatus{
		Phase: corev1.PodRunning, HostIP: hostIP, HostIPs: []corev1.HostIP{{IP: hostIP}},
		PodIP: podIP, PodIPs: []corev1.PodIP{{IP: podIP}}, StartTime: &now,
	}
	for _, t := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now})
	}
	started := true
	for _, ctr := range pod.Spec.Containers {
		sum := sha256.Sum256([]byte(string(pod.UID) + "/" + ctr.Name))
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
			Name: ctr.Name, Image: ctr.Image, ImageID: ctr.Image, Ready: true, Started: &started,
			ContainerID: "containerd://" + hex.EncodeToString(sum[:]),
			State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
	pod.Status = st
	updated, err := c.admin.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("cluster: pod %s/%s status: %w", pod.Namespace, pod.Name, err)
	}
	return updated, nil
}

// createServices creates default/web and kube-system/kube-dns with their
// EndpointSlices. Both point at the web pod, as the lab's kube-proxy rules
// do (kube-dns has no selector: its slice is managed by hand).
func (c *Cluster) createServices(ctx context.Context, web *corev1.Pod) error {
	svcs := []struct {
		svc       *corev1.Service
		managedBy string
	}{
		{labService(metav1.NamespaceDefault, WebService, lab.ClusterIP, "http", corev1.ProtocolTCP, 80,
			map[string]string{"app": "web"}, nil), "endpointslice-controller.k8s.io"},
		{labService(metav1.NamespaceSystem, DNSService, lab.DNSClusterIP, "dns", corev1.ProtocolUDP, 53,
			nil, map[string]string{"k8s-app": "kube-dns"}), "skbtrail-tests"},
	}
	for _, s := range svcs {
		if _, err := c.admin.CoreV1().Services(s.svc.Namespace).Create(ctx, s.svc, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("cluster: create service %s/%s: %w", s.svc.Namespace, s.svc.Name, err)
		}
		slice := endpointSlice(s.svc, web, s.managedBy)
		if _, err := c.admin.DiscoveryV1().EndpointSlices(slice.Namespace).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("cluster: create endpointslice %s/%s: %w", slice.Namespace, slice.Name, err)
		}
	}
	return nil
}

func labService(ns, name, ip, port string, proto corev1.Protocol, num int32, selector, labels map[string]string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip}, Selector: selector,
			Ports: []corev1.ServicePort{{Name: port, Protocol: proto, Port: num, TargetPort: intstr.FromInt32(num)}},
		},
	}
}

// endpointSlice returns the slice of svc with the single endpoint pod.
func endpointSlice(svc *corev1.Service, pod *corev1.Pod, managedBy string) *discoveryv1.EndpointSlice {
	p := svc.Spec.Ports[0]
	port, name, proto := p.TargetPort.IntVal, p.Name, p.Protocol
	ready, serving, terminating := true, true, false
	node := pod.Spec.NodeName
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: svc.Name + "-lab", Namespace: svc.Namespace,
			Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: managedBy},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{pod.Status.PodIP},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating},
			NodeName:   &node,
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID},
		}},
		Ports: []discoveryv1.EndpointPort{{Name: &name, Protocol: &proto, Port: &port}},
	}
}
