package cluster

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// daemonSetTemplateGenerationKey is the label the DaemonSet controller
// puts on its pods (extensions/v1beta1 DaemonSetTemplateGenerationKey).
const daemonSetTemplateGenerationKey = "pod-template-generation"

// ApplyDaemonSet creates the DaemonSet of deploy/kubernetes/daemonset.yaml
// as it is (Up created its Namespace) and returns it as stored.
func (c *Cluster) ApplyDaemonSet(ctx context.Context) (*appsv1.DaemonSet, error) {
	path := filepath.Join(c.opts.Manifests, "daemonset.yaml")
	objs, err := decodeManifest(path)
	if err != nil {
		return nil, err
	}
	for _, o := range objs {
		ds, ok := o.(*appsv1.DaemonSet)
		if !ok {
			continue
		}
		if err := c.create(ctx, ds); err != nil {
			return nil, err
		}
		got, err := c.admin.AppsV1().DaemonSets(ds.Namespace).Get(ctx, ds.Name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("cluster: get daemonset %s/%s: %w", ds.Namespace, ds.Name, err)
		}
		return got, nil
	}
	return nil, fmt.Errorf("cluster: no DaemonSet document in %s", path)
}

// DaemonSetPod returns the Pod the DaemonSet controller creates for ds on
// node (no kube-controller-manager runs here): the pod template as it is,
// with the template's labels plus pod-template-generation, its
// annotations, name <ds>-<random>, the DaemonSet as controlling owner,
// the tolerations the controller adds to every daemon pod and the node
// affinity pinning it to node. The scheduler would then bind it; with no
// scheduler here, spec.nodeName is set directly, which is what binding
// does. Left out: the controller-revision-hash label, which names a
// ControllerRevision only the controller makes.
func DaemonSetPod(ds *appsv1.DaemonSet, node string) *corev1.Pod {
	tmpl := ds.Spec.Template.DeepCopy()
	labels := map[string]string{}
	for k, v := range tmpl.Labels {
		labels[k] = v
	}
	labels[daemonSetTemplateGenerationKey] = strconv.FormatInt(ds.Generation, 10)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: ds.Name + "-", Namespace: ds.Namespace,
			Labels: labels, Annotations: tmpl.Annotations, Finalizers: tmpl.Finalizers,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(ds, appsv1.SchemeGroupVersion.WithKind("DaemonSet"))},
		},
		Spec: tmpl.Spec,
	}
	addDaemonTolerations(&pod.Spec)
	pod.Spec.Affinity = nodeNameAffinity(pod.Spec.Affinity, node)
	pod.Spec.NodeName = node
	return pod
}

// addDaemonTolerations adds what the controller's
// AddOrUpdateDaemonPodTolerations adds (unless already there).
func addDaemonTolerations(spec *corev1.PodSpec) {
	add := []corev1.Toleration{
		{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
		{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
		{Key: corev1.TaintNodeDiskPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
		{Key: corev1.TaintNodeMemoryPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
		{Key: corev1.TaintNodePIDPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
		{Key: corev1.TaintNodeUnschedulable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	}
	if spec.HostNetwork {
		add = append(add, corev1.Toleration{Key: corev1.TaintNodeNetworkUnavailable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule})
	}
	for _, t := range add {
		found := false
		for _, have := range spec.Tolerations {
			if have.MatchToleration(&t) {
				found = true
			}
		}
		if !found {
			spec.Tolerations = append(spec.Tolerations, t)
		}
	}
}

// nodeNameAffinity is the controller's ReplaceDaemonSetPodNodeNameNodeAffinity:
// a required node affinity on metadata.name = node, replacing any
// metadata.name term and keeping the rest of the affinity.
func nodeNameAffinity(a *corev1.Affinity, node string) *corev1.Affinity {
	term := corev1.NodeSelectorTerm{MatchFields: []corev1.NodeSelectorRequirement{{
		Key: metav1.ObjectNameField, Operator: corev1.NodeSelectorOpIn, Values: []string{node},
	}}}
	if a == nil {
		a = &corev1.Affinity{}
	}
	if a.NodeAffinity == nil {
		a.NodeAffinity = &corev1.NodeAffinity{}
	}
	req := a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution
	if req == nil || len(req.NodeSelectorTerms) == 0 {
		a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution = &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{term}}
		return a
	}
	// Every term keeps its label expressions and gets the node's field.
	for i := range req.NodeSelectorTerms {
		req.NodeSelectorTerms[i].MatchFields = term.MatchFields
	}
	return a
}
