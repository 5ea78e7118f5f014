package daemon

import (
	"testing"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/metrics"
)

type fakePods struct {
	byNetns map[uint32]string
	byIP    map[string]string
}

func (f fakePods) Pod(ino uint32) (string, string) { return f.byNetns[ino], "" }
func (f fakePods) PodByIP(ip string) string        { return f.byIP[ip] }

// A drop is charged to the pod it happened in, else the sender, else the
// receiver; a namespace known only by inode is named off the processor.
func TestChargePod(t *testing.T) {
	pods := fakePods{
		byNetns: map[uint32]string{7: "default/web"},
		byIP:    map[string]string{"10.244.1.5": "default/client", "10.244.2.9": "kube-system/coredns"},
	}
	name := func(ino uint32) string {
		if ino == 3 {
			return "host"
		}
		return ""
	}
	drop := func(netns string, ino uint32, src, dst string) metrics.Outcome {
		return metrics.Outcome{Verdict: journey.Dropped, Reason: "NETFILTER_DROP", Netns: netns, NetnsInode: ino, Src: src, Dst: dst}
	}
	for _, c := range []struct {
		name      string
		in        metrics.Outcome
		pod, netn string
	}{
		{"in the pod", drop("ino:7", 7, "10.244.1.5", "10.244.2.9"), "default/web", "ino:7"},
		{"from a pod", drop("ino:3", 3, "10.244.1.5", "10.244.2.9"), "default/client", "host"},
		{"to a pod", drop("host", 3, "192.0.2.1", "10.244.2.9"), "kube-system/coredns", "host"},
		{"no pod", drop("host", 3, "192.0.2.1", "192.0.2.2"), "", "host"},
		{"delivered", metrics.Outcome{Verdict: journey.Delivered, Netns: "ino:7", NetnsInode: 7, Src: "10.244.1.5"}, "", "ino:7"},
	} {
		got := chargePod(c.in, name, pods)
		if got.Pod != c.pod || got.Netns != c.netn {
			t.Errorf("%s: pod %q netns %q, want %q %q", c.name, got.Pod, got.Netns, c.pod, c.netn)
		}
	}
}
