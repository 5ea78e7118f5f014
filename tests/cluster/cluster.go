// Package cluster runs a real Kubernetes API server (kube-apiserver + etcd,
// no controller-manager, no scheduler, no kubelet) that describes a running
// lab (tests/lab): its two nodes, pods, Services and EndpointSlices, the
// skbtrail namespace and RBAC from deploy/kubernetes, and Pod objects for
// skbtrail daemons the tests start inside the lab's node namespaces.
//
// The control plane lives in its own network namespace <lab prefix>-ctl,
// linked to the lab's router (router "rc" 203.0.113.1/28, ctl "eth0"
// 203.0.113.2/28), so the API server is https://203.0.113.2:6443 for every
// lab namespace, and the API server reaches the daemons at their node's
// underlay address. The test process itself (host netns) talks to it
// through sockets created inside the ctl namespace (see RESTConfig).
//
// The binaries come from tests/cluster/build-components.sh (see
// LocateBinaries). Everything needs root.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/skbtrail/skbtrail/tests/lab"
)

// Options configures Up.
type Options struct {
	Lab      *lab.Lab // a lab that is up
	Skbtrail string   // path of the skbtrail binary (StartDaemon)
	Plugin   string   // path of the kubectl-skbtrail binary (RunPlugin)
	// Nodes are the Kubernetes node names of lab roles node-a and node-b;
	// default {"node-a", "node-b"}.
	Nodes []string
	// Manifests is the directory holding daemonset.yaml and rbac.yaml;
	// default <repository root>/deploy/kubernetes.
	Manifests string
	// Logf, if set, receives progress notes (e.g. t.Logf).
	Logf func(format string, args ...any)
	// RealKubelet prepares the control plane for real kubelets
	// (StartKubelet): the Node authorizer and NodeRestriction admission
	// next to RBAC, a client certificate for the API server's calls to
	// kubelets (user KubeletClientUser, bound to system:kubelet-api-admin)
	// and InternalIP as the address to reach them at.
	RealKubelet bool
}

// node is one lab node as the cluster describes it.
type node struct {
	name     string // Kubernetes node name
	role     string // lab.RoleNodeA or lab.RoleNodeB
	netns    string // node netns name
	podNetns string // the node's pod netns name
	ip       string // underlay (InternalIP)
	podCIDR  string
	vtepMAC  string
}

// Cluster is a running control plane. Create it with Up, end it with Down.
type Cluster struct {
	opts     Options
	bins     Binaries
	dir      string // temp dir: PKI, kubeconfigs, logs, etcd data
	ctlNetns string
	ctlID    *nsIdentity
	pki      *pki
	nodes    []node

	etcd, apiserver *proc
	admin           kubernetes.Interface

	mu          sync.Mutex
	kubeconfigs map[string]string
	tokens      map[string]string
	daemons     map[string]*proc
	kubelets    []*Kubelet
	down        bool
}

// Up starts etcd and kube-apiserver in a new control-plane namespace next
// to o.Lab, applies skbtrail's manifests, describes the lab in the API and
// writes the kubeconfigs. On failure everything started is torn down.
func Up(ctx context.Context, o Options) (*Cluster, error) {
	c, err := newCluster(o)
	if err != nil {
		return nil, err
	}
	if err := c.up(ctx); err != nil {
		if derr := c.Down(); derr != nil {
			err = errors.Join(err, fmt.Errorf("cluster: teardown after failed Up: %w", derr))
		}
		return nil, err
	}
	return c, nil
}

func newCluster(o Options) (*Cluster, error) {
	if o.Lab == nil {
		return nil, errors.New("cluster: Options.Lab is nil")
	}
	if len(o.Nodes) == 0 {
		o.Nodes = []string{lab.RoleNodeA, lab.RoleNodeB}
	}
	if len(o.Nodes) != 2 || o.Nodes[0] == "" || o.Nodes[1] == "" || o.Nodes[0] == o.Nodes[1] {
		return nil, fmt.Errorf("cluster: Options.Nodes must name two distinct nodes (for lab roles node-a and node-b), got %q", o.Nodes)
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.Manifests == "" {
		root, err := repoRoot()
		if err != nil {
			return nil, err
		}
		o.Manifests = filepath.Join(root, "deploy", "kubernetes")
	}
	bins, err := LocateBinaries()
	if err != nil {
		return nil, err
	}
	l := o.Lab
	return &Cluster{
		opts: o, bins: bins, ctlNetns: lab.NetnsName(l.Prefix, CtlRole),
		nodes: []node{
			{o.Nodes[0], lab.RoleNodeA, l.NodeA, l.PodA, l.NodeAIP, "10.244.0.0/24", lab.FlannelMACA},
			{o.Nodes[1], lab.RoleNodeB, l.NodeB, l.PodB, l.NodeBIP, "10.244.1.0/24", lab.FlannelMACB},
		},
		kubeconfigs: map[string]string{}, tokens: map[string]string{}, daemons: map[string]*proc{},
	}, nil
}

func (c *Cluster) up(ctx context.Context) error {
	start := time.Now()
	dir, err := os.MkdirTemp("", "skbtrail-cluster-"+c.opts.Lab.Prefix+"-")
	if err != nil {
		return fmt.Errorf("cluster: temp dir: %w", err)
	}
	c.dir = dir
	tokens := map[string]string{UserAdmin: randomToken(), UserTracer: randomToken(), UserNobody: randomToken()}
	if c.pki, err = makePKI(dir, tokens); err != nil {
		return err
	}
	c.ctlID, err = createCtlNetns(ctx, c.ctlNetns, c.opts.Lab.Router)
	if err != nil {
		return err
	}
	if err := c.startControlPlane(ctx, tokens); err != nil {
		return err
	}
	c.opts.Logf("cluster: API server %s ready in netns %s after %s", c.APIServerAddr(), c.ctlNetns, time.Since(start).Round(time.Millisecond))
	if err := c.populate(ctx); err != nil {
		return err
	}
	if err := c.checkReachable(ctx); err != nil {
		return err
	}
	c.opts.Logf("cluster: up in %s (dir %s)", time.Since(start).Round(time.Millisecond), dir)
	return nil
}

// populate applies the manifests, the users' bindings and the lab's objects
// and writes the daemon's kubeconfig.
func (c *Cluster) populate(ctx context.Context) error {
	if err := c.applyManifests(ctx); err != nil {
		return err
	}
	if err := c.bindTracer(ctx); err != nil {
		return err
	}
	if c.opts.RealKubelet {
		if err := c.bindKubeletClient(ctx); err != nil {
			return err
		}
	}
	if err := c.createLabObjects(ctx); err != nil {
		return err
	}
	return c.writeDaemonKubeconfig(ctx)
}

// checkReachable dials the API server from both node namespaces (through
// the lab's router), as the daemons will.
func (c *Cluster) checkReachable(ctx context.Context) error {
	for _, n := range c.nodes {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := DialIn(dctx, n.netns, "tcp", c.APIServerAddr())
		cancel()
		if err != nil {
			return fmt.Errorf("cluster: API server unreachable from %s (router %s must forward to %s): %w", n.netns, c.opts.Lab.Router, c.ctlNetns, err)
		}
		conn.Close()
	}
	return nil
}

// APIServerAddr returns "203.0.113.2:6443".
func (c *Cluster) APIServerAddr() string {
	return net.JoinHostPort(APIServerIP, strconv.Itoa(APIServerPort))
}

// Admin returns a clientset acting as cluster admin (system:masters).
func (c *Cluster) Admin() kubernetes.Interface { return c.admin }

// CtlNetns returns the name of the control-plane network namespace.
func (c *Cluster) CtlNetns() string { return c.ctlNetns }

// Dir returns the cluster's temporary directory (logs, PKI, kubeconfigs).
func (c *Cluster) Dir() string { return c.dir }

// Kubectl returns the path of the kubectl binary built with kube-apiserver.
func (c *Cluster) Kubectl() string { return c.bins.Kubectl }

// APIServerLog returns the kube-apiserver log so far.
func (c *Cluster) APIServerLog() string { return readFile(filepath.Join(c.dir, "kube-apiserver.log")) }

func readFile(path string) string {
	data, _ := os.ReadFile(path)
	return string(data)
}

// Down stops every process the cluster started (kubelet nodes, see
// Kubelet.Stop; daemons, kube-apiserver, etcd; by PID), deletes the
// control-plane namespace and removes the temporary directory. It is
// idempotent.
func (c *Cluster) Down() error {
	c.mu.Lock()
	if c.down {
		c.mu.Unlock()
		return nil
	}
	c.down = true
	daemons := c.daemons
	c.daemons = map[string]*proc{}
	kubelets := c.kubelets
	c.kubelets = nil
	c.mu.Unlock()

	var errs []error
	for _, k := range kubelets {
		errs = append(errs, k.Stop())
	}
	for _, p := range daemons {
		errs = append(errs, p.Stop(5*time.Second))
	}
	errs = append(errs, c.apiserver.Stop(10*time.Second), c.etcd.Stop(10*time.Second))
	errs = append(errs, deleteNetns(c.ctlNetns, c.ctlID))
	if c.dir != "" {
		if err := os.RemoveAll(c.dir); err != nil {
			errs = append(errs, fmt.Errorf("cluster: remove %s: %w", c.dir, err))
		}
	}
	return errors.Join(errs...)
}
