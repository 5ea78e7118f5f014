package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/skbtrail/skbtrail/tests/containerd"
	"github.com/skbtrail/skbtrail/tests/lab"
)

// A kubelet node (StartKubelet) is a real kubelet in front of a private
// containerd 1.6, both inside a node of their own made of two namespaces:
//
//   - network: <lab prefix>-kubelet, linked to the lab's router (router
//     "rk" 203.0.113.33/28, node "eth0" 203.0.113.34/28), so the API
//     server reaches the kubelet (:10250) and hostNetwork pods at the
//     node's address, and they reach https://203.0.113.2:6443;
//   - mount: a copy of the host's (slave: namespaces the labs add under
//     /run/netns still show up) in which /run, /var/lib and /var/log are
//     the node's own directories under the cluster's temp dir. What a
//     kubelet and containerd write at fixed paths regardless of their
//     configuration (/var/lib/kubelet/device-plugins, /var/log/containers,
//     /var/log/pods, /var/lib/cni, /run/containerd/s, ...) and the hostPath
//     volumes pods ask for under those trees land there; the manifest's
//     /run/containerd/containerd.sock is this node's containerd. Every
//     mount the kubelet and containerd make (projected volumes, container
//     root file systems, the kubelet's rshared root dir) is in this mount
//     namespace only, and goes with it when its last process ends.
//
// Kernel tunables the kubelet insists on (vm.overcommit_memory=1,
// vm.panic_on_oom=0, kernel.panic=10, kernel.panic_on_oops=1,
// kernel.keys.root_max*) are machine-wide, not per namespace: on a shared
// machine kernel.panic_on_oops=1 would turn any oops into a panic of the
// machine. The node's mount namespace therefore has files bound over
// those /proc/sys entries: the kubelet reads and "sets" them there, and
// Stop checks that the machine's values never changed (restoring them if
// they did, and failing).
//
// Pod cgroups live under a cgroup root of the node's own
// (/skbtrail-kubelet-<random>, cgroupfs driver) in every hierarchy.
const (
	KubeletRole         = "kubelet" // netns <lab prefix>-kubelet
	RouterKubeletIP     = "203.0.113.33"
	KubeletNodeIP       = "203.0.113.34"
	KubeletPrefixLen    = 28
	KubeletPort         = 10250
	DefaultKubeletNode  = "kubelet-node"
	KubeletReadyTimeout = 60 * time.Second
	// KubeletPodSubnet is the CNI bridge network of the node (pods that
	// are not hostNetwork); it exists only inside the node's netns.
	KubeletPodSubnet = "10.244.9.0/24"
	// PauseImage is the pod sandbox image every kubelet node imports
	// (static busybox sleeping for ever; nothing is ever pulled).
	PauseImage = "docker.io/skbtrail/pause:e2e"

	// node paths, as the node's processes see them
	nodeContainerdSock = "/run/containerd/containerd.sock"
	nodeContainerdRoot = "/var/lib/containerd"
	nodeContainerdRun  = "/run/containerd"
)

// kubeletSysctls are the kernel tunables the kubelet sets
// (setupKernelTunables in pkg/kubelet/cm), masked in the node.
var kubeletSysctls = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

// kubeletHostPaths are default paths of a kubelet; the node keeps them in
// its own trees, and Stop reports any that appeared on the machine.
var kubeletHostPaths = []string{
	"/var/lib/kubelet", "/var/log/containers", "/var/log/pods", "/usr/libexec/kubernetes",
}

// KubeletOptions configures StartKubelet.
type KubeletOptions struct {
	Node string // Node name; default DefaultKubeletNode
	// Images are OCI image archives (containerd.WriteArchive) imported into
	// the node's containerd before the kubelet starts, next to PauseImage.
	Images []string
}

// Kubelet is a running kubelet node; Stop (or the cluster's Down) ends it.
type Kubelet struct {
	c     *Cluster
	Node  string // Kubernetes node name
	Netns string // its network namespace
	IP    string // its address (InternalIP)
	// Dir holds everything of the node (logs, configuration, its /run,
	// /var/lib and /var/log); removed by Stop.
	Dir string
	// CgroupRoot is the kubelet's cgroupRoot.
	CgroupRoot string

	netnsID                     *nsIdentity
	holder, containerd, kubelet *proc
	mntNS                       string // "mnt:[inode]" of the node's mount namespace
	cgroupDirs                  []string
	sysctls                     map[string]string // the machine's values at start
	hostPathsBefore             map[string]bool

	stopOnce sync.Once
	stopErr  error
}

// Running reports whether the kubelet process runs.
func (k *Kubelet) Running() bool { return k.kubelet != nil && !k.kubelet.Exited() }

// KubeletLog returns the kubelet's log so far.
func (k *Kubelet) KubeletLog() string { return readFile(filepath.Join(k.Dir, "kubelet.log")) }

// ContainerdLog returns containerd's log so far.
func (k *Kubelet) ContainerdLog() string { return readFile(filepath.Join(k.Dir, "containerd.log")) }

// ContainerdSocket is the node's containerd socket as the test process
// reaches it (the node's processes see it at /run/containerd/containerd.sock).
func (k *Kubelet) ContainerdSocket() string {
	return filepath.Join(k.Dir, "root", "run", "containerd", "containerd.sock")
}

// bindKubeletClient lets the API server's kubelet client certificate call
// the kubelet API (logs, exec, stats): what kubeadm binds.
func (c *Cluster) bindKubeletClient(ctx context.Context) error {
	return c.create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "skbtrail-tests:kubelet-api-admin"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:kubelet-api-admin"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: KubeletClientUser}},
	})
}

// publishRootCA creates ConfigMap kube-root-ca.crt (the cluster CA) in
// every namespace, as kube-controller-manager's root-ca-cert-publisher
// does: the projected service-account volume of every pod reads it, and
// the kubelet does not start a pod whose volume it cannot build.
func (c *Cluster) publishRootCA(ctx context.Context) error {
	nss, err := c.admin.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("cluster: list namespaces: %w", err)
	}
	for _, ns := range nss.Items {
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt", Namespace: ns.Name},
			Data:       map[string]string{"ca.crt": string(c.pki.caPEM)},
		}
		if err := c.create(ctx, cm); err != nil {
			return err
		}
	}
	return nil
}

// StartKubelet starts a kubelet node (see the constants above) registered
// as o.Node: its namespaces, containerd with PauseImage and o.Images
// imported, the kubelet, and a DNAT rule for the `kubernetes` Service. It
// returns once the Node is Ready. The cluster must have been started with
// Options.RealKubelet; one kubelet node per cluster. On failure
// everything started is stopped again.
func (c *Cluster) StartKubelet(ctx context.Context, o KubeletOptions) (*Kubelet, error) {
	if !c.opts.RealKubelet {
		return nil, errors.New("cluster: StartKubelet needs a cluster started with Options.RealKubelet")
	}
	bin, err := LocateKubelet()
	if err != nil {
		return nil, err
	}
	if err := kubeletTools(); err != nil {
		return nil, err
	}
	if o.Node == "" {
		o.Node = DefaultKubeletNode
	}
	k := &Kubelet{
		c: c, Node: o.Node, Netns: lab.NetnsName(c.opts.Lab.Prefix, KubeletRole), IP: KubeletNodeIP,
		Dir:        filepath.Join(c.dir, "node-"+o.Node),
		CgroupRoot: "/skbtrail-kubelet-" + randomToken()[:12],
	}
	c.mu.Lock()
	switch {
	case c.down:
		c.mu.Unlock()
		return nil, errors.New("cluster: StartKubelet after Down")
	case len(c.kubelets) > 0:
		c.mu.Unlock()
		return nil, errors.New("cluster: a kubelet node runs already (one per cluster: it owns " + KubeletNodeIP + ")")
	}
	c.kubelets = append(c.kubelets, k)
	c.mu.Unlock()
	start := time.Now()
	if err := k.start(ctx, bin, o); err != nil {
		return nil, errors.Join(err, k.Stop())
	}
	c.opts.Logf("cluster: kubelet node %s Ready at %s (netns %s, cgroup root %s) after %s",
		k.Node, k.IP, k.Netns, k.CgroupRoot, time.Since(start).Round(time.Millisecond))
	return k, nil
}

// kubeletTools checks the programs a kubelet node runs besides the kubelet.
func kubeletTools() error {
	var missing []string
	for _, t := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "nsenter", "unshare", "iptables"} {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(cniBinDir, p)); err != nil {
			missing = append(missing, filepath.Join(cniBinDir, p))
		}
	}
	if _, err := containerd.BusyboxPath(); err != nil {
		missing = append(missing, "a static busybox")
	}
	if len(missing) > 0 {
		return fmt.Errorf("cluster: a kubelet node needs %s (apt-get install -y containerd runc containernetworking-plugins busybox-static util-linux iptables)",
			strings.Join(missing, ", "))
	}
	return nil
}

// cniBinDir is where Debian's containernetworking-plugins live.
const cniBinDir = "/usr/lib/cni"

func (k *Kubelet) start(ctx context.Context, bin string, o KubeletOptions) error {
	c := k.c
	k.hostPathsBefore = map[string]bool{}
	for _, p := range kubeletHostPaths {
		if _, err := os.Lstat(p); err == nil {
			k.hostPathsBefore[p] = true
		}
	}
	if err := c.publishRootCA(ctx); err != nil {
		return err
	}
	if err := k.makeDirs(); err != nil {
		return err
	}
	id, err := createLinkedNetns(ctx, linkedNetns{
		name: k.Netns, what: "kubelet node", router: c.opts.Lab.Router, routerDev: "rk",
		routerIP: RouterKubeletIP, ip: KubeletNodeIP, prefixLen: KubeletPrefixLen,
	})
	k.netnsID = id
	if err != nil {
		return err
	}
	if err := k.startHolder(ctx); err != nil {
		return err
	}
	if err := k.makeCgroupRoot(); err != nil {
		return err
	}
	if err := k.startContainerd(ctx, o.Images); err != nil {
		return err
	}
	if err := k.serveKubernetesService(ctx); err != nil {
		return err
	}
	return k.startKubelet(ctx, bin)
}

func (k *Kubelet) makeDirs() error {
	for _, d := range []string{"root/run/netns", "root/var-lib", "root/var-log", "sysctl", "cni", "kubelet"} {
		// 0755 like the real /run, /var/lib, /var/log (the cluster's
		// directory above is 0700)
		if err := os.MkdirAll(filepath.Join(k.Dir, d), 0o755); err != nil {
			return fmt.Errorf("cluster: kubelet node dir: %w", err)
		}
	}
	return nil
}

// inNodeMounts runs a command inside the node's mount namespace.
func (k *Kubelet) inNodeMounts(ctx context.Context, args ...string) error {
	return run(ctx, "nsenter", append([]string{"--target", strconv.Itoa(k.holder.PID()), "--mount", "--"}, args...)...)
}

// startHolder starts the process that owns the node's mount namespace
// (sleep, in the node's netns) and sets up the namespace's mounts.
func (k *Kubelet) startHolder(ctx context.Context) error {
	var err error
	k.holder, err = startCmd("kubelet node holder", filepath.Join(k.Dir, "holder.log"), filepath.Join(k.Dir, "holder.log"),
		"nsenter", "--net="+lab.NetnsPath(k.Netns), "--",
		"unshare", "--mount", "--propagation", "slave", "--", "sleep", "2147483647")
	if err != nil {
		return err
	}
	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return fmt.Errorf("cluster: own mount namespace: %w", err)
	}
	pid := k.holder.PID()
	err = k.holder.WaitFor(ctx, 10*time.Second, "in its own mount namespace", func(context.Context) (bool, error) {
		mnt, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
		if err != nil || mnt == self {
			return false, err
		}
		// unshare has set the propagation and exec'd sleep
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || filepath.Base(exe) == "unshare" || filepath.Base(exe) == "nsenter" {
			return false, err
		}
		k.mntNS = mnt
		return true, nil
	})
	if err != nil {
		return err
	}
	root := filepath.Join(k.Dir, "root")
	steps := [][]string{{"mount", "--bind", "/run/netns", filepath.Join(root, "run", "netns")}}
	if _, err := os.Stat("/run/xtables.lock"); err == nil {
		// iptables' lock is one per machine
		if err := os.WriteFile(filepath.Join(root, "run", "xtables.lock"), nil, 0o600); err != nil {
			return err
		}
		steps = append(steps, []string{"mount", "--bind", "/run/xtables.lock", filepath.Join(root, "run", "xtables.lock")})
	}
	steps = append(steps,
		[]string{"mount", "--rbind", filepath.Join(root, "run"), "/run"},
		[]string{"mount", "--bind", filepath.Join(root, "var-lib"), "/var/lib"},
		[]string{"mount", "--bind", filepath.Join(root, "var-log"), "/var/log"},
	)
	k.sysctls = map[string]string{}
	for _, s := range kubeletSysctls {
		val, err := os.ReadFile(filepath.Join("/proc/sys", s))
		if err != nil {
			return fmt.Errorf("cluster: read sysctl %s: %w", s, err)
		}
		k.sysctls[s] = string(val)
		mask := filepath.Join(k.Dir, "sysctl", strings.ReplaceAll(s, "/", "."))
		if err := os.WriteFile(mask, val, 0o644); err != nil {
			return err
		}
		steps = append(steps, []string{"mount", "--bind", mask, filepath.Join("/proc/sys", s)})
	}
	for _, s := range steps {
		if err := k.inNodeMounts(ctx, s...); err != nil {
			return fmt.Errorf("cluster: kubelet node mounts: %w", err)
		}
	}
	return nil
}

// makeCgroupRoot creates the kubelet's cgroup root in every cgroup
// hierarchy (the kubelet refuses a cgroupRoot that does not exist).
func (k *Kubelet) makeCgroupRoot() error {
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	for _, m := range mounts {
		d := filepath.Join(m, k.CgroupRoot)
		if err := os.Mkdir(d, 0o755); err != nil {
			return fmt.Errorf("cluster: cgroup root: %w", err)
		}
		k.cgroupDirs = append(k.cgroupDirs, d)
		// cgroup v1 cpuset: a new group has no CPUs and memory nodes
		// until given some; give it its parent's (the root's).
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if v, err := os.ReadFile(filepath.Join(m, f)); err == nil {
				if err := os.WriteFile(filepath.Join(d, f), v, 0o644); err != nil {
					return fmt.Errorf("cluster: cgroup root %s: %w", f, err)
				}
			}
		}
	}
	return nil
}

// cgroupMounts lists the mount points of cgroup and cgroup2 file systems
// in the test process's mount namespace.
func cgroupMounts() ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for line := range strings.SplitSeq(string(data), "\n") {
		fields := strings.Fields(line)
		for i, f := range fields {
			if f == "-" && i+1 < len(fields) && (fields[i+1] == "cgroup" || fields[i+1] == "cgroup2") {
				out = append(out, containerd.UnescapeMount(fields[4]))
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("cluster: no cgroup file system mounted")
	}
	return out, nil
}

// startContainerd writes containerd's configuration and CNI network,
// starts it in the node, imports the pause image and images, and waits
// until the CRI reports the runtime and the network ready.
func (k *Kubelet) startContainerd(ctx context.Context, images []string) error {
	cfg := filepath.Join(k.Dir, "containerd.toml")
	err := containerd.WriteConfig(cfg, containerd.Config{
		Root: nodeContainerdRoot, State: nodeContainerdRun, Address: nodeContainerdSock,
		OptPath: filepath.Join(nodeContainerdRoot, "opt"), SandboxImage: PauseImage,
		RuncRoot: filepath.Join(nodeContainerdRun, "runc"), CNIBinDir: cniBinDir, CNIConfDir: filepath.Join(k.Dir, "cni"),
	})
	if err != nil {
		return err
	}
	network := containerd.BridgeNetwork{Name: "skbtrail-kubelet", Bridge: "cni0", Subnet: KubeletPodSubnet,
		DataDir: filepath.Join(nodeContainerdRoot, "ipam")}
	if err := network.Write(filepath.Join(k.Dir, "cni", "10-skbtrail-kubelet.conflist")); err != nil {
		return err
	}
	k.containerd, err = startCmd("containerd "+k.Node, filepath.Join(k.Dir, "containerd.log"), filepath.Join(k.Dir, "containerd.log"),
		"nsenter", "--target", strconv.Itoa(k.holder.PID()), "--mount", "--net", "--", "containerd", "--config", cfg)
	if err != nil {
		return err
	}
	cri, err := newCRIClient(k.ContainerdSocket())
	if err != nil {
		return err
	}
	defer cri.close()
	if err := k.containerd.WaitFor(ctx, 60*time.Second, "ready (CRI status)", cri.ready); err != nil {
		return err
	}
	bb, err := containerd.BusyboxPath()
	if err != nil {
		return err
	}
	pause, err := containerd.BusyboxImage(bb, PauseImage)
	if err != nil {
		return err
	}
	pauseTar := filepath.Join(k.Dir, "pause-oci.tar")
	if err := containerd.WriteArchive(pauseTar, pause); err != nil {
		return fmt.Errorf("cluster: pause image: %w", err)
	}
	for _, tar := range append([]string{pauseTar}, images...) {
		ictx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		out, err := exec.CommandContext(ictx, "ctr", "--address", k.ContainerdSocket(), "--namespace", "k8s.io",
			"images", "import", "--snapshotter", "overlayfs", tar).CombinedOutput()
		cancel()
		if err != nil {
			return k.containerd.Failure(fmt.Errorf("cluster: ctr images import %s: %w: %s", tar, err, strings.TrimSpace(string(out))))
		}
		k.c.opts.Logf("cluster: imported into %s's containerd: %s", k.Node, strings.TrimSpace(string(out)))
	}
	return k.containerd.WaitFor(ctx, 20*time.Second, "showing "+PauseImage+" through the CRI", func(ctx context.Context) (bool, error) {
		return cri.hasImage(ctx, PauseImage)
	})
}

// serveKubernetesService does in the node's netns what kube-proxy would
// do for default/kubernetes, the one Service a pod's in-cluster
// configuration uses (KUBERNETES_SERVICE_HOST/PORT, injected by the
// kubelet): no kube-proxy runs here and the API server reconciles no
// endpoints (--endpoint-reconciler-type=none), so the node DNATs the
// Service's ClusterIP:port to the API server's real address itself.
func (k *Kubelet) serveKubernetesService(ctx context.Context) error {
	var svc *corev1.Service
	err := k.c.apiserver.WaitFor(ctx, 30*time.Second, "showing Service default/kubernetes", func(ctx context.Context) (bool, error) {
		s, err := k.c.admin.CoreV1().Services(metav1.NamespaceDefault).Get(ctx, "kubernetes", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		svc = s
		return true, nil
	})
	if err != nil {
		return err
	}
	if len(svc.Spec.Ports) == 0 || svc.Spec.ClusterIP == "" {
		return fmt.Errorf("cluster: Service default/kubernetes has no ClusterIP or port: %+v", svc.Spec)
	}
	port := strconv.Itoa(int(svc.Spec.Ports[0].Port))
	err = run(ctx, "ip", "netns", "exec", k.Netns, "iptables", "-w", "-t", "nat", "-A", "OUTPUT",
		"-d", svc.Spec.ClusterIP+"/32", "-p", "tcp", "--dport", port,
		"-m", "comment", "--comment", "skbtrail tests: default/kubernetes (no kube-proxy here)",
		"-j", "DNAT", "--to-destination", k.c.APIServerAddr())
	if err != nil {
		return fmt.Errorf("cluster: DNAT for Service default/kubernetes in %s: %w", k.Netns, err)
	}
	k.c.opts.Logf("cluster: %s: Service default/kubernetes %s:%s -> %s (DNAT, as kube-proxy would)", k.Netns, svc.Spec.ClusterIP, port, k.c.APIServerAddr())
	return nil
}

// kubeletConfig is the node's KubeletConfiguration. What this machine
// needs: cgroup v1 with the cgroupfs driver (PID 1 is not systemd) and no
// swap check; no iptables chains of the kubelet's own (it would add them
// in the node's netns only, but there is no use for them); eviction and
// image GC thresholds out of the way, so that the shared machine's disk
// never evicts the test's pod.
func (k *Kubelet) kubeletConfig() string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
port: %[2]d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %[3]q}
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://%[4]s
cgroupDriver: cgroupfs
cgroupRoot: %[5]s
failCgroupV1: false
failSwapOn: false
makeIPTablesUtilChains: false
localStorageCapacityIsolation: true
volumePluginDir: /var/lib/kubelet/volume-plugins
resolvConf: /etc/resolv.conf
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%%"
  nodefs.inodesFree: "1%%"
  imagefs.available: "1%%"
  imagefs.inodesFree: "1%%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
registerNode: true
rotateCertificates: false
serverTLSBootstrap: false
`, k.IP, KubeletPort, k.c.pki.caCert, nodeContainerdSock, k.CgroupRoot)
}

// writeKubeletKubeconfig issues the node's client certificate
// (system:node:<name> in group system:nodes, what the Node authorizer
// knows) and writes the kubelet's kubeconfig.
func (k *Kubelet) writeKubeletKubeconfig() (string, error) {
	crt, key, err := k.c.pki.issueClient(filepath.Join(k.Dir, "kubelet", "client"), "system:node:"+k.Node, "system:nodes")
	if err != nil {
		return "", err
	}
	cfg := clientcmdapi.NewConfig()
	cl := clientcmdapi.NewCluster()
	cl.Server = "https://" + k.c.APIServerAddr()
	cl.CertificateAuthorityData = k.c.pki.caPEM
	cfg.Clusters["skbtrail-lab"] = cl
	auth := clientcmdapi.NewAuthInfo()
	auth.ClientCertificate, auth.ClientKey = crt, key
	cfg.AuthInfos["kubelet"] = auth
	kctx := clientcmdapi.NewContext()
	kctx.Cluster, kctx.AuthInfo = "skbtrail-lab", "kubelet"
	cfg.Contexts["kubelet@skbtrail-lab"] = kctx
	cfg.CurrentContext = "kubelet@skbtrail-lab"
	path := filepath.Join(k.Dir, "kubelet", "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return "", fmt.Errorf("cluster: write kubelet kubeconfig: %w", err)
	}
	return path, nil
}

func (k *Kubelet) startKubelet(ctx context.Context, bin string) error {
	kubeconfig, err := k.writeKubeletKubeconfig()
	if err != nil {
		return err
	}
	cfg := filepath.Join(k.Dir, "kubelet", "config.yaml")
	if err := os.WriteFile(cfg, []byte(k.kubeletConfig()), 0o600); err != nil {
		return err
	}
	k.kubelet, err = startCmd("kubelet "+k.Node, filepath.Join(k.Dir, "kubelet.log"), filepath.Join(k.Dir, "kubelet.log"),
		"nsenter", "--target", strconv.Itoa(k.holder.PID()), "--mount", "--net", "--",
		bin, "--config="+cfg, "--kubeconfig="+kubeconfig, "--hostname-override="+k.Node, "--node-ip="+k.IP, "--v=2")
	if err != nil {
		return err
	}
	return k.kubelet.WaitFor(ctx, KubeletReadyTimeout, "Node "+k.Node+" Ready", func(ctx context.Context) (bool, error) {
		n, err := k.c.admin.CoreV1().Nodes().Get(ctx, k.Node, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				if cond.Status == corev1.ConditionTrue {
					return true, nil
				}
				return false, fmt.Errorf("node %s: Ready=%s: %s %s", k.Node, cond.Status, cond.Reason, cond.Message)
			}
		}
		return false, fmt.Errorf("node %s has no Ready condition yet", k.Node)
	})
}
