package trace

import (
	"net/netip"
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

// Drops are charged to pods by address; a partial runtime answer says
// nothing about which pods are gone.
func TestPodIndexByIPAndLive(t *testing.T) {
	p := &PodIndex{MaxAge: time.Hour}
	if live, known := p.Live("default/web"); live || known {
		t.Errorf("before a refresh: live %v known %v", live, known)
	}
	s := newPodSnapshot(map[uint32]kube.Pod{
		7: {Namespace: "default", Name: "web", IP: netip.MustParseAddr("10.244.1.5")},
		8: {Namespace: "kube-system", Name: "proxy", IP: netip.MustParseAddr("192.0.2.10"), HostNetwork: true},
	})
	p.snap.Store(s)
	if got := p.PodByIP("10.244.1.5"); got != "default/web" {
		t.Errorf("PodByIP = %q", got)
	}
	if got := p.PodByIP("192.0.2.10"); got != "" {
		t.Errorf("a host-network pod's address (the node's) charged to %q", got)
	}
	if got := p.PodByIP("not an address"); got != "" {
		t.Errorf("PodByIP(garbage) = %q", got)
	}
	if live, known := p.Live("default/web"); !live || !known {
		t.Errorf("live %v known %v", live, known)
	}
	if live, known := p.Live("default/gone"); live || !known {
		t.Errorf("gone pod: live %v known %v", live, known)
	}
	partial := newPodSnapshot(nil)
	partial.partial = true
	p.snap.Store(partial)
	if _, known := p.Live("default/web"); known {
		t.Error("a partial answer claimed to know")
	}
}
