//go:build linux

package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/skbtrail/skbtrail/netnsutil"
)

// Labels the kubelet puts on every pod sandbox.
const (
	LabelPodName      = "io.kubernetes.pod.name"
	LabelPodNamespace = "io.kubernetes.pod.namespace"
	LabelPodUID       = "io.kubernetes.pod.uid"
)

// maxMsgSize matches the kubelet's limit for CRI responses (verbose status
// carries the whole OCI spec).
const maxMsgSize = 16 << 20

// failure is why one CRI endpoint could not be used.
type failure struct {
	endpoint, why string
	missing       bool // the socket does not exist (the usual case for defaults)
}

type failures []failure

func (f *failures) add(endpoint, why string) {
	*f = append(*f, failure{endpoint: endpoint, why: why})
}

// String lists every endpoint and why it failed, "; "-separated.
func (f failures) String() string {
	if len(f) == 0 {
		return "no CRI endpoint configured"
	}
	parts := make([]string, len(f))
	for i, x := range f {
		parts[i] = x.endpoint + ": " + x.why
	}
	return strings.Join(parts, "; ")
}

// notable lists the failures other than missing sockets.
func (f failures) notable() failures {
	var out failures
	for _, x := range f {
		if !x.missing {
			out = append(out, x)
		}
	}
	return out
}

// criRuntime is a connected CRI runtime service.
type criRuntime struct {
	endpoint string
	conn     *grpc.ClientConn
	rs       runtimeapi.RuntimeServiceClient
	timeout  time.Duration
}

func closeAll(rts []*criRuntime) {
	for _, rt := range rts {
		_ = rt.conn.Close()
	}
}

// socketPath turns "unix:///path" or "/path" into the socket path.
func socketPath(endpoint string) (string, error) {
	if p, ok := strings.CutPrefix(endpoint, "unix://"); ok {
		if !strings.HasPrefix(p, "/") {
			return "", errors.New("want unix:///ABSOLUTE/PATH")
		}
		return p, nil
	}
	if strings.HasPrefix(endpoint, "/") {
		return endpoint, nil
	}
	if scheme, _, ok := strings.Cut(endpoint, "://"); ok {
		return "", fmt.Errorf("unsupported scheme %q (want unix://)", scheme)
	}
	return "", errors.New("want unix:///ABSOLUTE/PATH")
}

// connect dials every configured endpoint and keeps those whose CRI v1
// runtime service answers Version.
func (r *Resolver) connect(ctx context.Context) ([]*criRuntime, failures) {
	var rts []*criRuntime
	var failed failures
	for _, ep := range r.CRIEndpoints {
		rt, f := r.dial(ctx, ep)
		if f != nil {
			r.logf("kube: CRI %s: %s", ep, f.why)
			failed = append(failed, *f)
			continue
		}
		rts = append(rts, rt)
	}
	return rts, failed
}

func (r *Resolver) dial(ctx context.Context, ep string) (*criRuntime, *failure) {
	path, err := socketPath(ep)
	if err != nil {
		return nil, &failure{endpoint: ep, why: "invalid endpoint: " + err.Error()}
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, &failure{endpoint: ep, why: "no such socket", missing: true}
	case errors.Is(err, fs.ErrPermission):
		return nil, &failure{endpoint: ep, why: "permission denied (run as root)"}
	case err != nil:
		return nil, &failure{endpoint: ep, why: err.Error()}
	case fi.Mode()&fs.ModeSocket == 0:
		return nil, &failure{endpoint: ep, why: "not a unix socket"}
	}
	conn, err := grpc.NewClient("unix://"+path,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsgSize)))
	if err != nil {
		return nil, &failure{endpoint: ep, why: err.Error()}
	}
	rt := &criRuntime{endpoint: ep, conn: conn, rs: runtimeapi.NewRuntimeServiceClient(conn), timeout: r.timeout()}
	cctx, cancel := rt.ctx(ctx)
	v, err := rt.rs.Version(cctx, &runtimeapi.VersionRequest{Version: "v1"})
	cancel()
	if err != nil {
		_ = conn.Close()
		return nil, &failure{endpoint: ep, why: rt.reason(err)}
	}
	r.logf("kube: CRI %s: %s %s (CRI %s)", ep, v.GetRuntimeName(), v.GetRuntimeVersion(), v.GetRuntimeApiVersion())
	return rt, nil
}

func (rt *criRuntime) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, rt.timeout)
}

// reason turns a gRPC error into a short explanation.
func (rt *criRuntime) reason(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	msg := st.Message()
	switch st.Code() {
	case codes.Unimplemented:
		return "does not serve the CRI v1 runtime service (" + msg + ")"
	case codes.DeadlineExceeded:
		return "no answer within " + rt.timeout.String()
	case codes.Canceled:
		return "cancelled"
	case codes.Unavailable:
		switch {
		case strings.Contains(msg, "connection refused"):
			return "connection refused (runtime not running?)"
		case strings.Contains(msg, "permission denied"):
			return "permission denied (run as root)"
		case strings.Contains(msg, "no such file"):
			return "no such socket"
		}
	}
	return st.Code().String() + ": " + msg
}

func sandboxRef(sb interface {
	GetLabels() map[string]string
	GetMetadata() *runtimeapi.PodSandboxMetadata
}) (ns, name string) {
	l := sb.GetLabels()
	ns, name = l[LabelPodNamespace], l[LabelPodName]
	if ns == "" || name == "" {
		ns, name = sb.GetMetadata().GetNamespace(), sb.GetMetadata().GetName()
	}
	return ns, name
}

type sbRef struct {
	rt *criRuntime
	sb *runtimeapi.PodSandbox
}

func (s sbRef) String() string { return shortID(s.sb.GetId()) + " on " + s.rt.endpoint }

func (rt *criRuntime) list(ctx context.Context, f *runtimeapi.PodSandboxFilter) ([]*runtimeapi.PodSandbox, error) {
	cctx, cancel := rt.ctx(ctx)
	defer cancel()
	resp, err := rt.rs.ListPodSandbox(cctx, &runtimeapi.ListPodSandboxRequest{Filter: f})
	if err != nil {
		return nil, errors.New(rt.reason(err))
	}
	return resp.GetItems(), nil
}

// criByName looks s up in the runtimes. answered is false when no runtime
// could list its sandboxes (failures are added to failed).
func (r *Resolver) criByName(ctx context.Context, rts []*criRuntime, s Spec, failed *failures) (p Pod, answered bool, err error) {
	var matches, all []sbRef
	var asked []string
	for _, rt := range rts {
		items, err := rt.list(ctx, &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{
			LabelPodName: s.Name, LabelPodNamespace: s.Namespace,
		}})
		if err != nil {
			failed.add(rt.endpoint, "list pod sandboxes: "+err.Error())
			continue
		}
		asked = append(asked, rt.endpoint)
		for _, sb := range items {
			if ns, name := sandboxRef(sb); ns == s.Namespace && name == s.Name {
				matches = append(matches, sbRef{rt, sb})
			}
		}
		if len(items) > 0 {
			continue
		}
		// Sandboxes created without the kubelet's labels (crictl runp):
		// match on the CRI metadata; the full list also feeds suggestions.
		items, err = rt.list(ctx, nil)
		if err != nil {
			failed.add(rt.endpoint, "list pod sandboxes: "+err.Error())
			continue
		}
		for _, sb := range items {
			ref := sbRef{rt, sb}
			all = append(all, ref)
			if ns, name := sandboxRef(sb); ns == s.Namespace && name == s.Name {
				matches = append(matches, ref)
			}
		}
	}
	if len(asked) == 0 {
		return Pod{}, false, nil
	}
	var ready []sbRef
	for _, m := range matches {
		if m.sb.GetState() == runtimeapi.PodSandboxState_SANDBOX_READY {
			ready = append(ready, m)
		}
	}
	switch {
	case len(ready) == 1:
		p, err := r.criPod(ctx, ready[0].rt, ready[0].sb.GetId())
		return p, true, err
	case len(ready) > 1:
		ids := make([]string, len(ready))
		for i, m := range ready {
			ids[i] = m.String()
		}
		return Pod{}, true, newError(ErrAmbiguous, "pod %s matches %d ready sandboxes (%s); remove the stale one or pass the pod IP instead",
			s, len(ready), strings.Join(ids, ", "))
	case len(matches) > 0:
		sort.Slice(matches, func(i, j int) bool { return matches[i].sb.GetCreatedAt() > matches[j].sb.GetCreatedAt() })
		m := matches[0]
		more := ""
		if len(matches) > 1 {
			more = fmt.Sprintf(", the latest of %d", len(matches))
		}
		return Pod{}, true, newError(ErrNotRunning, "pod %s is not running on this node: its sandbox %s is %s (runtime %s%s)",
			s, shortID(m.sb.GetId()), stateName(m.sb.GetState()), m.rt.endpoint, more)
	}
	names := make([]string, 0, len(all))
	for _, ref := range all {
		ns, name := sandboxRef(ref.sb)
		names = append(names, ns+"/"+name)
	}
	where := plural(len(asked), "runtime") + " " + strings.Join(asked, ", ")
	if n := failed.notable(); len(n) > 0 {
		where += "; not asked: " + n.String()
	}
	return Pod{}, true, newError(ErrNotFound, "pod %s not found on this node (%s)%s", s, where, didYouMean(suggest(s.String(), names, 3)))
}

func stateName(s runtimeapi.PodSandboxState) string {
	switch s {
	case runtimeapi.PodSandboxState_SANDBOX_READY:
		return "READY"
	case runtimeapi.PodSandboxState_SANDBOX_NOTREADY:
		return "NOTREADY"
	}
	return s.String()
}

// criByIP looks for a ready sandbox with address ip. answered is false when
// no runtime could list its sandboxes.
func (r *Resolver) criByIP(ctx context.Context, rts []*criRuntime, ip netip.Addr, failed *failures) (p Pod, found, answered bool, err error) {
	type match struct {
		rt     *criRuntime
		id     string
		ns, nm string
	}
	var matches []match
	for _, rt := range rts {
		items, err := rt.list(ctx, &runtimeapi.PodSandboxFilter{
			State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY},
		})
		if err != nil {
			failed.add(rt.endpoint, "list pod sandboxes: "+err.Error())
			continue
		}
		answered = true
		for _, sb := range items {
			st, _, err := rt.status(ctx, sb.GetId(), false)
			if err != nil {
				r.logf("kube: CRI %s: sandbox %s: %v", rt.endpoint, shortID(sb.GetId()), err)
				continue
			}
			for _, a := range sandboxIPs(st) {
				if a == ip {
					ns, nm := sandboxRef(st)
					matches = append(matches, match{rt, sb.GetId(), ns, nm})
					break
				}
			}
		}
	}
	switch len(matches) {
	case 0:
		return Pod{}, false, answered, nil
	case 1:
		p, err := r.criPod(ctx, matches[0].rt, matches[0].id)
		return p, true, true, err
	}
	parts := make([]string, len(matches))
	for i, m := range matches {
		parts[i] = fmt.Sprintf("%s/%s (sandbox %s)", m.ns, m.nm, shortID(m.id))
	}
	return Pod{}, true, true, newError(ErrAmbiguous, "address %s belongs to several pods: %s", ip, strings.Join(parts, ", "))
}

func sandboxIPs(st *runtimeapi.PodSandboxStatus) []netip.Addr {
	var out []netip.Addr
	if a, err := netip.ParseAddr(st.GetNetwork().GetIp()); err == nil {
		out = append(out, a.Unmap())
	}
	for _, x := range st.GetNetwork().GetAdditionalIps() {
		if a, err := netip.ParseAddr(x.GetIp()); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

func (rt *criRuntime) status(ctx context.Context, id string, verbose bool) (*runtimeapi.PodSandboxStatus, map[string]string, error) {
	cctx, cancel := rt.ctx(ctx)
	defer cancel()
	resp, err := rt.rs.PodSandboxStatus(cctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: verbose})
	if err != nil {
		return nil, nil, fmt.Errorf("sandbox status: %s", rt.reason(err))
	}
	if resp.GetStatus() == nil {
		return nil, nil, errors.New("sandbox status: empty answer")
	}
	return resp.GetStatus(), resp.GetInfo(), nil
}

// verboseInfo is the part of a verbose PodSandboxStatus info entry that
// locates the network namespace (containerd: {"pid":N,"runtimeSpec":{...}};
// CRI-O uses the same field names).
type verboseInfo struct {
	Pid         int `json:"pid"`
	RuntimeSpec *struct {
		Linux *struct {
			Namespaces []struct {
				Type string `json:"type"`
				Path string `json:"path"`
			} `json:"namespaces"`
		} `json:"linux"`
	} `json:"runtimeSpec"`
}

// parseVerboseInfo returns the network namespace path from the runtime
// spec and the sandbox pid found in info. hasNetns reports whether the spec
// lists a network namespace at all (none: the pod uses the host's).
func parseVerboseInfo(info map[string]string) (path string, pid int, hasNetns, hasSpec bool) {
	keys := make([]string, 0, len(info))
	for k := range info {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] == "info" || (keys[j] != "info" && keys[i] < keys[j]) })
	for _, k := range keys {
		var vi verboseInfo
		if json.Unmarshal([]byte(info[k]), &vi) != nil {
			continue
		}
		if pid == 0 && vi.Pid > 0 {
			pid = vi.Pid
		}
		if vi.RuntimeSpec != nil && vi.RuntimeSpec.Linux != nil && !hasSpec {
			hasSpec = true
			for _, n := range vi.RuntimeSpec.Linux.Namespaces {
				if n.Type == "network" {
					hasNetns, path = true, n.Path
				}
			}
		}
	}
	return path, pid, hasNetns, hasSpec
}

// criPod builds the Pod of sandbox id from its verbose status.
func (r *Resolver) criPod(ctx context.Context, rt *criRuntime, id string) (Pod, error) {
	st, info, err := rt.status(ctx, id, true)
	if err != nil {
		return Pod{}, fmt.Errorf("pod sandbox %s on %s: %v", shortID(id), rt.endpoint, err)
	}
	ns, name := sandboxRef(st)
	p := Pod{
		Namespace: ns,
		Name:      name,
		UID:       st.GetMetadata().GetUid(),
		SandboxID: st.GetId(),
		Source:    SourceCRIPrefix + rt.endpoint,
	}
	if p.UID == "" {
		p.UID = st.GetLabels()[LabelPodUID]
	}
	if ips := sandboxIPs(st); len(ips) > 0 {
		p.IP, p.OtherIP = ips[0], otherIP(ips)
	}
	specPath, pid, hasNetns, hasSpec := parseVerboseInfo(info)
	p.HostNetwork = st.GetLinux().GetNamespaces().GetOptions().GetNetwork() == runtimeapi.NamespaceMode_NODE ||
		(hasSpec && !hasNetns)

	var tried []string
	try := func(path string) bool {
		ino, err := netnsutil.InodeOf(path)
		if err != nil {
			tried = append(tried, err.Error())
			return false
		}
		p.NetnsPath, p.NetnsInode = path, uint32(ino)
		return true
	}
	switch {
	case p.HostNetwork:
		path, _, err := netnsutil.ResolveName("host")
		if err != nil {
			return Pod{}, newError(ErrNoNetns, "pod %s/%s uses the host network but the host network namespace cannot be opened: %v", ns, name, err)
		}
		try(path)
	case specPath != "" && try(specPath):
	case pid > 0 && try("/proc/"+strconv.Itoa(pid)+"/ns/net"):
	default:
		// Some runtimes (cri-dockerd) give neither: the CNI cache may know.
		if g, ok := r.cniGroupByID(st.GetId()); ok {
			if cp, ok := g.pod(); ok {
				p.NetnsPath, p.NetnsInode = cp.NetnsPath, cp.NetnsInode
				if !p.IP.IsValid() {
					p.IP, p.OtherIP = cp.IP, cp.OtherIP
				}
				r.logf("kube: pod %s/%s: network namespace from the CNI cache (%s)", ns, name, g.file)
				break
			}
		}
		if len(tried) == 0 {
			return Pod{}, newError(ErrNoNetns, "pod %s/%s: runtime %s reported neither a network namespace path nor a sandbox pid", ns, name, rt.endpoint)
		}
		return Pod{}, newError(ErrNoNetns, "pod %s/%s: cannot open its network namespace (%s)", ns, name, strings.Join(tried, "; "))
	}
	if p.NetnsPath == "" {
		return Pod{}, newError(ErrNoNetns, "pod %s/%s: cannot open its network namespace (%s)", ns, name, strings.Join(tried, "; "))
	}
	if st.GetState() != runtimeapi.PodSandboxState_SANDBOX_READY {
		return Pod{}, newError(ErrNotRunning, "pod %s/%s is not running on this node: its sandbox %s is %s (runtime %s)",
			ns, name, shortID(st.GetId()), stateName(st.GetState()), rt.endpoint)
	}
	return p, nil
}

// readyPods returns every ready pod of the runtime whose namespace opens.
func (rt *criRuntime) readyPods(ctx context.Context, r *Resolver) ([]Pod, error) {
	items, err := rt.list(ctx, &runtimeapi.PodSandboxFilter{
		State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY},
	})
	if err != nil {
		return nil, fmt.Errorf("list pod sandboxes: %v", err)
	}
	var out []Pod
	for _, sb := range items {
		p, err := r.criPod(ctx, rt, sb.GetId())
		if err != nil {
			r.logf("kube: index: %v", err)
			continue
		}
		out = append(out, p)
	}
	return out, nil
}
