package trace

import (
	"sync"
	"testing"
	"time"

	"github.com/skbtrail/skbtrail/pkg/kube"
)

// Lookups read the snapshot while a refresh is under way (a slow runtime
// must not hold them up), and see the new one once it is swapped in.
func TestPodIndexLookupsNeverWaitForRefresh(t *testing.T) {
	p := &PodIndex{MaxAge: time.Hour}
	if name, _ := p.Pod(7); name != "" {
		t.Fatalf("empty index named %q", name)
	}
	p.snap.Store(&podSnapshot{at: time.Now(), pods: map[uint32]kube.Pod{7: {Namespace: "default", Name: "web", SandboxID: "abc"}}})
	p.refreshing.Lock() // a refresh stuck on the runtime
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		name, id := p.Pod(7)
		if name != "default/web" || id != "abc" {
			t.Errorf("Pod(7) = %q %q", name, id)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("a lookup waited for the refresh")
	}
	p.refreshing.Unlock()
	wg.Wait()
	var nilIndex *PodIndex
	if name, _ := nilIndex.Pod(7); name != "" {
		t.Error("nil index named a pod")
	}
}
