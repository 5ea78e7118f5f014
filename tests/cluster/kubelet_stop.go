package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/skbtrail/skbtrail/tests/containerd"
)

// criClient talks to the node's containerd through the CRI, as the
// kubelet does.
type criClient struct {
	conn *grpc.ClientConn
	rs   runtimeapi.RuntimeServiceClient
	is   runtimeapi.ImageServiceClient
}

func newCRIClient(socket string) (*criClient, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("cluster: CRI client for %s: %w", socket, err)
	}
	return &criClient{conn: conn, rs: runtimeapi.NewRuntimeServiceClient(conn), is: runtimeapi.NewImageServiceClient(conn)}, nil
}

func (c *criClient) close() { _ = c.conn.Close() }

// ready reports whether the runtime and its network are ready.
func (c *criClient) ready(ctx context.Context) (bool, error) {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := c.rs.Status(rctx, &runtimeapi.StatusRequest{})
	if err != nil {
		return false, err
	}
	ready := 0
	for _, cond := range st.GetStatus().GetConditions() {
		if !cond.GetStatus() {
			return false, fmt.Errorf("CRI %s: %s %s", cond.GetType(), cond.GetReason(), cond.GetMessage())
		}
		if cond.GetType() == runtimeapi.RuntimeReady || cond.GetType() == runtimeapi.NetworkReady {
			ready++
		}
	}
	return ready == 2, nil
}

func (c *criClient) hasImage(ctx context.Context, ref string) (bool, error) {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := c.is.ImageStatus(rctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil {
		return false, err
	}
	return st.GetImage() != nil, nil
}

// removeSandboxes stops and removes every pod sandbox (and so its
// containers; CNI DEL for pods with a network of their own). What the
// kubelet was removing itself when it stopped may vanish meanwhile
// (NotFound): it lists again until none is left.
func (c *criClient) removeSandboxes(ctx context.Context) error {
	var last error
	for range 5 {
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := c.rs.ListPodSandbox(lctx, &runtimeapi.ListPodSandboxRequest{})
		cancel()
		if err != nil {
			return fmt.Errorf("cluster: CRI list sandboxes: %w", err)
		}
		if len(resp.GetItems()) == 0 {
			return nil
		}
		var errs []error
		for _, sb := range resp.GetItems() {
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			_, err := c.rs.StopPodSandbox(sctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.GetId()})
			if err == nil || status.Code(err) == codes.NotFound {
				_, err = c.rs.RemovePodSandbox(sctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.GetId()})
			}
			cancel()
			if err != nil && status.Code(err) != codes.NotFound {
				errs = append(errs, fmt.Errorf("sandbox %.13s: %w", sb.GetId(), err))
			}
		}
		last = errors.Join(errs...)
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("cluster: CRI: pod sandboxes still listed after 5 rounds of removal (last errors: %v)", last)
}

// Stop ends the kubelet node and removes everything it made, reporting
// whatever had to be cleaned up by force: the kubelet (SIGTERM by PID);
// every pod sandbox through the CRI (pods the test left behind); containerd;
// any process still in the node's mount namespace or pod cgroups (shims,
// containers: SIGKILL by PID, an error); the mount namespace's holder (the
// namespace and every mount in it go with its last process); the cgroup
// root; the netns; the node's directory. It also checks that the machine's
// kernel tunables are the ones it had (restoring them if not, an error)
// and that no kubelet default path appeared on the machine. Idempotent.
func (k *Kubelet) Stop() error {
	k.stopOnce.Do(func() { k.stopErr = k.stop() })
	return k.stopErr
}

func (k *Kubelet) stop() error {
	var errs []error
	errs = append(errs, k.kubelet.Stop(15*time.Second))
	if k.containerd != nil && !k.containerd.Exited() {
		if cri, err := newCRIClient(k.ContainerdSocket()); err == nil {
			errs = append(errs, cri.removeSandboxes(context.Background()))
			cri.close()
		}
	}
	errs = append(errs, k.containerd.Stop(15*time.Second))
	if k.mntNS != "" {
		left := k.nodeProcesses()
		for _, pid := range left {
			errs = append(errs, fmt.Errorf("cluster: kubelet node %s: process %d (%s) left behind; killed", k.Node, pid, cmdline(pid)))
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		waitGone(left, 5*time.Second)
	}
	errs = append(errs, k.holder.Stop(5*time.Second))
	if k.mntNS != "" {
		errs = append(errs, k.waitMountNSGone())
	}
	errs = append(errs, k.removeCgroupRoot())
	errs = append(errs, k.checkSysctls(), k.checkHostPaths())
	errs = append(errs, deleteNetns(k.Netns, k.netnsID))
	if m := mountsUnder(k.Dir); len(m) > 0 {
		errs = append(errs, fmt.Errorf("cluster: mounts under %s in the test's mount namespace: %v; directory kept", k.Dir, m))
	} else if err := os.RemoveAll(k.Dir); err != nil {
		errs = append(errs, fmt.Errorf("cluster: remove %s: %w", k.Dir, err))
	}
	return errors.Join(errs...)
}

// nodeProcesses lists the processes other than the holder that are in the
// node's mount namespace or in a cgroup under its cgroup root.
func (k *Kubelet) nodeProcesses() []int {
	ents, _ := os.ReadDir("/proc")
	holder := 0
	if k.holder != nil {
		holder = k.holder.PID()
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == holder || pid == os.Getpid() {
			continue
		}
		if mnt, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil && mnt == k.mntNS {
			out = append(out, pid)
			continue
		}
		if cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid)); err == nil && strings.Contains(string(cg), k.CgroupRoot+"/") {
			out = append(out, pid)
		}
	}
	return out
}

// waitMountNSGone waits until no process is in the node's mount namespace
// any more: the kernel then releases it with every mount in it.
func (k *Kubelet) waitMountNSGone() error {
	var left []int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		left = left[:0]
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if mnt, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil && mnt == k.mntNS {
				left = append(left, pid)
			}
		}
		if len(left) == 0 {
			return nil
		}
	}
	return fmt.Errorf("cluster: kubelet node %s: processes %v still in its mount namespace %s", k.Node, left, k.mntNS)
}

// removeCgroupRoot removes the cgroup root and whatever the kubelet left
// under it (its QoS groups), deepest first.
func (k *Kubelet) removeCgroupRoot() error {
	var errs []error
	for _, root := range k.cgroupDirs {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		slices.Reverse(dirs)
		for _, d := range dirs {
			if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("cluster: remove cgroup %s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}

// checkSysctls compares the machine's kernel tunables with their values
// at start; any difference is restored and reported.
func (k *Kubelet) checkSysctls() error {
	var errs []error
	for name, want := range k.sysctls {
		path := filepath.Join("/proc/sys", name)
		got, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("cluster: read %s: %w", path, err))
			continue
		}
		if string(got) == want {
			continue
		}
		errs = append(errs, fmt.Errorf("cluster: %s changed from %q to %q while the kubelet node ran; restored",
			path, strings.TrimSpace(want), strings.TrimSpace(string(got))))
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("cluster: restore %s: %w", path, err))
		}
	}
	return errors.Join(errs...)
}

// checkHostPaths reports kubelet default paths that appeared on the
// machine while the node ran (and removes them if they are empty).
func (k *Kubelet) checkHostPaths() error {
	var errs []error
	for _, p := range kubeletHostPaths {
		if k.hostPathsBefore[p] {
			continue
		}
		if _, err := os.Lstat(p); err == nil {
			errs = append(errs, fmt.Errorf("cluster: %s appeared on the machine while the kubelet node ran", p))
			_ = os.Remove(p)
		}
	}
	return errors.Join(errs...)
}

// waitGone waits until none of pids exists any more, at most timeout.
func waitGone(pids []int, timeout time.Duration) {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		alive := false
		for _, pid := range pids {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
				alive = true
			}
		}
		if !alive {
			return
		}
	}
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

// mountsUnder lists mount points at or below dir in the test process's
// mount namespace.
func mountsUnder(dir string) []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for line := range strings.SplitSeq(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 5 {
			continue
		}
		if mp := containerd.UnescapeMount(fields[4]); mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	return out
}
