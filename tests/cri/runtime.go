//go:build linux

// Package cri runs a private containerd with its CRI plugin for end-to-end
// tests: pods made through the CRI get a real network namespace (from the
// CNI bridge plugin) on this machine, exactly as a kubelet would make them.
//
//	rt := cri.StartRuntime(t)              // skips unless root (see Require)
//	client := rt.RunPod(t, "default", "client", false)
//	server := rt.RunPod(t, "default", "server", true) // TCP on :8080
//
// Everything is removed when the test ends: pods, containerd and its shims
// (killed by pid), mounts, the CNI bridge and cache files.
//
// Needs: apt-get install -y containerd runc containernetworking-plugins busybox-static
package cri

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/skbtrail/skbtrail/netnsutil"
	"github.com/skbtrail/skbtrail/tests/containerd"
)

const (
	// RequirePrivilegedEnv turns "not root" (or missing tools) from a
	// skip into a failure when set to "1".
	RequirePrivilegedEnv = "SKBTRAIL_REQUIRE_PRIVILEGED"
	// ImageRef names the locally built busybox image, used both as the
	// sandbox ("pause") image and as the server container's image.
	ImageRef = "docker.io/skbtrail/busybox:e2e"
	// ServePort is where a pod started with serve=true accepts TCP.
	ServePort = 8080
	// CNIBinDir is where Debian's containernetworking-plugins live.
	CNIBinDir = "/usr/lib/cni"
	// Subnet is the lab range pods get addresses from (host-local IPAM).
	// The bridge gets no address: nothing is routed on the host.
	Subnet = "10.88.77.0/24"

	// Host paths the runtime (containerd 1.6 / libcni) writes outside the
	// test's directory; cleanup removes exactly what the test added.
	cniCacheDir     = "/var/lib/cni"
	cniResultsDir   = "/var/lib/cni/results"
	containerdRun   = "/run/containerd"
	containerdShimS = "/run/containerd/s"
	netnsDir        = "/var/run/netns"
)

var requiredTools = []string{"containerd", "ctr", "runc", "containerd-shim-runc-v2"}

// Require skips the test unless it runs as root with containerd, runc,
// the CNI plugins and busybox installed; with SKBTRAIL_REQUIRE_PRIVILEGED=1
// it fails instead.
func Require(t testing.TB) {
	t.Helper()
	var why []string
	if os.Geteuid() != 0 {
		why = append(why, fmt.Sprintf("needs root (euid %d)", os.Geteuid()))
	}
	for _, tool := range requiredTools {
		if _, err := exec.LookPath(tool); err != nil {
			why = append(why, "needs "+tool)
		}
	}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(CNIBinDir, p)); err != nil {
			why = append(why, "needs "+filepath.Join(CNIBinDir, p))
		}
	}
	if _, err := busyboxPath(); err != nil {
		why = append(why, err.Error())
	}
	if len(why) == 0 {
		return
	}
	msg := strings.Join(why, ", ")
	if len(why) > 1 || os.Geteuid() == 0 { // tools are missing
		msg += " (apt-get install -y containerd runc containernetworking-plugins busybox-static)"
	}
	if os.Getenv(RequirePrivilegedEnv) == "1" {
		t.Fatalf("cri: %s; %s=1 makes this a failure", msg, RequirePrivilegedEnv)
	}
	t.Skipf("cri: %s; set %s=1 to make this a failure", msg, RequirePrivilegedEnv)
}

// busyboxPath finds a statically linked busybox.
func busyboxPath() (string, error) { return containerd.BusyboxPath() }

// Runtime is a private containerd serving the CRI on Socket.
type Runtime struct {
	Dir      string       // everything of this runtime lives here
	Socket   string       // containerd's gRPC socket
	Endpoint string       // "unix://" + Socket, for --cri-endpoint
	Bridge   string       // the CNI bridge (in the host netns), unique
	Network  string       // the CNI network name, unique
	Subnet   netip.Prefix // pod addresses
	PID      int          // containerd's pid
	// CgroupParent holds every pod's cgroup (cgroupfs driver), unique.
	CgroupParent string

	RS runtimeapi.RuntimeServiceClient
	IS runtimeapi.ImageServiceClient

	t       testing.TB
	conn    *grpc.ClientConn
	cmd     *exec.Cmd
	exited  chan struct{}
	logPath string
	created map[string]bool // host paths this runtime created

	mu   sync.Mutex
	pods []Pod
}

// Pod is a pod sandbox made through the CRI.
type Pod struct {
	Namespace, Name, UID string
	SandboxID            string
	IP                   netip.Addr
	// NetnsPath is the netns path in the sandbox's OCI spec
	// (/var/run/netns/cni-...).
	NetnsPath string
	// NetnsInode is the inode of the sandbox process's network namespace
	// (/proc/<SandboxPID>/ns/net), found independently of NetnsPath.
	NetnsInode  uint32
	SandboxPID  int
	ContainerID string // the server container, when serving
}

// Ref returns "NS/NAME".
func (p Pod) Ref() string { return p.Namespace + "/" + p.Name }

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// StartRuntime starts containerd with the CRI plugin in a temporary
// directory, imports the busybox image and waits until the CRI reports the
// runtime and the network ready. Everything is torn down in t.Cleanup.
func StartRuntime(t testing.TB) *Runtime {
	t.Helper()
	Require(t)
	dir := t.TempDir() // removed after our own cleanup (cleanups run LIFO)
	suffix := randHex(4)
	r := &Runtime{
		Dir:          dir,
		Socket:       filepath.Join(dir, "containerd.sock"),
		Bridge:       "skbcri" + suffix,
		Network:      "skbtrail-e2e-" + suffix,
		CgroupParent: "/skbtrail-e2e-" + suffix,
		Subnet:       netip.MustParsePrefix(Subnet),
		t:            t,
		logPath:      filepath.Join(dir, "containerd.log"),
		created:      map[string]bool{},
		exited:       make(chan struct{}),
	}
	r.Endpoint = "unix://" + r.Socket
	for _, p := range []string{cniCacheDir, cniResultsDir, containerdRun, containerdShimS, netnsDir} {
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			r.created[p] = true
		}
	}
	t.Cleanup(r.cleanup)

	if err := r.writeConfig(); err != nil {
		t.Fatalf("cri: %v", err)
	}
	bb, _ := busyboxPath()
	imageTar := filepath.Join(dir, "busybox-oci.tar")
	if err := BuildImage(imageTar, bb, ImageRef); err != nil {
		t.Fatalf("cri: build image: %v", err)
	}
	if err := r.start(); err != nil {
		t.Fatalf("cri: %v\n%s", err, r.logTail())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := r.waitReady(ctx); err != nil {
		t.Fatalf("cri: containerd not ready: %v\n%s", err, r.logTail())
	}
	out, err := exec.CommandContext(ctx, "ctr", "--address", r.Socket, "--namespace", "k8s.io",
		"images", "import", "--snapshotter", "overlayfs", imageTar).CombinedOutput()
	if err != nil {
		t.Fatalf("cri: ctr images import: %v\n%s\n%s", err, out, r.logTail())
	}
	for {
		st, err := r.IS.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ImageRef}})
		if err == nil && st.GetImage() != nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("cri: image %s not visible through the CRI: %v", ImageRef, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("cri: containerd pid %d on %s (bridge %s, network %s, %s)", r.PID, r.Endpoint, r.Bridge, r.Network, r.Subnet)
	return r
}

func (r *Runtime) writeConfig() error {
	for _, d := range []string{"root", "state", "cni", "ipam", "runc", "opt", "logs"} {
		if err := os.MkdirAll(filepath.Join(r.Dir, d), 0o700); err != nil {
			return err
		}
	}
	err := containerd.WriteConfig(filepath.Join(r.Dir, "config.toml"), containerd.Config{
		Root: filepath.Join(r.Dir, "root"), State: filepath.Join(r.Dir, "state"), Address: r.Socket,
		OptPath: filepath.Join(r.Dir, "opt"), SandboxImage: ImageRef, RuncRoot: filepath.Join(r.Dir, "runc"),
		CNIBinDir: CNIBinDir, CNIConfDir: filepath.Join(r.Dir, "cni"),
	})
	if err != nil {
		return err
	}
	return containerd.BridgeNetwork{Name: r.Network, Bridge: r.Bridge, Subnet: Subnet, DataDir: filepath.Join(r.Dir, "ipam")}.
		Write(filepath.Join(r.Dir, "cni", "10-skbtrail-e2e.conflist"))
}

// start runs containerd. It is started from a goroutine locked to its OS
// thread that lives until containerd exits, so that Pdeathsig (bound to
// the creating thread) kills containerd only if the test process dies.
func (r *Runtime) start() error {
	logf, err := os.Create(r.logPath)
	if err != nil {
		return err
	}
	started := make(chan error, 1)
	go func() {
		goruntime.LockOSThread() // never unlocked: the thread ends with this goroutine
		defer logf.Close()
		cmd := exec.Command("containerd", "--config", filepath.Join(r.Dir, "config.toml"))
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			started <- fmt.Errorf("start containerd: %w", err)
			close(r.exited)
			return
		}
		r.cmd, r.PID = cmd, cmd.Process.Pid
		started <- nil
		_ = cmd.Wait()
		close(r.exited)
	}()
	return <-started
}

func (r *Runtime) running() bool {
	select {
	case <-r.exited:
		return false
	default:
		return r.cmd != nil
	}
}

func (r *Runtime) waitReady(ctx context.Context) error {
	for {
		if !r.running() {
			return errors.New("containerd exited")
		}
		if _, err := os.Stat(r.Socket); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no socket %s: %w", r.Socket, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	conn, err := grpc.NewClient(r.Endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	r.conn = conn
	r.RS = runtimeapi.NewRuntimeServiceClient(conn)
	r.IS = runtimeapi.NewImageServiceClient(conn)
	var last error
	for {
		if !r.running() {
			return errors.New("containerd exited")
		}
		st, err := r.RS.Status(ctx, &runtimeapi.StatusRequest{})
		if err == nil {
			ready := 0
			for _, c := range st.GetStatus().GetConditions() {
				if (c.GetType() == runtimeapi.RuntimeReady || c.GetType() == runtimeapi.NetworkReady) && c.GetStatus() {
					ready++
				} else if !c.GetStatus() {
					err = fmt.Errorf("%s: %s %s", c.GetType(), c.GetReason(), c.GetMessage())
				}
			}
			if ready == 2 {
				return nil
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%v (last: %v)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// logTail returns the end of containerd's log, for failure messages.
func (r *Runtime) logTail() string {
	data, err := os.ReadFile(r.logPath)
	if err != nil {
		return ""
	}
	if len(data) > 6000 {
		data = data[len(data)-6000:]
	}
	return "containerd log (tail):\n" + string(data)
}

// verboseInfo is what we read from containerd's verbose sandbox status.
type verboseInfo struct {
	Pid         int `json:"pid"`
	RuntimeSpec struct {
		Linux struct {
			Namespaces []struct {
				Type string `json:"type"`
				Path string `json:"path"`
			} `json:"namespaces"`
		} `json:"linux"`
	} `json:"runtimeSpec"`
}

// RunPod creates a pod sandbox NS/NAME with the labels the kubelet sets.
// With serve, a container in it runs busybox httpd on ServePort, and RunPod
// waits until it accepts connections.
func (r *Runtime) RunPod(t testing.TB, ns, name string, serve bool) Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	uid := fmt.Sprintf("%s-%s-%s-%s-%s", randHex(4), randHex(2), randHex(2), randHex(2), randHex(6))
	labels := map[string]string{
		"io.kubernetes.pod.name":      name,
		"io.kubernetes.pod.namespace": ns,
		"io.kubernetes.pod.uid":       uid,
	}
	logDir := filepath.Join(r.Dir, "logs", ns+"_"+name+"_"+uid)
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		t.Fatal(err)
	}
	nsOpts := &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD}
	sbCfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: ns, Uid: uid},
		Hostname:     name,
		LogDirectory: logDir,
		Labels:       labels,
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent:    r.CgroupParent,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: nsOpts},
		},
	}
	resp, err := r.RS.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sbCfg})
	if err != nil {
		t.Fatalf("cri: RunPodSandbox %s/%s: %v\n%s", ns, name, err, r.logTail())
	}
	p := Pod{Namespace: ns, Name: name, UID: uid, SandboxID: resp.GetPodSandboxId()}
	r.mu.Lock()
	r.pods = append(r.pods, p)
	r.mu.Unlock()

	st, err := r.RS.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: p.SandboxID, Verbose: true})
	if err != nil {
		t.Fatalf("cri: PodSandboxStatus %s: %v", p.SandboxID, err)
	}
	if p.IP, err = netip.ParseAddr(st.GetStatus().GetNetwork().GetIp()); err != nil || !r.Subnet.Contains(p.IP) {
		t.Fatalf("cri: pod %s/%s has IP %q, want one in %s", ns, name, st.GetStatus().GetNetwork().GetIp(), r.Subnet)
	}
	var vi verboseInfo
	if err := json.Unmarshal([]byte(st.GetInfo()["info"]), &vi); err != nil {
		t.Fatalf("cri: verbose info of %s: %v", p.SandboxID, err)
	}
	p.SandboxPID = vi.Pid
	for _, n := range vi.RuntimeSpec.Linux.Namespaces {
		if n.Type == "network" {
			p.NetnsPath = n.Path
		}
	}
	ino, err := netnsutil.InodeOf(fmt.Sprintf("/proc/%d/ns/net", vi.Pid))
	if err != nil {
		t.Fatalf("cri: sandbox pid %d of %s/%s: %v", vi.Pid, ns, name, err)
	}
	p.NetnsInode = uint32(ino)

	if serve {
		p.ContainerID = r.startServer(t, ctx, p, sbCfg, labels, nsOpts)
	}
	r.mu.Lock()
	for i := range r.pods {
		if r.pods[i].SandboxID == p.SandboxID {
			r.pods[i] = p
		}
	}
	r.mu.Unlock()
	t.Logf("cri: pod %s/%s: sandbox %.13s, ip %s, netns %s (inode %d), pid %d", ns, name, p.SandboxID, p.IP, p.NetnsPath, p.NetnsInode, p.SandboxPID)
	return p
}

func (r *Runtime) startServer(t testing.TB, ctx context.Context, p Pod, sbCfg *runtimeapi.PodSandboxConfig, labels map[string]string, nsOpts *runtimeapi.NamespaceOption) string {
	t.Helper()
	cLabels := map[string]string{"io.kubernetes.container.name": "server"}
	for k, v := range labels {
		cLabels[k] = v
	}
	cc, err := r.RS.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: p.SandboxID,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "server"},
			Image:    &runtimeapi.ImageSpec{Image: ImageRef},
			Command:  []string{"/bin/busybox"},
			Args:     []string{"httpd", "-f", "-p", strconv.Itoa(ServePort), "-h", "/www"},
			LogPath:  "server.log",
			Labels:   cLabels,
			Linux: &runtimeapi.LinuxContainerConfig{
				SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: nsOpts},
			},
		},
		SandboxConfig: sbCfg,
	})
	if err != nil {
		t.Fatalf("cri: CreateContainer in %s: %v\n%s", p.Ref(), err, r.logTail())
	}
	id := cc.GetContainerId()
	if _, err := r.RS.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("cri: StartContainer %s: %v\n%s", id, err, r.logTail())
	}
	// Wait until it accepts connections, from inside the pod.
	addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), ServePort).String()
	var last error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		last = netnsutil.Do(fmt.Sprintf("/proc/%d/ns/net", p.SandboxPID), func() error {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if last == nil {
			return id
		}
	}
	t.Fatalf("cri: server in %s does not accept on %s: %v", p.Ref(), addr, last)
	return ""
}

// RemovePod stops and removes a pod sandbox (and its containers).
func (r *Runtime) RemovePod(t testing.TB, p Pod) {
	t.Helper()
	if err := r.removeSandbox(p.SandboxID); err != nil {
		t.Errorf("cri: remove %s: %v", p.Ref(), err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.pods {
		if r.pods[i].SandboxID == p.SandboxID {
			r.pods = append(r.pods[:i], r.pods[i+1:]...)
			break
		}
	}
}

// StopPod stops a pod sandbox (it stays listed as NOTREADY until removed).
func (r *Runtime) StopPod(t testing.TB, p Pod) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := r.RS.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.SandboxID}); err != nil {
		t.Fatalf("cri: stop %s: %v", p.Ref(), err)
	}
}

func (r *Runtime) removeSandbox(id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := r.RS.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	if _, err := r.RS.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	return nil
}

// cleanup removes everything the runtime made; it reports (t.Errorf)
// anything it finds left behind.
func (r *Runtime) cleanup() {
	t := r.t
	r.mu.Lock()
	pods := append([]Pod(nil), r.pods...)
	r.mu.Unlock()
	ids := map[string]bool{}
	for _, p := range pods {
		ids[p.SandboxID] = true
		if p.ContainerID != "" {
			ids[p.ContainerID] = true
		}
	}

	// 1. Pods, through the CRI (this also runs CNI DEL).
	if r.running() && r.RS != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if resp, err := r.RS.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err == nil {
			for _, sb := range resp.GetItems() {
				ids[sb.GetId()] = true
			}
		}
		if resp, err := r.RS.ListContainers(ctx, &runtimeapi.ListContainersRequest{}); err == nil {
			for _, c := range resp.GetContainers() {
				ids[c.GetId()] = true
			}
		}
		cancel()
		for id := range ids {
			if err := r.removeSandbox(id); err != nil && !strings.Contains(err.Error(), "not found") {
				t.Logf("cri: cleanup: sandbox %.13s: %v", id, err)
			}
		}
	}
	if r.conn != nil {
		_ = r.conn.Close()
	}

	// 2. containerd, by pid.
	if r.running() {
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.exited:
		case <-time.After(15 * time.Second):
			t.Errorf("cri: containerd pid %d ignored SIGTERM; killing it", r.PID)
			_ = r.cmd.Process.Kill()
			<-r.exited
		}
	}

	// 3. Processes left behind: shims (their command line names our
	// socket) and container processes (in a cgroup named by our ids).
	for _, pid := range r.leftoverPids(ids) {
		t.Errorf("cri: process %d (%s) left behind; killing it", pid, cmdline(pid))
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}

	// 4. Mounts under our directory.
	for _, m := range mountsUnder(r.Dir) {
		t.Errorf("cri: mount %s left behind; unmounting it", m)
		_ = unix.Unmount(m, unix.MNT_DETACH)
	}

	// 5. Network namespaces of our pods.
	for _, p := range pods {
		if p.NetnsPath == "" {
			continue
		}
		if _, err := os.Lstat(p.NetnsPath); err == nil {
			t.Errorf("cri: network namespace %s of %s left behind; removing it", p.NetnsPath, p.Ref())
			_ = unix.Unmount(p.NetnsPath, unix.MNT_DETACH)
			_ = os.Remove(p.NetnsPath)
		}
	}

	// 6. The bridge the CNI bridge plugin made in the host netns (it is
	// never removed by CNI DEL).
	if l, err := netlink.LinkByName(r.Bridge); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			t.Errorf("cri: delete bridge %s: %v", r.Bridge, err)
		}
	}
	if _, err := netlink.LinkByName(r.Bridge); err == nil {
		t.Errorf("cri: bridge %s still exists", r.Bridge)
	}

	// 7. libcni's cache files for our network (CNI DEL removes them; the
	// loopback network's are named cni-loopback-<id>-lo).
	if ents, err := os.ReadDir(cniResultsDir); err == nil {
		for _, e := range ents {
			n := e.Name()
			leftover := strings.HasPrefix(n, r.Network+"-")
			for id := range ids {
				if strings.Contains(n, id) {
					leftover = true
				}
			}
			if leftover {
				t.Logf("cri: removing CNI cache file %s", n)
				_ = os.Remove(filepath.Join(cniResultsDir, n))
			}
		}
	}
	// Directories that did not exist before, if empty now.
	for _, d := range []string{cniResultsDir, cniCacheDir, containerdShimS, containerdRun, netnsDir} {
		if r.created[d] {
			_ = os.Remove(d)
		}
	}
	// cgroups: runc removes the pods' own; the parent is ours.
	for _, cg := range r.Cgroups() {
		entries, _ := os.ReadDir(cg)
		for _, e := range entries {
			if e.IsDir() {
				_ = os.Remove(filepath.Join(cg, e.Name()))
			}
		}
		if err := os.Remove(cg); err != nil {
			t.Errorf("cri: remove cgroup %s: %v", cg, err)
		}
	}
}

// leftoverPids lists processes whose command line names our directory or
// whose cgroup names one of ids.
func (r *Runtime) leftoverPids(ids map[string]bool) []int {
	ents, _ := os.ReadDir("/proc")
	self := os.Getpid()
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if strings.Contains(cmdline(pid), r.Dir) {
			out = append(out, pid)
			continue
		}
		cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if err != nil {
			continue
		}
		for id := range ids {
			if bytes.Contains(cg, []byte(id)) {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

// mountsUnder lists mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := containerd.UnescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// Cgroups lists the existing directories of CgroupParent in every cgroup
// hierarchy.
func (r *Runtime) Cgroups() []string {
	if !strings.HasPrefix(r.CgroupParent, "/skbtrail-e2e-") {
		return nil // never touch anything but our own
	}
	var out []string
	hier, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range append([]string{"/sys/fs/cgroup"}, hier...) {
		p := filepath.Join(h, r.CgroupParent)
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			out = append(out, p)
		}
	}
	return out
}
