package cluster

import (
	"fmt"
	"os"
	"path/filepath"
)

// Defaults of tests/cluster/build-components.sh (same environment variables).
const (
	DefaultCache       = "/var/cache/skbtrail"
	DefaultK8sVersion  = "v1.37.2"
	DefaultEtcdVersion = "v3.6.16"

	// BuildScript builds the binaries Binaries looks for.
	BuildScript = "tests/cluster/build-components.sh"
)

// Binaries are the control-plane programs the cluster runs.
type Binaries struct {
	APIServer string // kube-apiserver
	Kubectl   string
	Etcd      string
	// Kubelet is where build-components.sh puts the kubelet; only
	// LocateKubelet checks that it is there (StartKubelet needs it).
	Kubelet string
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// LocateBinaries finds kube-apiserver, kubectl and etcd where
// build-components.sh puts them: $SKBTRAIL_CACHE/k8s-$K8S_VERSION/ and
// $SKBTRAIL_CACHE/etcd-$ETCD_VERSION/ (defaults /var/cache/skbtrail, v1.37.2,
// v3.6.16).
func LocateBinaries() (Binaries, error) {
	cache := envOr("SKBTRAIL_CACHE", DefaultCache)
	k8sDir := filepath.Join(cache, "k8s-"+envOr("K8S_VERSION", DefaultK8sVersion))
	etcdDir := filepath.Join(cache, "etcd-"+envOr("ETCD_VERSION", DefaultEtcdVersion))
	b := Binaries{
		APIServer: filepath.Join(k8sDir, "kube-apiserver"),
		Kubectl:   filepath.Join(k8sDir, "kubectl"),
		Etcd:      filepath.Join(etcdDir, "etcd"),
		Kubelet:   filepath.Join(k8sDir, "kubelet"),
	}
	for _, p := range []string{b.APIServer, b.Kubectl, b.Etcd} {
		st, err := os.Stat(p)
		if err != nil || st.IsDir() || st.Mode().Perm()&0o111 == 0 {
			return b, fmt.Errorf("cluster: control-plane binary %s is missing or not executable: run %s first "+
				"(it builds kube-apiserver, kubectl and etcd into $SKBTRAIL_CACHE, default %s; ~8 min on a cold machine)",
				p, BuildScript, DefaultCache)
		}
	}
	return b, nil
}

// LocateKubelet finds the kubelet build-components.sh builds next to
// kube-apiserver ($SKBTRAIL_CACHE/k8s-$K8S_VERSION/kubelet).
func LocateKubelet() (string, error) {
	b, err := LocateBinaries()
	if err != nil {
		return "", err
	}
	st, err := os.Stat(b.Kubelet)
	if err != nil || st.IsDir() || st.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("cluster: kubelet binary %s is missing or not executable: run %s first "+
			"(it builds the kubelet next to kube-apiserver into $SKBTRAIL_CACHE, default %s; ~4 min more on a cold machine)",
			b.Kubelet, BuildScript, DefaultCache)
	}
	return b.Kubelet, nil
}
