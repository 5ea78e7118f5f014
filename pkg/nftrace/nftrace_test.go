package nftrace

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/skbtrail/skbtrail/netnsutil"
)

var update = flag.Bool("update", false, "write captured trace messages as fuzz seeds under testdata")

// labNetns makes a throwaway namespace with lo up; removed at cleanup.
func labNetns(t *testing.T) (string, int) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("SKBTRAIL_REQUIRE_PRIVILEGED") == "1" {
			t.Fatal("needs root (network namespaces)")
		}
		t.Skip("needs root (network namespaces)")
	}
	var rnd [3]byte
	_, _ = rand.Read(rnd[:])
	name := "sbt-nftrace-" + hex.EncodeToString(rnd[:])
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v %s", err, out)
	}
	f, err := os.Open("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return name, int(f.Fd())
}

func nft(t *testing.T, ns, script string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v %s", err, out)
	}
}

// sendUDP sends one datagram from sport to 127.0.0.1:dport inside ns.
func sendUDP(t *testing.T, ns string, sport, dport int) {
	t.Helper()
	err := netnsutil.Do("/run/netns/"+ns, func() error {
		c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sport}, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: dport})
		if err != nil {
			return err
		}
		defer c.Close()
		// a drop in OUTPUT fails the write (EPERM): that is the point
		if _, err := c.Write([]byte("skbtrail")); err != nil && !errors.Is(err, unix.EPERM) {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestMarkerAndListener(t *testing.T) {
	ns, fd := labNetns(t)
	nft(t, ns, `table inet sbt_t {
	set blocked { type ipv4_addr; elements = { 127.0.0.1 } }
	chain out { type filter hook output priority 0; policy accept;
		udp dport 9999 meta mark 0 ip daddr @blocked drop
		udp dport 9998 drop
	}
}`)
	raw, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: fd})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if err := raw.JoinGroup(unix.NFNLGRP_NFTRACE); err != nil {
		t.Fatal(err)
	}
	l, err := Listen(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	m, err := NewMarker(fd, Match{Proto: unix.IPPROTO_UDP, Dst: netip.MustParsePrefix("127.0.0.0/8"), Sport: 4000})
	if err != nil {
		t.Fatal(err)
	}
	sendUDP(t, ns, 4000, 9999) // traced, dropped by the set rule
	sendUDP(t, ns, 4001, 9998) // not traced: another source port
	want := Tuple{Proto: unix.IPPROTO_UDP, Src: netip.MustParseAddr("127.0.0.1"), Dst: netip.MustParseAddr("127.0.0.1"), Sport: 4000, Dport: 9999}
	ev, ok := l.FindDrop(func(e Event) bool { return e.HasPacket && e.Packet == want }, 2*time.Second)
	if !ok {
		t.Fatalf("no drop event for %+v (events %d)", want, l.Events.Load())
	}
	if ev.Table != "sbt_t" || ev.Chain != "out" || ev.Kind != KindRule || ev.Handle == 0 || ev.BaseChain != "out" || ev.Family != unix.NFPROTO_INET {
		t.Errorf("event %+v, want rule drop in inet sbt_t out", ev)
	}
	if _, ok := l.FindDrop(func(e Event) bool { return e.Packet.Sport == 4001 }, 200*time.Millisecond); ok {
		t.Errorf("the untraced flow was traced")
	}
	// the chain policy
	nft(t, ns, `table inet sbt_t {
	chain out2 { type filter hook output priority 10; policy drop;
	}
}`)
	sendUDP(t, ns, 4000, 7777)
	ev, ok = l.FindDrop(func(e Event) bool { return e.Packet.Dport == 7777 }, 2*time.Second)
	if !ok || ev.Kind != KindPolicy || ev.Chain != "out2" || !ev.Drops() {
		t.Errorf("policy drop event %+v %v", ev, ok)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("ip", "netns", "exec", ns, "nft", "list", "tables").CombinedOutput()
	if strings.Contains(string(out), "skbtrail_trace") {
		t.Errorf("marking table left behind: %s", out)
	}
	if *update {
		saveSeeds(t, raw)
	}
}

// saveSeeds writes the trace messages raw received as fuzz seeds.
func saveSeeds(t *testing.T, raw *netlink.Conn) {
	_ = raw.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		msgs, err := raw.Receive()
		if err != nil {
			break
		}
		for _, m := range msgs {
			if !IsTrace(m.Header.Type) {
				continue
			}
			n++
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", m.Data)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("captured-%02d", n)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("saved %d captured messages", n)
}

func TestMarkerOwnerFlag(t *testing.T) {
	ns, fd := labNetns(t)
	m, err := NewMarker(fd, Match{Proto: unix.IPPROTO_TCP, SYNOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "table", "inet", m.Table).CombinedOutput()
	if err != nil {
		t.Fatalf("%v %s", err, out)
	}
	for _, want := range []string{"flags owner", "hook prerouting priority -350", "hook output priority -350", "meta nftrace set 1"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("marking table lacks %q:\n%s", want, out)
		}
	}
	m.Close()
}

// Start: nothing in a namespace without tables; one socket that marks,
// listens and takes the table away when closed.
func TestStart(t *testing.T) {
	ns, fd := labNetns(t)
	m := Match{Proto: unix.IPPROTO_UDP, Sport: 4100}
	tr, err := Start(fd, m)
	if err != nil || tr != nil {
		t.Fatalf("no tables: %+v %v, want nothing", tr, err)
	}
	nft(t, ns, `table ip sbt_s {
	chain out { type filter hook output priority 0; policy accept;
		udp dport 9997 drop
	}
}`)
	if tr, err = Start(fd, m); err != nil || tr == nil {
		t.Fatalf("with a table: %v", err)
	}
	sendUDP(t, ns, 4100, 9997)
	ev, ok := tr.FindDrop(func(e Event) bool { return e.Packet.Dport == 9997 }, 2*time.Second)
	if !ok || ev.Table != "sbt_s" || ev.Family != unix.NFPROTO_IPV4 || ev.Kind != KindRule {
		t.Errorf("drop %+v %v", ev, ok)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("ip", "netns", "exec", ns, "nft", "list", "tables").CombinedOutput()
	if strings.Contains(string(out), MarkerPrefix) {
		t.Errorf("marking table left behind: %s", out)
	}
}
