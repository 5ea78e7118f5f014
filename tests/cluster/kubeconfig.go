package cluster

import (
	"context"
	"fmt"
	"net"
	"path/filepath"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// writeKubeconfig writes a kubeconfig for user (with token) pointing at
// https://203.0.113.2:6443 with the CA embedded and returns its path.
func (c *Cluster) writeKubeconfig(user, token string) (string, error) {
	cfg := clientcmdapi.NewConfig()
	cl := clientcmdapi.NewCluster()
	cl.Server = "https://" + c.APIServerAddr()
	cl.CertificateAuthorityData = c.pki.caPEM
	cfg.Clusters["skbtrail-lab"] = cl
	auth := clientcmdapi.NewAuthInfo()
	auth.Token = token
	cfg.AuthInfos[user] = auth
	kctx := clientcmdapi.NewContext()
	kctx.Cluster, kctx.AuthInfo, kctx.Namespace = "skbtrail-lab", user, "default"
	cfg.Contexts[user+"@skbtrail-lab"] = kctx
	cfg.CurrentContext = user + "@skbtrail-lab"
	path := filepath.Join(c.dir, "kubeconfig-"+user)
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return "", fmt.Errorf("cluster: write kubeconfig for %s: %w", user, err)
	}
	c.mu.Lock()
	c.kubeconfigs[user] = path
	c.tokens[user] = token
	c.mu.Unlock()
	return path, nil
}

// dial creates the TCP socket inside the control-plane namespace: the test
// process (host netns) has no route to 203.0.113.2.
func (c *Cluster) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return DialIn(ctx, c.ctlNetns, network, addr)
}

// RESTConfig returns a client configuration for user ("admin", "tracer",
// "nobody" or "daemon") read from its kubeconfig, dialling through the
// control-plane namespace so that it works from the test process.
func (c *Cluster) RESTConfig(user string) (*rest.Config, error) {
	path := c.Kubeconfig(user)
	if path == "" {
		return nil, fmt.Errorf("cluster: no kubeconfig for user %q (have admin, tracer, nobody, daemon)", user)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("cluster: load kubeconfig %s: %w", path, err)
	}
	cfg.Dial = c.dial
	cfg.QPS, cfg.Burst = 100, 200
	cfg.UserAgent = "skbtrail-tests/" + user
	return cfg, nil
}

// Client returns a clientset acting as user (see RESTConfig).
func (c *Cluster) Client(user string) (kubernetes.Interface, error) {
	cfg, err := c.RESTConfig(user)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("cluster: client for %s: %w", user, err)
	}
	return cs, nil
}

// Kubeconfig returns the path of the kubeconfig of user: "admin"
// (system:masters), "tracer" (bound to skbtrail-tracer and
// skbtrail-tracer-proxy), "nobody" (authenticated, no RBAC) or "daemon"
// (ServiceAccount skbtrail/skbtrail). It is "" for any other user. The
// server is https://203.0.113.2:6443, reachable from the lab namespaces and
// the control-plane namespace (not from the host namespace).
func (c *Cluster) Kubeconfig(user string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.kubeconfigs[user]
}

// Token returns the bearer token of user (see Kubeconfig), or "".
func (c *Cluster) Token(user string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tokens[user]
}
