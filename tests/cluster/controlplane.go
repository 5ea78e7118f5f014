package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

const (
	etcdClientURL = "http://127.0.0.1:2379"
	etcdPeerURL   = "http://127.0.0.1:2380"
	// ServiceAccountIssuer is kube-apiserver's --service-account-issuer.
	ServiceAccountIssuer = "https://kubernetes.default.svc"
)

// startControlPlane starts etcd and kube-apiserver in the ctl namespace,
// waits until both are healthy and builds the admin client.
func (c *Cluster) startControlPlane(ctx context.Context, tokens map[string]string) error {
	if err := c.startEtcd(ctx); err != nil {
		return err
	}
	p := c.pki
	args := []string{
		"--etcd-servers=" + etcdClientURL,
		"--bind-address=0.0.0.0",
		fmt.Sprintf("--secure-port=%d", APIServerPort),
		"--advertise-address=" + APIServerIP,
		"--endpoint-reconciler-type=none",
		"--service-cluster-ip-range=" + ServiceCIDR,
		"--authorization-mode=" + c.authorizationModes(),
		"--token-auth-file=" + p.tokenFile,
		"--client-ca-file=" + p.caCert,
		"--tls-cert-file=" + p.servCert,
		"--tls-private-key-file=" + p.servKey,
		"--service-account-key-file=" + p.saPub,
		"--service-account-signing-key-file=" + p.saKey,
		"--service-account-issuer=" + ServiceAccountIssuer,
		"--cert-dir=" + filepath.Join(c.dir, "apiserver-certs"),
		"--allow-privileged=true",
	}
	if c.opts.RealKubelet {
		kargs, err := c.kubeletClientArgs()
		if err != nil {
			return err
		}
		args = append(args, kargs...)
	}
	var err error
	c.apiserver, err = startProc("kube-apiserver", c.ctlNetns, filepath.Join(c.dir, "kube-apiserver.log"), c.bins.APIServer, args...)
	if err != nil {
		return err
	}
	if _, err := c.writeKubeconfig(UserAdmin, tokens[UserAdmin]); err != nil {
		return err
	}
	if c.admin, err = c.Client(UserAdmin); err != nil {
		return err
	}
	if err := c.apiserver.WaitFor(ctx, 90*time.Second, "ready (/readyz)", c.readyz); err != nil {
		return err
	}
	for _, u := range []string{UserTracer, UserNobody} {
		if _, err := c.writeKubeconfig(u, tokens[u]); err != nil {
			return err
		}
	}
	return nil
}

// KubeletClientUser is the user the API server's client certificate names
// when it calls kubelets (pods/log, exec, the node proxy) with
// Options.RealKubelet; RBAC binds it to system:kubelet-api-admin, as
// kubeadm does, for kubelets that authorize callers with a webhook.
const KubeletClientUser = "kube-apiserver-kubelet-client"

// authorizationModes is RBAC, with the Node authorizer first when real
// kubelets come (Options.RealKubelet).
func (c *Cluster) authorizationModes() string {
	if c.opts.RealKubelet {
		return "Node,RBAC"
	}
	return "RBAC"
}

// kubeletClientArgs are kube-apiserver's flags for real kubelets, next to
// the Node authorizer (authorizationModes): NodeRestriction (a kubelet's
// certificate, system:node:<name>, may read and write what its own pods
// need, nothing else), a client certificate for calling kubelets, and
// InternalIP as their address: a kubelet's Hostname address (its node
// name) resolves nowhere here.
func (c *Cluster) kubeletClientArgs() ([]string, error) {
	crt, key, err := c.pki.issueClient(filepath.Join(c.dir, "apiserver-kubelet-client"), KubeletClientUser)
	if err != nil {
		return nil, err
	}
	return []string{
		"--enable-admission-plugins=NodeRestriction",
		"--kubelet-client-certificate=" + crt,
		"--kubelet-client-key=" + key,
		"--kubelet-preferred-address-types=InternalIP",
	}, nil
}

func (c *Cluster) readyz(ctx context.Context) (bool, error) {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	body, err := c.admin.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(rctx)
	if err != nil {
		return false, fmt.Errorf("/readyz: %w: %s", err, bytes.TrimSpace(body))
	}
	return true, nil
}

func (c *Cluster) startEtcd(ctx context.Context) error {
	args := []string{
		"--name=ctl",
		"--data-dir=" + filepath.Join(c.dir, "etcd"),
		"--listen-client-urls=" + etcdClientURL,
		"--advertise-client-urls=" + etcdClientURL,
		"--listen-peer-urls=" + etcdPeerURL,
		"--initial-advertise-peer-urls=" + etcdPeerURL,
		"--initial-cluster=ctl=" + etcdPeerURL,
		"--unsafe-no-fsync",
		"--log-level=warn",
	}
	var err error
	c.etcd, err = startProc("etcd", c.ctlNetns, filepath.Join(c.dir, "etcd.log"), c.bins.Etcd, args...)
	if err != nil {
		return err
	}
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return DialIn(ctx, c.ctlNetns, network, addr)
		},
	}}
	defer hc.CloseIdleConnections()
	return c.etcd.WaitFor(ctx, 30*time.Second, "healthy", func(ctx context.Context) (bool, error) {
		return etcdHealthy(ctx, hc)
	})
}

func etcdHealthy(ctx context.Context, hc *http.Client) (bool, error) {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, etcdClientURL+"/health", nil)
	if err != nil {
		return false, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"true"`) {
		return false, fmt.Errorf("etcd /health: %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	return true, nil
}

// repoRoot finds the repository root: the first parent of the working
// directory (or, failing that, of this source file) holding the module's
// go.mod.
func repoRoot() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		starts = append(starts, filepath.Dir(file))
	}
	for _, dir := range starts {
		for d := dir; ; d = filepath.Dir(d) {
			data, err := os.ReadFile(filepath.Join(d, "go.mod"))
			if err == nil && bytes.Contains(data, []byte("module github.com/skbtrail/skbtrail\n")) {
				return d, nil
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return "", errors.New("cluster: repository root (go.mod of github.com/skbtrail/skbtrail) not found above the working directory; set Options.Manifests")
}
