package trace

import (
	"context"
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
	pods, _ := p.Resolver.Index(ctx) // partial on error: best effort
	p.snap.Store(&podSnapshot{at: time.Now(), pods: pods})
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
