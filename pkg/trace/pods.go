package trace

import (
	"context"
	"sync"
	"time"

	"github.com/skbtrail/skbtrail/pkg/kube"
)

// PodIndex names the network namespaces that belong to pods, from the
// node's container runtime (CRI) or CNI cache, refreshed at most every
// MaxAge. Without a runtime it names nothing.
type PodIndex struct {
	Resolver *kube.Resolver
	MaxAge   time.Duration

	mu   sync.Mutex
	at   time.Time
	pods map[uint32]kube.Pod
}

// NewPodIndex returns an index over the given CRI endpoints (nil: defaults).
func NewPodIndex(criEndpoints []string) *PodIndex {
	return &PodIndex{Resolver: kube.NewResolver(kube.Options{CRIEndpoints: criEndpoints, Timeout: time.Second}), MaxAge: 10 * time.Second}
}

// Refresh rereads the runtime if the index is older than MaxAge.
func (p *PodIndex) Refresh(ctx context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pods != nil && time.Since(p.at) < p.MaxAge {
		return
	}
	pods, _ := p.Resolver.Index(ctx) // partial on error: best effort
	p.pods, p.at = pods, time.Now()
}

// Pod returns "namespace/name" and the sandbox id of the pod owning the
// netns, or "".
func (p *PodIndex) Pod(ino uint32) (string, string) {
	if p == nil {
		return "", ""
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if pod, ok := p.pods[ino]; ok {
		return pod.Namespace + "/" + pod.Name, pod.SandboxID
	}
	return "", ""
}
