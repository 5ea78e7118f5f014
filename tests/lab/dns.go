package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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
// A second call adds its nameserver to the same file (a dual-stack pod's
// resolv.conf names one of each version).
func (l *Lab) SetPodDNS(ctx context.Context, nameserver string) error {
	l.mu.Lock()
	var err error
	if l.dir == "" {
		l.dir, err = os.MkdirTemp("", "skbtrail-lab-"+l.Prefix+"-")
	}
	dir := l.dir
	l.podDNS = append(l.podDNS, nameserver)
	servers := slices.Clone(l.podDNS)
	p := l.podDNSProc
	l.mu.Unlock()
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	conf := "search default.svc.cluster.local svc.cluster.local cluster.local\n"
	for _, ns := range servers {
		conf += "nameserver " + ns + "\n"
	}
	conf += "options ndots:5\n"
	path := filepath.Join(dir, "pod-a-resolv.conf")
	// written in place: the bind mount of a running process sees it
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	if p == nil {
		// ip netns exec gives the command its own mount namespace: the
		// bind mount stays there.
		if p, err = l.startProc("pod-a-dns", l.PodA, "sh", "-c", `mount --bind "$0" /etc/resolv.conf && exec sleep 3600`, path); err != nil {
			return err
		}
		l.mu.Lock()
		l.podDNSProc = p
		l.mu.Unlock()
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
