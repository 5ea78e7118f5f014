package trace

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skbtrail/skbtrail/pkg/kube"
)

// PodIndex names the network namespaces that belong to pods, from the
// node's container runtime (CRI) or CNI cache, refreshed at most every
// MaxAge. Without a runtime it names nothing. Lookups read a snapshot that
// a refresh swaps in whole: they never wait for the runtime.
type PodIndex struct {
	Resolver *kube.Resolver
	MaxAge   time.Duration

	refreshing sync.Mutex // one runtime query at a time
	snap       atomic.Pointer[podSnapshot]
}

type podSnapshot struct {
	at   time.Time
	pods map[uint32]kube.Pod
	byIP map[netip.Addr]string // pod IP -> "namespace/name"
	live map[string]bool       // "namespace/name" of every pod
	// partial: the runtime query failed somewhere; pods may be missing.
	partial bool
}

func newPodSnapshot(pods map[uint32]kube.Pod) *podSnapshot {
	s := &podSnapshot{at: time.Now(), pods: pods, byIP: map[netip.Addr]string{}, live: map[string]bool{}}
	for _, p := range pods {
		name := p.Namespace + "/" + p.Name
		s.live[name] = true
		if p.HostNetwork {
			continue
		}
		for _, a := range append([]netip.Addr{p.IP}, p.IPs...) {
			if a.IsValid() {
				s.byIP[a.Unmap()] = name
			}
		}
	}
	return s
}

// NewPodIndex returns an index over the given CRI endpoints (nil: defaults).
func NewPodIndex(criEndpoints []string) *PodIndex {
	return &PodIndex{Resolver: kube.NewResolver(kube.Options{CRIEndpoints: criEndpoints, Timeout: time.Second}), MaxAge: 10 * time.Second}
}

func (p *PodIndex) fresh() bool {
	s := p.snap.Load()
	return s != nil && time.Since(s.at) < p.MaxAge
}

// Refresh rereads the runtime if the index is older than MaxAge.
func (p *PodIndex) Refresh(ctx context.Context) {
	if p.fresh() {
		return
	}
	p.refreshing.Lock()
	defer p.refreshing.Unlock()
	if p.fresh() {
		return // another caller refreshed it while this one waited
	}
	pods, err := p.Resolver.Index(ctx) // partial on error: best effort
	s := newPodSnapshot(pods)
	s.partial = err != nil
	p.snap.Store(s)
}

// Pod returns "namespace/name" and the sandbox id of the pod owning the
// netns, or "".
func (p *PodIndex) Pod(ino uint32) (string, string) {
	if p == nil {
		return "", ""
	}
	s := p.snap.Load()
	if s == nil {
		return "", ""
	}
	if pod, ok := s.pods[ino]; ok {
		return pod.Namespace + "/" + pod.Name, pod.SandboxID
	}
	return "", ""
}

// PodByIP returns "namespace/name" of the pod with address ip (a pod
// network address, not a host-network pod's), or "".
func (p *PodIndex) PodByIP(ip string) string {
	if p == nil {
		return ""
	}
	s := p.snap.Load()
	a, err := netip.ParseAddr(ip)
	if s == nil || err != nil {
		return ""
	}
	return s.byIP[a.Unmap()]
}

// Live reports whether the pod ("namespace/name") was on the node at the
// last refresh; known is false when that refresh could not list every pod
// (or none happened yet), and then live says nothing.
func (p *PodIndex) Live(pod string) (live, known bool) {
	if p == nil {
		return false, false
	}
	s := p.snap.Load()
	if s == nil || s.partial {
		return false, false
	}
	return s.live[pod], true
}
