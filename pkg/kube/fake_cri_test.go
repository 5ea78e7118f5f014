//go:build linux

package kube

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeSandbox is one pod sandbox served by fakeCRI.
type fakeSandbox struct {
	id, ns, name, uid string
	notReady          bool
	created           int64
	ip                string
	extraIPs          []string
	noLabels          bool // only CRI metadata, as crictl runp creates them
	hostNetwork       bool
	// verbose info: netnsPath goes into runtimeSpec.linux.namespaces
	// (type network), pid into "pid".
	netnsPath string
	pid       int
	noInfo    bool
}

// fakeCRI implements the parts of the CRI runtime service skbtrail uses.
type fakeCRI struct {
	runtimeapi.UnimplementedRuntimeServiceServer

	mu        sync.Mutex
	sandboxes []fakeSandbox
	statusN   int // PodSandboxStatus calls
}

func (f *fakeCRI) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{Version: "0.1.0", RuntimeName: "fake", RuntimeVersion: "1.0", RuntimeApiVersion: "v1"}, nil
}

func (sb fakeSandbox) labels() map[string]string {
	if sb.noLabels {
		return map[string]string{"app": sb.name}
	}
	return map[string]string{LabelPodName: sb.name, LabelPodNamespace: sb.ns, LabelPodUID: sb.uid, "app": sb.name}
}

func (sb fakeSandbox) state() runtimeapi.PodSandboxState {
	if sb.notReady {
		return runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	}
	return runtimeapi.PodSandboxState_SANDBOX_READY
}

func (sb fakeSandbox) meta() *runtimeapi.PodSandboxMetadata {
	return &runtimeapi.PodSandboxMetadata{Name: sb.name, Namespace: sb.ns, Uid: sb.uid}
}

func (f *fakeCRI) ListPodSandbox(_ context.Context, req *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*runtimeapi.PodSandbox
next:
	for _, sb := range f.sandboxes {
		if flt := req.GetFilter(); flt != nil {
			if flt.GetId() != "" && flt.GetId() != sb.id {
				continue
			}
			if flt.GetState() != nil && flt.GetState().GetState() != sb.state() {
				continue
			}
			l := sb.labels()
			for k, v := range flt.GetLabelSelector() {
				if l[k] != v {
					continue next
				}
			}
		}
		out = append(out, &runtimeapi.PodSandbox{
			Id: sb.id, Metadata: sb.meta(), State: sb.state(), CreatedAt: sb.created, Labels: sb.labels(),
		})
	}
	return &runtimeapi.ListPodSandboxResponse{Items: out}, nil
}

func (f *fakeCRI) PodSandboxStatus(_ context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statusN++
	for _, sb := range f.sandboxes {
		if sb.id != req.GetPodSandboxId() {
			continue
		}
		mode := runtimeapi.NamespaceMode_POD
		if sb.hostNetwork {
			mode = runtimeapi.NamespaceMode_NODE
		}
		st := &runtimeapi.PodSandboxStatus{
			Id: sb.id, Metadata: sb.meta(), State: sb.state(), CreatedAt: sb.created, Labels: sb.labels(),
			Network: &runtimeapi.PodSandboxNetworkStatus{Ip: sb.ip},
			Linux: &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{
				Options: &runtimeapi.NamespaceOption{Network: mode},
			}},
		}
		if sb.hostNetwork {
			st.Network.Ip = ""
		}
		for _, ip := range sb.extraIPs {
			st.Network.AdditionalIps = append(st.Network.AdditionalIps, &runtimeapi.PodIP{Ip: ip})
		}
		resp := &runtimeapi.PodSandboxStatusResponse{Status: st}
		if req.GetVerbose() && !sb.noInfo {
			resp.Info = map[string]string{"info": containerdInfo(sb)}
		}
		return resp, nil
	}
	return nil, status.Errorf(codes.NotFound, "an error occurred when try to find sandbox %q: not found", req.GetPodSandboxId())
}

// containerdInfo mimics containerd 1.6's verbose sandbox info.
func containerdInfo(sb fakeSandbox) string {
	nss := []map[string]string{{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}}
	if !sb.hostNetwork {
		nss = append(nss, map[string]string{"type": "network", "path": sb.netnsPath})
	}
	info := map[string]any{
		"pid":                sb.pid,
		"processStatus":      "running",
		"netNamespaceClosed": false,
		"image":              "registry.k8s.io/pause:3.6",
		"snapshotter":        "overlayfs",
		"runtimeHandler":     "",
		"runtimeType":        "io.containerd.runc.v2",
		"config":             map[string]any{"metadata": map[string]any{"name": sb.name, "namespace": sb.ns}},
		"runtimeSpec": map[string]any{
			"ociVersion": "1.0.2-dev",
			"process":    map[string]any{"args": []string{"/pause"}},
			"linux":      map[string]any{"namespaces": nss, "cgroupsPath": "/k8s.io/" + sb.id},
		},
	}
	b, _ := json.Marshal(info)
	return string(b)
}

// serveCRI serves f on a unix socket in a temp dir and returns its
// endpoint ("unix:///...").
func serveCRI(t *testing.T, f *fakeCRI) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "cri.sock")
	return serveOn(t, sock, func(s *grpc.Server) { runtimeapi.RegisterRuntimeServiceServer(s, f) })
}

func serveOn(t *testing.T, sock string, register func(*grpc.Server)) string {
	t.Helper()
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	register(s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(lis)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
	return "unix://" + sock
}
