// Package kubeclient builds Kubernetes API clients the way kubectl does: a
// kubeconfig file (with an optional context), else the in-cluster service
// account of a pod.
package kubeclient

import (
	"errors"
	"fmt"
	"os"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// ErrNoConfig: neither a kubeconfig nor an in-cluster service account.
var ErrNoConfig = errors.New("no Kubernetes configuration (give --kubeconfig, or run in a pod)")

// InCluster reports whether the process runs in a pod with a service account.
func InCluster() bool {
	return os.Getenv("KUBERNETES_SERVICE_HOST") != "" && os.Getenv("KUBERNETES_SERVICE_PORT") != ""
}

// DaemonConfig is a node daemon's API configuration: the kubeconfig file
// when given, else the pod's service account; ErrNoConfig without either.
func DaemonConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		c, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
		}
		return c, nil
	}
	if !InCluster() {
		return nil, ErrNoConfig
	}
	c, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("in-cluster configuration: %w", err)
	}
	return c, nil
}

// UserConfig is a person's configuration, resolved like kubectl resolves it
// (--kubeconfig, $KUBECONFIG, ~/.kube/config; --context), with the namespace
// the context names ("default" when none).
func UserConfig(kubeconfig, context string) (*rest.Config, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: context})
	c, err := cc.ClientConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			return nil, "", fmt.Errorf("no kubeconfig found (give --kubeconfig or set KUBECONFIG)")
		}
		return nil, "", fmt.Errorf("kubeconfig: %w", err)
	}
	ns, _, err := cc.Namespace()
	if err != nil || ns == "" {
		ns = "default"
	}
	return c, ns, nil
}

// Clientset returns a clientset for c.
func Clientset(c *rest.Config) (kubernetes.Interface, error) {
	cs, err := kubernetes.NewForConfig(c)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return cs, nil
}
