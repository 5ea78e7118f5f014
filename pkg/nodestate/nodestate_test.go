package nodestate

import (
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os"
	"os/exec"
	"testing"
)

// A veth's peer in another namespace is found through IFLA_LINK, a tun
// device reads as "tuntap", lo as a loopback "device".
func TestPrivVethPeerAndTun(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("SKBTRAIL_REQUIRE_PRIVILEGED") == "1" {
			t.Fatal("needs root")
		}
		t.Skip("needs root")
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	a, r := "nst"+hex.EncodeToString(b[:])+"a", "nst"+hex.EncodeToString(b[:])+"r"
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	for _, ns := range []string{a, r} {
		ip("netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	}
	ip("-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "ra", "netns", r)
	ip("-n", a, "tuntap", "add", "dev", "nic0", "mode", "tun")
	ip("-n", a, "link", "set", "nic0", "up")
	ip("-n", a, "route", "add", "203.0.113.0/24", "dev", "nic0")

	na, err := ReadNetns("/run/netns/" + a)
	if err != nil {
		t.Fatal(err)
	}
	nr, err := ReadNetns("/run/netns/" + r)
	if err != nil {
		t.Fatal(err)
	}
	eth0, _ := na.Link("eth0")
	nic0, _ := na.Link("nic0")
	lo, _ := na.Link("lo")
	if eth0 == nil || nic0 == nil || lo == nil {
		t.Fatalf("links %+v", na.Links)
	}
	if nic0.Type != "tuntap" || !lo.Loopback || lo.Type != "device" || eth0.Loopback {
		t.Errorf("nic0 %+v lo %+v", nic0, lo)
	}
	if r, ok := na.RouteTo(netip.MustParseAddr("203.0.113.80")); !ok || r.Dev != "nic0" {
		t.Errorf("route to 203.0.113.80: %+v %v", r, ok)
	}
	if r, ok := na.RouteThrough(netip.MustParseAddr("203.0.113.80"), "eth0"); ok {
		t.Errorf("route through eth0 to 203.0.113.80: %+v", r)
	}
	na.Name, nr.Name = a, r
	alone := &State{Namespaces: map[uint32]*Netns{1: na}}
	if _, _, ok := alone.VethPeer(na, eth0); ok || eth0.ParentIndex == 0 {
		t.Errorf("peer of eth0 found without its namespace (ParentIndex %d)", eth0.ParentIndex)
	}
	both := &State{Namespaces: map[uint32]*Netns{1: na, 2: nr}}
	if ns, p, ok := both.VethPeer(na, eth0); !ok || ns != nr || p.Name != "ra" {
		t.Errorf("peer of eth0: %v %+v %v", ns, p, ok)
	}
}
