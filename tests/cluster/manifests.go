package cluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
)

// SkbtrailNamespace is the namespace of deploy/kubernetes.
const SkbtrailNamespace = "skbtrail"

// decodeManifest decodes every non-empty document of a multi-document YAML
// file into typed objects with client-go's scheme.
func decodeManifest(path string) ([]runtime.Object, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cluster: read manifest: %w", err)
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []runtime.Object
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("cluster: %s: document %d: %w", path, i, err)
		}
		if emptyYAML(doc) {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("cluster: %s: document %d: %w", path, i, err)
		}
		objs = append(objs, obj)
	}
}

// emptyYAML reports whether doc has nothing but comments and blank lines.
func emptyYAML(doc []byte) bool {
	for line := range strings.SplitSeq(string(doc), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") && line != "---" {
			return false
		}
	}
	return true
}

// applyManifests creates the Namespace of daemonset.yaml and every object
// of rbac.yaml, then the default ServiceAccounts the ServiceAccount
// admission plugin wants (no controller-manager creates them here).
func (c *Cluster) applyManifests(ctx context.Context) error {
	ds, err := decodeManifest(filepath.Join(c.opts.Manifests, "daemonset.yaml"))
	if err != nil {
		return err
	}
	rbac, err := decodeManifest(filepath.Join(c.opts.Manifests, "rbac.yaml"))
	if err != nil {
		return err
	}
	var objs []runtime.Object
	for _, o := range ds {
		if _, ok := o.(*corev1.Namespace); ok {
			objs = append(objs, o)
		}
	}
	if len(objs) == 0 {
		return fmt.Errorf("cluster: no Namespace document in %s", filepath.Join(c.opts.Manifests, "daemonset.yaml"))
	}
	for _, o := range append(objs, rbac...) {
		if err := c.create(ctx, o); err != nil {
			return err
		}
	}
	for _, ns := range []string{metav1.NamespaceDefault, metav1.NamespaceSystem, SkbtrailNamespace} {
		// default and kube-system are made by the API server's own
		// controller, which may not have run yet.
		if err := c.create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return err
		}
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns}}
		if err := c.create(ctx, sa); err != nil {
			return err
		}
	}
	return nil
}

// create creates one typed object as admin. AlreadyExists is not an error.
func (c *Cluster) create(ctx context.Context, obj runtime.Object) error {
	cs, opts := c.admin, metav1.CreateOptions{}
	var err error
	switch o := obj.(type) {
	case *corev1.Namespace:
		_, err = cs.CoreV1().Namespaces().Create(ctx, o, opts)
	case *corev1.ServiceAccount:
		_, err = cs.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, opts)
	case *corev1.ConfigMap:
		_, err = cs.CoreV1().ConfigMaps(o.Namespace).Create(ctx, o, opts)
	case *appsv1.DaemonSet:
		_, err = cs.AppsV1().DaemonSets(o.Namespace).Create(ctx, o, opts)
	case *rbacv1.ClusterRole:
		_, err = cs.RbacV1().ClusterRoles().Create(ctx, o, opts)
	case *rbacv1.ClusterRoleBinding:
		_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, o, opts)
	case *rbacv1.Role:
		_, err = cs.RbacV1().Roles(o.Namespace).Create(ctx, o, opts)
	case *rbacv1.RoleBinding:
		_, err = cs.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, opts)
	default:
		return fmt.Errorf("cluster: cannot create %T (unsupported kind in manifest)", obj)
	}
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("cluster: create %s: %w", describe(obj), err)
	}
	return nil
}

func describe(obj runtime.Object) string {
	kind := fmt.Sprintf("%T", obj)
	if m, err := metaOf(obj); err == nil {
		if m.GetNamespace() != "" {
			return kind + " " + m.GetNamespace() + "/" + m.GetName()
		}
		return kind + " " + m.GetName()
	}
	return kind
}

func metaOf(obj runtime.Object) (metav1.Object, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no object metadata", obj)
	}
	return m, nil
}

// bindTracer grants user "tracer" what rbac.yaml says a person running
// kubectl skbtrail needs: ClusterRole skbtrail-tracer cluster-wide and Role
// skbtrail-tracer-proxy in the skbtrail namespace.
func (c *Cluster) bindTracer(ctx context.Context) error {
	subj := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: UserTracer}}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "tracer-skbtrail"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "skbtrail-tracer"},
		Subjects:   subj,
	}
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "tracer-skbtrail", Namespace: SkbtrailNamespace},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "skbtrail-tracer-proxy"},
		Subjects:   subj,
	}
	if err := c.create(ctx, crb); err != nil {
		return err
	}
	return c.create(ctx, rb)
}
