package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// UpstreamDNS is the nameserver of the "pod-dns-upstream" fault: an
// address no lab namespace routes (the query dies at the router).
const UpstreamDNS = "203.0.113.53"

// SetPodDNS starts a process in pod A's network namespace whose
// /etc/resolv.conf (in its own mount namespace, as a container's) names
// nameserver, like kubelet's resolv.conf for a pod; it returns once the
// process sees that file. The process lives until the lab is torn down.
func (l *Lab) SetPodDNS(ctx context.Context, nameserver string) error {
	l.mu.Lock()
	var err error
	if l.dir == "" {
		l.dir, err = os.MkdirTemp("", "skbtrail-lab-"+l.Prefix+"-")
	}
	dir := l.dir
	l.mu.Unlock()
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	conf := fmt.Sprintf("search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver %s\noptions ndots:5\n", nameserver)
	path := filepath.Join(dir, "pod-a-resolv.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	// ip netns exec gives the command its own mount namespace: the bind
	// mount stays there.
	p, err := l.startProc("pod-a-dns", l.PodA, "sh", "-c", `mount --bind "$0" /etc/resolv.conf && exec sleep 3600`, path)
	if err != nil {
		return err
	}
	seen := filepath.Join("/proc", strconv.Itoa(p.PID()), "root", "etc", "resolv.conf")
	return waitUntil(ctx, 5*time.Second, func() (bool, error) {
		if p.Exited() {
			return false, fmt.Errorf("lab: pod-a's DNS process exited: %v: %s", p.Err(), l.FlannelLog("pod-a-dns"))
		}
		b, err := os.ReadFile(seen)
		return err == nil && strings.Contains(string(b), "nameserver "+nameserver), err
	})
}
