//go:build linux

// Package kube finds a Kubernetes pod's network namespace and IP address on
// the node skbtrail runs on, without talking to the API server.
//
// A pod is given as "NAMESPACE/NAME" or as its IP address. Sources are
// tried in order, each only if available:
//
//  1. the container runtime over the CRI (k8s.io/cri-api runtime/v1, gRPC on
//     a unix socket: containerd, CRI-O, cri-dockerd);
//  2. the CNI result cache (/var/lib/cni/results) and host-local IPAM
//     allocations (/var/lib/cni/networks), when no runtime answers;
//  3. for an IP address only: every network namespace on the node is
//     scanned for the one that owns the address.
//
// Pod.Source records which one was used.
package kube

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/skbtrail/skbtrail/netnsutil"
)

// Sources of a resolved pod (Pod.Source is SourceCRIPrefix+endpoint for the
// CRI).
const (
	SourceCRIPrefix = "cri:"
	SourceCNICache  = "cni-cache"
	SourceNetnsScan = "netns-scan"
)

// Pod is a pod (or, for an IP resolved by the netns scan, a network
// namespace) found on this node.
type Pod struct {
	Namespace, Name string
	UID             string
	SandboxID       string     // container runtime id of the pod sandbox (CNI: container id)
	IP              netip.Addr // primary pod IP; invalid for host-network pods
	// IPs are all the pod's addresses, the primary first (a dual-stack pod
	// has an IPv4 and an IPv6 one).
	IPs []netip.Addr
	// NetnsPath opens the pod's network namespace (e.g.
	// /var/run/netns/cni-..., /proc/<pid>/ns/net).
	NetnsPath string
	// NetnsInode is the inode of the namespace at NetnsPath (what the
	// kernel and skbtrail's BPF programs report as the netns).
	NetnsInode uint32
	// HostNetwork is set for pods sharing the node's network namespace.
	HostNetwork bool
	// Source is "cri:<endpoint>", "cni-cache" or "netns-scan".
	Source string
}

// Addr is the pod's address of the family of dst; with dst invalid, its
// IPv4 address if it has one, else its primary one. The zero Addr when the
// pod has no address of dst's family (a source of the other family would
// make a filter that matches nothing).
func (p Pod) Addr(dst netip.Addr) netip.Addr {
	ips := p.IPs
	if len(ips) == 0 && p.IP.IsValid() {
		ips = []netip.Addr{p.IP}
	}
	want6 := dst.IsValid() && dst.Unmap().Is6()
	for _, a := range ips {
		if a.Is6() == want6 {
			return a
		}
	}
	if !dst.IsValid() {
		return p.IP
	}
	return netip.Addr{}
}

// String describes the pod in one line.
func (p Pod) String() string {
	var b strings.Builder
	if p.Name != "" {
		b.WriteString(p.Namespace + "/" + p.Name)
	} else {
		b.WriteString("netns " + p.NetnsPath)
	}
	b.WriteString(" (")
	var parts []string
	switch {
	case len(p.IPs) > 1:
		ips := make([]string, len(p.IPs))
		for i, a := range p.IPs {
			ips[i] = a.String()
		}
		parts = append(parts, "ips "+strings.Join(ips, ","))
	case p.IP.IsValid():
		parts = append(parts, "ip "+p.IP.String())
	}
	if p.SandboxID != "" {
		parts = append(parts, "sandbox "+shortID(p.SandboxID))
	}
	if p.HostNetwork {
		parts = append(parts, "host network")
	}
	parts = append(parts, "netns "+p.NetnsPath, "via "+p.Source)
	b.WriteString(strings.Join(parts, ", "))
	b.WriteString(")")
	return b.String()
}

// NetnsName returns a name for the pod's network namespace that
// netnsutil.ResolveName (and so `skbtrail trace --from-netns`) accepts and
// that opens the same namespace as NetnsPath, following netnsutil's naming
// rule: the /run/netns name for a path under /run/netns or /var/run/netns,
// "host" for the host's namespace (host-network pods), "pid:N" for
// /proc/N/ns/net, otherwise "ino:N".
func (p Pod) NetnsName() (string, error) {
	if p.NetnsPath == "" {
		return "", newError(ErrNoNetns, "%s: no network namespace path known", p.ref())
	}
	ino, err := netnsutil.InodeOf(p.NetnsPath)
	if err != nil {
		return "", newError(ErrNoNetns, "%s: cannot open network namespace %s: %v", p.ref(), p.NetnsPath, err)
	}
	var cands []string
	clean := filepath.Clean(p.NetnsPath)
	if dir, base := filepath.Split(clean); dir == "/run/netns/" || dir == "/var/run/netns/" {
		cands = append(cands, base)
	}
	cands = append(cands, "host")
	if rest, ok := strings.CutPrefix(clean, "/proc/"); ok {
		if pid, tail, ok := strings.Cut(rest, "/"); ok && tail == "ns/net" {
			if _, err := strconv.Atoi(pid); err == nil {
				cands = append(cands, "pid:"+pid)
			}
		}
	}
	cands = append(cands, "ino:"+strconv.FormatUint(uint64(ino), 10))
	for _, name := range cands {
		if _, got, err := netnsutil.ResolveName(name); err == nil && got == ino {
			return name, nil
		}
	}
	return "", newError(ErrNoNetns, "%s: network namespace %s (inode %d) has no name skbtrail can open", p.ref(), p.NetnsPath, ino)
}

func (p Pod) ref() string {
	if p.Name != "" {
		return "pod " + p.Namespace + "/" + p.Name
	}
	return "network namespace " + p.NetnsPath
}

// Default locations.
var (
	DefaultCRIEndpoints = []string{
		"unix:///run/containerd/containerd.sock",
		"unix:///run/crio/crio.sock",
		"unix:///var/run/cri-dockerd.sock",
	}
	DefaultCNIResultsDirs = []string{"/var/lib/cni/results"}
	DefaultIPAMDirs       = []string{"/var/lib/cni/networks"}
)

// DefaultTimeout bounds each call to a container runtime.
const DefaultTimeout = 3 * time.Second

// Options configures a Resolver. Nil slices mean the defaults; an empty,
// non-nil slice disables that source.
type Options struct {
	// CRIEndpoints are tried in order ("unix:///path" or "/path").
	CRIEndpoints []string
	// CNIResultsDirs hold libcni's cached results (one JSON file per
	// container, network and interface).
	CNIResultsDirs []string
	// IPAMDirs hold host-local IPAM allocations (<dir>/<network>/<ip>,
	// containing the container id).
	IPAMDirs []string
	// Timeout bounds each runtime call (DefaultTimeout if 0).
	Timeout time.Duration
	// NoNetnsScan disables the scan of all network namespaces for a bare IP.
	NoNetnsScan bool
	// Logf receives verbose notes (which source answered, which failed).
	Logf func(format string, args ...any)
}

// Resolver finds pods on this node. Its fields may be changed before use;
// it is safe for concurrent use afterwards.
type Resolver struct {
	CRIEndpoints   []string
	CNIResultsDirs []string
	IPAMDirs       []string
	Timeout        time.Duration
	NoNetnsScan    bool
	Logf           func(format string, args ...any)
}

// NewResolver returns a resolver with opts, defaults filled in.
func NewResolver(opts Options) *Resolver {
	r := &Resolver{
		CRIEndpoints:   opts.CRIEndpoints,
		CNIResultsDirs: opts.CNIResultsDirs,
		IPAMDirs:       opts.IPAMDirs,
		Timeout:        opts.Timeout,
		NoNetnsScan:    opts.NoNetnsScan,
		Logf:           opts.Logf,
	}
	if r.CRIEndpoints == nil {
		r.CRIEndpoints = append([]string(nil), DefaultCRIEndpoints...)
	}
	if r.CNIResultsDirs == nil {
		r.CNIResultsDirs = append([]string(nil), DefaultCNIResultsDirs...)
	}
	if r.IPAMDirs == nil {
		r.IPAMDirs = append([]string(nil), DefaultIPAMDirs...)
	}
	return r
}

func (r *Resolver) logf(format string, args ...any) {
	if r.Logf != nil {
		r.Logf(format, args...)
	}
}

func (r *Resolver) timeout() time.Duration {
	if r.Timeout > 0 {
		return r.Timeout
	}
	return DefaultTimeout
}

// Resolve finds the pod given as "NAMESPACE/NAME" or as an IP address.
// Errors are one line and match one of ErrInvalidSpec, ErrNotFound,
// ErrNotRunning, ErrAmbiguous, ErrNoRuntime or ErrNoNetns.
func (r *Resolver) Resolve(ctx context.Context, spec string) (Pod, error) {
	s, err := ParseSpec(spec)
	if err != nil {
		return Pod{}, err
	}
	var p Pod
	if s.IP.IsValid() {
		p, err = r.resolveIP(ctx, s.IP)
	} else {
		p, err = r.resolveName(ctx, s)
	}
	if err != nil {
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			return Pod{}, fmt.Errorf("resolve %s: %w", s, cerr)
		}
		return Pod{}, err
	}
	r.logf("kube: %s resolved via %s: %s", s, p.Source, p)
	return p, nil
}

func (r *Resolver) resolveName(ctx context.Context, s Spec) (Pod, error) {
	rts, failed := r.connect(ctx)
	defer closeAll(rts)
	if len(rts) > 0 {
		p, answered, err := r.criByName(ctx, rts, s, &failed)
		if answered {
			return p, err
		}
	}
	if len(r.CRIEndpoints) > 0 {
		r.logf("kube: no container runtime answered (%s); trying the CNI cache", failed)
	}
	p, detail, err := r.cniByName(s)
	if err == nil || !errors.Is(err, ErrNotFound) || len(r.CRIEndpoints) == 0 {
		return p, err
	}
	return Pod{}, newError(ErrNoRuntime, "pod %s: no container runtime reachable (%s) and %s", s, failed, detail)
}

func (r *Resolver) resolveIP(ctx context.Context, ip netip.Addr) (Pod, error) {
	var asked []string
	rts, failed := r.connect(ctx)
	defer closeAll(rts)
	answered := false
	if len(rts) > 0 {
		p, found, ok, err := r.criByIP(ctx, rts, ip, &failed)
		if found || err != nil {
			return p, err
		}
		answered = ok
	}
	switch {
	case answered:
		asked = append(asked, "no runtime sandbox has it")
	case len(r.CRIEndpoints) > 0:
		r.logf("kube: no container runtime answered (%s); trying the CNI cache", failed)
		asked = append(asked, "no container runtime reachable: "+failed.String())
	}
	p, found, sandboxID, err := r.cniByIP(ip)
	if found || err != nil {
		return p, err
	}
	switch {
	case sandboxID != "":
		asked = append(asked, "host-local IPAM allocated it to container "+shortID(sandboxID)+", whose network namespace the CNI cache does not know")
	case len(r.CNIResultsDirs)+len(r.IPAMDirs) > 0:
		asked = append(asked, "not in the CNI cache")
	}
	if !r.NoNetnsScan {
		p, found, err := r.scanNetns(ctx, ip)
		if err != nil {
			return Pod{}, err
		}
		if found {
			if p.SandboxID == "" {
				p.SandboxID = sandboxID
			}
			return p, nil
		}
		asked = append(asked, "no other network namespace has it")
	}
	return Pod{}, newError(ErrNotFound, "no pod on this node has address %s (%s)", ip, strings.Join(asked, "; "))
}

// hostNetnsInode returns the inode of the host network namespace, or 0 if
// unknown. It is found once: where PID 1's namespace cannot be read (some
// VM inits) finding it means scanning every process, and the answer never
// changes. Tests replace it.
var hostNetnsInode = func() uint32 {
	if ino := hostIno.Load(); ino != 0 {
		return ino
	}
	_, ino, err := netnsutil.ResolveName("host")
	if err != nil {
		return 0
	}
	hostIno.Store(uint32(ino))
	return uint32(ino)
}

var hostIno atomic.Uint32

// Index returns the pods known on this node by network namespace inode,
// for labelling events. It is best effort: the map holds what could be
// found even when an error is returned; the error is non-nil only when no
// source could be read at all. Host-network pods are left out (their
// namespace is the host's).
func (r *Resolver) Index(ctx context.Context) (map[uint32]Pod, error) {
	out := map[uint32]Pod{}
	host := hostNetnsInode()
	add := func(p Pod) {
		if p.NetnsInode == 0 || p.HostNetwork || (host != 0 && p.NetnsInode == host) {
			return
		}
		if _, ok := out[p.NetnsInode]; !ok {
			out[p.NetnsInode] = p
		}
	}
	rts, failed := r.connect(ctx)
	answered := 0
	for _, rt := range rts {
		pods, err := rt.readyPods(ctx, r)
		if err != nil {
			failed.add(rt.endpoint, err.Error())
			continue
		}
		answered++
		for _, p := range pods {
			add(p)
		}
	}
	closeAll(rts)
	groups, cniErr := r.readCNI()
	for _, g := range groups {
		if p, ok := g.pod(); ok {
			add(p)
		}
	}
	if answered == 0 && cniErr != nil {
		return out, fmt.Errorf("kube: index: no container runtime reachable (%s) and %v", failed, cniErr)
	}
	if len(failed) > 0 {
		r.logf("kube: index: %s", failed)
	}
	return out, ctx.Err()
}
