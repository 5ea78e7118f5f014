package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skbtrail/skbtrail/netnsutil"
	"github.com/skbtrail/skbtrail/pkg/resolvconf"
)

var iptablesVariants = []string{"iptables-nft", "iptables-legacy"}

func requireTool(t *testing.T, bin string) {
	t.Helper()
	if _, err := exec.LookPath(bin); err != nil {
		if os.Getenv(RequirePrivilegedEnv) == "1" {
			t.Fatalf("%s not installed: %v", bin, err)
		}
		t.Skipf("%s not installed: %v", bin, err)
	}
}

func assertGone(t *testing.T, l *Lab) {
	t.Helper()
	for _, name := range l.Namespaces() {
		if _, err := os.Lstat(NetnsDir + "/" + name); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("netns %s still present after Down (stat err %v)", name, err)
		}
	}
}

func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

// TestLab covers the healthy path, the forward-drop fault and teardown for
// both iptables backends.
func TestLab(t *testing.T) {
	RequirePrivileged(t)
	for _, ipt := range iptablesVariants {
		t.Run(ipt, func(t *testing.T) {
			t.Parallel()
			requireTool(t, ipt)
			ctx := t.Context()
			l := NewForTest(t, Config{Iptables: ipt})
			t.Logf("%s", l)

			for _, name := range l.Namespaces() {
				if !strings.HasPrefix(name, l.Prefix+"-") {
					t.Errorf("netns %q lacks prefix %q", name, l.Prefix)
				}
				if _, err := os.Lstat(NetnsDir + "/" + name); err != nil {
					t.Errorf("netns %s missing: %v", name, err)
				}
			}

			// The kube-proxy rules went through the configured backend.
			out, err := l.Run(l.NodeA, ipt+"-save", "-t", "nat")
			if err != nil {
				t.Fatalf("save: %v", err)
			}
			wantDNAT := "-A " + l.WebService.SepChain + " -p tcp -m tcp -j DNAT --to-destination 10.244.1.2:80"
			if !strings.Contains(out, wantDNAT) {
				t.Errorf("%s-save output lacks %q:\n%s", ipt, wantDNAT, out)
			}
			if !strings.Contains(out, "-A "+l.DNSService.SepChain+" -p udp -m udp -j DNAT --to-destination 10.244.1.2:53") {
				t.Errorf("DNS DNAT rule missing:\n%s", out)
			}

			// Healthy: through DNAT + VXLAN + router, and pod to pod.
			if err := l.Dial(ctx, l.PodA, "10.96.0.100:80", 5*time.Second); err != nil {
				t.Fatalf("healthy dial to ClusterIP: %v", err)
			}
			if err := l.Dial(ctx, RolePodA, "10.244.1.2:80", 5*time.Second); err != nil {
				t.Fatalf("healthy dial to pod-b: %v", err)
			}
			// Full-sized segments both ways.
			if err := l.Echo(ctx, l.PodA, l.WebService.Addr(), payload(256<<10), 10*time.Second); err != nil {
				t.Fatalf("healthy echo: %v", err)
			}
			// The node itself reaches the service too (OUTPUT chain, masqueraded).
			if err := l.Dial(ctx, l.NodeA, "10.96.0.100:80", 5*time.Second); err != nil {
				t.Errorf("dial ClusterIP from node-a: %v", err)
			}

			if err := l.ApplyFault("forward-drop"); err != nil {
				t.Fatalf("apply forward-drop: %v", err)
			}
			start := time.Now()
			err = l.Dial(ctx, l.PodA, "10.96.0.100:80", 2*time.Second)
			if err == nil {
				t.Fatal("dial to ClusterIP succeeded despite forward-drop")
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("failing dial took %v, want <= ~2s", d)
			}
			t.Logf("forward-drop: dial failed as expected after %v: %v", time.Since(start).Round(time.Millisecond), err)

			if err := l.Down(); err != nil {
				t.Fatalf("down: %v", err)
			}
			assertGone(t, l)
			if err := l.Down(); err != nil {
				t.Errorf("second down: %v", err)
			}
			if err := l.Dial(ctx, l.PodA, "10.96.0.100:80", time.Second); err == nil {
				t.Error("dial after Down succeeded")
			}
		})
	}
}

// TestFaults applies every fault to its own lab and checks its effect on a
// TCP connection from pod A to the ClusterIP.
func TestFaults(t *testing.T) {
	RequirePrivileged(t)
	type expect int
	const (
		timeout expect = iota // SYN vanishes
		refused               // RST comes back
		works                 // handshake works
	)
	cases := map[string]expect{
		"none":                     works,
		"forward-drop":             timeout,
		"forward-drop-rule-nft":    timeout,
		"reject-rst":               refused,
		"no-dnat":                  timeout,
		"wrong-vtep":               timeout,
		"no-listener":              refused,
		"no-route":                 timeout,
		"small-mtu":                works,
		"wrong-src":                timeout,
		"rp-filter":                timeout,
		"silent-dns":               works, // TCP is unaffected; see TestSilentDNS
		"nic-exit":                 timeout,
		"service-no-endpoints":     refused, // ICMP port unreachable from node-a
		"service-no-endpoints-nft": refused,
		"listener-loopback":        refused,
		"accept-queue-full":        timeout,
		"udp-rcvbuf-full":          works, // TCP is unaffected; see below
		"qdisc-full":               timeout,
		"docker-forward-drop":      timeout,
		"neigh-missing":            timeout,
		"pod-dns-upstream":         works, // TCP to the Service is unaffected; see below
		"tc-drop-tcx":              timeout,
		"tc-drop-clsact":           timeout,
		"xdp-drop-underlay":        timeout,
		"xdp-pass-underlay":        works,
		"xdp-drop-generic":         timeout,
		"redirect-peer":            works,
		"flanneld-stopped":         timeout, // real flanneld only
		"flanneld-stale-peer":      timeout, // real flanneld only
	}
	for _, f := range Faults() {
		if _, ok := cases[f.Name]; !ok {
			t.Errorf("fault %s has no test case", f.Name)
		}
	}
	// Faults implemented with iptables run against both backends.
	usesIptables := map[string]bool{"forward-drop": true, "reject-rst": true, "no-dnat": true, "wrong-src": true, "service-no-endpoints": true, "service-no-endpoints-nft": true, "docker-forward-drop": true}
	// Faults that involve the VXLAN device run in the calico flavour too.
	usesVXLAN := map[string]bool{"wrong-vtep": true, "no-route": true, "small-mtu": true, "wrong-src": true, "rp-filter": true, "nic-exit": true,
		"tc-drop-tcx": true, "xdp-drop-underlay": true, "redirect-peer": true, "neigh-missing": true}
	// Faults of the real flanneld's lab only.
	realFlannel := map[string]bool{"flanneld-stopped": true, "flanneld-stale-peer": true}
	type run struct{ name, ipt, flavor string }
	var runs []run
	for name := range cases {
		if realFlannel[name] {
			runs = append(runs, run{name, "iptables-nft", FlannelReal})
			continue
		}
		runs = append(runs, run{name, "iptables-nft", ""})
		if usesIptables[name] {
			runs = append(runs, run{name, "iptables-legacy", ""})
		}
		if usesVXLAN[name] {
			runs = append(runs, run{name, "iptables-nft", FlavorCalico})
		}
	}
	for _, r := range runs {
		name, want := r.name, cases[r.name]
		sub := name + "/" + r.ipt
		if r.flavor != "" {
			sub += "/" + r.flavor
		}
		t.Run(sub, func(t *testing.T) {
			t.Parallel()
			requireTool(t, r.ipt)
			if name == "forward-drop-rule-nft" || name == "service-no-endpoints-nft" {
				requireTool(t, "nft")
			}
			ctx := t.Context()
			cfg := Config{Iptables: r.ipt, Flavor: r.flavor}
			if r.flavor == FlannelReal {
				cfg = Config{Iptables: r.ipt, Flannel: FlannelReal}
			}
			l := NewForTest(t, cfg)
			var rpBefore int64
			if name == "rp-filter" {
				rpBefore = procCounter(t, l, l.NodeB, "/proc/net/netstat", "TcpExt", "IPReversePathFilter")
			}
			if err := l.Verify(ctx, 5*time.Second); err != nil {
				t.Fatalf("healthy lab: %v", err)
			}
			if err := l.ApplyFault(name); err != nil {
				t.Fatalf("apply: %v", err)
			}
			start := time.Now()
			err := l.Dial(ctx, l.PodA, l.WebService.Addr(), 2*time.Second)
			elapsed := time.Since(start).Round(time.Millisecond)
			t.Logf("dial after %s: %v after %v", name, err, elapsed)
			switch want {
			case timeout:
				if err == nil {
					t.Fatal("dial succeeded, want failure")
				}
				if !isTimeout(err) {
					t.Errorf("dial error %v, want a timeout", err)
				}
			case refused:
				if !errors.Is(err, syscall.ECONNREFUSED) {
					t.Fatalf("dial error %v, want connection refused", err)
				}
				if elapsed > time.Second {
					t.Errorf("refusal took %v", elapsed)
				}
			case works:
				if err != nil {
					t.Fatalf("dial failed: %v", err)
				}
			}

			switch name {
			case "small-mtu":
				testSmallMTU(t, l)
			case "wrong-vtep":
				out, err := l.Run(l.NodeA, "bridge", "fdb", "show", "dev", l.VXLANDevice)
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(out, "dst "+BogusVTEP) || strings.Contains(out, "dst "+NodeBIP) {
					t.Errorf("unexpected fdb after wrong-vtep:\n%s", out)
				}
			case "no-dnat":
				// The DNS service is untouched.
				out, err := l.Run(l.NodeA, l.Iptables+"-save", "-t", "nat")
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(out, "--to-destination 10.244.1.2:80") || !strings.Contains(out, "--to-destination 10.244.1.2:53") {
					t.Errorf("unexpected nat table after no-dnat:\n%s", out)
				}
			case "service-no-endpoints":
				out, err := l.Run(l.NodeA, l.Iptables+"-save")
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(out, "--to-destination 10.244.1.2:80") || !strings.Contains(out, `--comment "default/web:http has no endpoints"`) ||
					!strings.Contains(out, "--to-destination 10.244.1.2:53") {
					t.Errorf("unexpected rules after service-no-endpoints:\n%s", out)
				}
			case "udp-rcvbuf-full":
				if _, err := queryUDP(t, l, l.PodA, l.DNSService.Addr(), time.Second); !isTimeout(err) {
					t.Errorf("DNS query after udp-rcvbuf-full: %v, want a timeout", err)
				}
			case "pod-dns-upstream":
				ino, err := netnsutil.InodeOf(NetnsPath(l.PodA))
				if err != nil {
					t.Fatal(err)
				}
				conf, pid, err := resolvconf.OfNetns("", uint64(ino))
				if err != nil || len(conf.Nameservers) != 1 || conf.Nameservers[0].String() != UpstreamDNS {
					t.Errorf("pod-a's resolv.conf (pid %d): %+v %v", pid, conf, err)
				}
				if b, _ := os.ReadFile("/etc/resolv.conf"); strings.Contains(string(b), UpstreamDNS) {
					t.Errorf("the host's /etc/resolv.conf changed")
				}
			case "listener-loopback":
				if err := l.Dial(ctx, l.PodB, "127.0.0.1:80", 2*time.Second); err != nil {
					t.Errorf("dial 127.0.0.1:80 inside pod-b: %v", err)
				}
			case "service-no-endpoints-nft":
				out, err := l.Run(l.NodeA, "nft", "list", "map", "ip", "kube-proxy", "no-endpoint-services")
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(out, `10.96.0.100 . tcp . 80 comment "default/web:http" : goto reject-chain`) {
					t.Errorf("unexpected no-endpoint-services map:\n%s", out)
				}
			case "wrong-src":
				checkWrongSrc(t, l)
			case "nic-exit":
				checkNICExit(t, l)
			case "rp-filter":
				// The SYN (and its retransmission) failed node-b's strict
				// reverse path check on the VXLAN device.
				after := procCounter(t, l, l.NodeB, "/proc/net/netstat", "TcpExt", "IPReversePathFilter")
				t.Logf("node-b IPReversePathFilter: %d -> %d", rpBefore, after)
				if after <= rpBefore {
					t.Errorf("node-b IPReversePathFilter did not rise (%d -> %d)", rpBefore, after)
				}
				out, err := l.Run(l.NodeB, "ip", "route", "show", "10.244.0.0/24")
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(out, "via "+RouterBIP+" dev eth0") {
					t.Errorf("node-b route to 10.244.0.0/24 after rp-filter: %q", out)
				}
			case "silent-dns":
				if _, err := queryUDP(t, l, l.PodA, l.DNSService.Addr(), time.Second); !isTimeout(err) {
					t.Errorf("DNS query after silent-dns: %v, want a timeout", err)
				}
			}
		})
	}
}

// checkWrongSrc checks the state the "wrong-src" fault leaves: node-a's
// VXLAN device re-created with local 192.0.2.11 and everything else as
// before, and the router's anti-spoofing rule having dropped the SYN.
func checkWrongSrc(t *testing.T, l *Lab) {
	t.Helper()
	out, err := l.Run(l.NodeA, "ip", "-d", "link", "show", l.VXLANDevice)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{FlannelMACA, fmt.Sprintf("vxlan id %d local %s dev eth0", l.VNI, WrongSrcIP),
		fmt.Sprintf("dstport %d nolearning", l.VXLANPort), "mtu 1450"} {
		if !strings.Contains(out, want) {
			t.Errorf("node-a %s lacks %q:\n%s", l.VXLANDevice, want, out)
		}
	}
	checks := map[string]string{
		"ip -4 addr show dev eth0":             "inet " + WrongSrcIP + "/24",
		"ip -4 addr show dev " + l.VXLANDevice: "inet 10.244.0.0/32",
		"ip route show 10.244.1.0/24":          "via 10.244.1.0 dev " + l.VXLANDevice + " onlink",
		"ip neigh show dev " + l.VXLANDevice:   "10.244.1.0 lladdr " + FlannelMACB + " PERMANENT",
		"bridge fdb show dev " + l.VXLANDevice: FlannelMACB + " dst " + NodeBIP,
	}
	for cmd, want := range checks {
		out, err := l.Run(l.NodeA, strings.Fields(cmd)...)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, want) {
			t.Errorf("node-a %s: want %q in:\n%s", cmd, want, out)
		}
	}
	out, err = l.Run(l.NodeB, "bridge", "fdb", "show", "dev", l.VXLANDevice)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, FlannelMACA+" dst "+NodeAIP) {
		t.Errorf("node-b fdb lost %s dst %s:\n%s", FlannelMACA, NodeAIP, out)
	}
	// The anti-spoofing rule in the router matched the outer packets.
	out, err = l.Run(l.Router, l.Iptables, "-w", "10", "-L", "FORWARD", "-v", "-x", "-n")
	if err != nil {
		t.Fatal(err)
	}
	dropped := int64(-1)
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) > 2 && f[2] == "DROP" && strings.Contains(line, WrongSrcIP) {
			dropped, _ = strconv.ParseInt(f[0], 10, 64)
		}
	}
	t.Logf("router FORWARD -s %s DROP: %d packets", WrongSrcIP, dropped)
	if dropped <= 0 {
		t.Errorf("router anti-spoofing rule dropped nothing:\n%s", out)
	}
}

// checkNICExit checks the state the "nic-exit" fault leaves: nic0 is a
// tun device under node-a's VXLAN device, node-b's underlay address and
// ExitProbeIP are routed through it, and the lab's reader took the SYN's
// outer packet off it.
func checkNICExit(t *testing.T, l *Lab) {
	t.Helper()
	checks := map[string]string{
		"ip -d link show " + ExitDevice:        "tun type tun pi off",
		"ip -d link show " + l.VXLANDevice:     "local " + NodeAIP + " dev " + ExitDevice,
		"ip route get " + NodeBIP:              "dev " + ExitDevice,
		"ip route get " + ExitProbeIP:          "dev " + ExitDevice,
		"bridge fdb show dev " + l.VXLANDevice: FlannelMACB + " dst " + NodeBIP,
	}
	for cmd, want := range checks {
		out, err := l.Run(l.NodeA, strings.Fields(cmd)...)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, want) {
			t.Errorf("node-a %s: want %q in:\n%s", cmd, want, out)
		}
	}
	if n := l.ExitFrames(); n == 0 {
		t.Errorf("nothing was read from %s", ExitDevice)
	} else {
		t.Logf("%d frames read from %s", n, ExitDevice)
	}
	if err := l.StopServer("tun", 0); err != nil {
		t.Fatal(err)
	}
	// closing the file descriptor removes the device
	if out, err := l.Run(l.NodeA, "ip", "link", "show", ExitDevice); err == nil {
		t.Errorf("%s still exists after its reader closed:\n%s", ExitDevice, out)
	}
}

// procCounter reads one counter from a /proc/net/snmp style file (pairs of
// "Proto: names..." / "Proto: values..." lines) in namespace ns.
func procCounter(t *testing.T, l *Lab, ns, file, proto, field string) int64 {
	t.Helper()
	out, err := l.Run(ns, "cat", file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out, "\n")
	for i := 0; i+1 < len(lines); i++ {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != proto+":" || len(values) != len(names) || values[0] != names[0] {
			continue
		}
		for j, n := range names {
			if n == field {
				v, err := strconv.ParseInt(values[j], 10, 64)
				if err != nil {
					t.Fatalf("%s %s %s: %v", file, proto, field, err)
				}
				return v
			}
		}
	}
	t.Fatalf("no %s %s in %s of %s:\n%s", proto, field, file, ns, out)
	return 0
}

// queryUDP sends a small DNS-like query from namespace from to addr and
// waits up to timeout for an answer.
func queryUDP(t *testing.T, l *Lab, from, addr string, timeout time.Duration) ([]byte, error) {
	t.Helper()
	ns, err := l.resolveNetns(from)
	if err != nil {
		t.Fatal(err)
	}
	var c net.Conn
	if err := InNetns(ns, func() error {
		var err error
		c, err = net.Dial("udp4", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	query := []byte("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01")
	if _, err := c.Write(query); err != nil {
		return nil, err
	}
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	return buf[:n], err
}

// TestSilentDNS checks the "silent-dns" fault: before it, nothing listens
// on pod-b:53 and the query through the DNS ClusterIP is refused (ICMP port
// unreachable, reverse-NATed on node-a); with it, the query reaches pod-b's
// socket and no answer ever comes.
func TestSilentDNS(t *testing.T) {
	l := NewForTest(t, Config{})
	_, err := queryUDP(t, l, l.PodA, l.DNSService.Addr(), 2*time.Second)
	t.Logf("query before the fault: %v", err)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("query before silent-dns: %v, want connection refused", err)
	}
	if err := l.ApplyFault("silent-dns"); err != nil {
		t.Fatal(err)
	}
	if err := l.ApplyFault("silent-dns"); err != nil {
		t.Errorf("applying silent-dns twice: %v", err)
	}
	before := procCounter(t, l, l.PodB, "/proc/net/snmp", "Udp", "InDatagrams")
	start := time.Now()
	reply, err := queryUDP(t, l, l.PodA, l.DNSService.Addr(), 1500*time.Millisecond)
	t.Logf("query with silent-dns: %q, %v after %v", reply, err, time.Since(start).Round(time.Millisecond))
	if !isTimeout(err) {
		t.Errorf("query with silent-dns: %v, want a timeout", err)
	}
	if after := procCounter(t, l, l.PodB, "/proc/net/snmp", "Udp", "InDatagrams"); after != before+1 {
		t.Errorf("pod-b Udp InDatagrams %d -> %d, want one query delivered", before, after)
	}
	// The fault keeps a silent server started earlier.
	l2 := NewForTest(t, Config{})
	if err := l2.StartSilentUDP(53); err != nil {
		t.Fatal(err)
	}
	if err := l2.ApplyFault("silent-dns"); err != nil {
		t.Errorf("silent-dns with a silent server already running: %v", err)
	}
}

// TestSmallMTUDatagram sends DF datagrams from pod-a to pod-b:53 under the
// "small-mtu" fault: the first 1400 byte one (1478 byte outer packet) dies
// in the router (IP FragFails, ICMP fragmentation-needed to node-a), later
// ones die on node-a itself when the VXLAN device's outer packet exceeds
// the learned path MTU 1400; pod-a hears nothing. Small ones get through.
func TestSmallMTUDatagram(t *testing.T) {
	ctx := t.Context()
	l := NewForTest(t, Config{})
	if err := l.StartSilentUDP(53); err != nil {
		t.Fatal(err)
	}
	dst := l.PodBIP + ":53"
	delivered := func() int64 {
		return procCounter(t, l, l.PodB, "/proc/net/snmp", "Udp", "InDatagrams")
	}
	fragFails := func(ns string) int64 {
		return procCounter(t, l, ns, "/proc/net/snmp", "Ip", "FragFails")
	}
	// send sends one datagram and reports whether pod-b's socket got it.
	send := func(size int, df bool) bool {
		t.Helper()
		before := delivered()
		if err := l.SendUDP(ctx, l.PodA, dst, size, df); err != nil {
			t.Fatalf("SendUDP %d df=%v: %v", size, df, err)
		}
		deadline := time.Now().Add(500 * time.Millisecond)
		for time.Now().Before(deadline) {
			if delivered() > before {
				return true
			}
			time.Sleep(20 * time.Millisecond)
		}
		return false
	}
	if !send(1400, true) {
		t.Fatal("healthy lab: 1400 byte DF datagram not delivered")
	}
	// Larger than pod-a's eth0 (1450 - 28 bytes of headers): refused locally.
	if err := l.SendUDP(ctx, l.PodA, dst, PodMTU-27, true); !errors.Is(err, syscall.EMSGSIZE) {
		t.Errorf("SendUDP %d bytes with DF: %v, want EMSGSIZE", PodMTU-27, err)
	}
	if err := l.SendUDP(ctx, "elsewhere", dst, 10, true); err == nil {
		t.Error("SendUDP accepted a namespace outside the lab")
	}

	if err := l.ApplyFault("small-mtu"); err != nil {
		t.Fatal(err)
	}
	out, err := l.Run(l.NodeA, "ip", "-d", "link", "show", l.VXLANDevice)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "df set") {
		t.Skipf("%s on node-a has no \"df set\" (old kernel or iproute2): the router fragments instead of dropping", l.VXLANDevice)
	}
	if !send(1000, true) {
		t.Error("small-mtu: 1000 byte DF datagram (1078 byte outer packet) not delivered")
	}
	routerFF, nodeAFF := fragFails(l.Router), fragFails(l.NodeA)
	if send(1400, true) {
		t.Fatal("small-mtu: 1400 byte DF datagram delivered")
	}
	if got := fragFails(l.Router); got != routerFF+1 {
		t.Errorf("router IP FragFails %d -> %d, want the first oversized outer packet dropped there", routerFF, got)
	}
	routerFF = fragFails(l.Router)
	if send(1400, true) {
		t.Fatal("small-mtu: second 1400 byte DF datagram delivered")
	}
	if got := fragFails(l.NodeA); got != nodeAFF+1 {
		t.Errorf("node-a IP FragFails %d -> %d, want the second one dropped on node-a (learned PMTU)", nodeAFF, got)
	}
	if got := fragFails(l.Router); got != routerFF {
		t.Errorf("router IP FragFails %d -> %d, want no more drops there", routerFF, got)
	}
	// "df set" puts DF on every outer packet, whatever the inner header says.
	if send(1400, false) {
		t.Error("small-mtu: 1400 byte datagram without DF delivered although the outer header has DF")
	}
	if got := procCounter(t, l, l.PodA, "/proc/net/snmp", "Icmp", "InDestUnreachs"); got != 0 {
		t.Errorf("pod-a received %d ICMP destination unreachable, want none (black hole)", got)
	}
	out, _ = l.Run(l.NodeA, "ip", "route", "get", NodeBIP)
	t.Logf("node-a: ip route get %s: %s", NodeBIP, strings.Join(strings.Fields(out), " "))
}

// TestCalico checks the calico flavour: vxlan.calico, VNI 4096, UDP 4789,
// the same topology and a working ClusterIP.
func TestCalico(t *testing.T) {
	ctx := t.Context()
	l := NewForTest(t, Config{Flavor: FlavorCalico})
	t.Logf("%s", l)
	if l.Flavor != FlavorCalico || l.VXLANDevice != "vxlan.calico" || l.VXLANPort != 4789 || l.VNI != 4096 {
		t.Fatalf("calico lab: flavor %q device %q port %d vni %d", l.Flavor, l.VXLANDevice, l.VXLANPort, l.VNI)
	}
	for _, c := range []struct{ ns, mac, local string }{{l.NodeA, FlannelMACA, NodeAIP}, {l.NodeB, FlannelMACB, NodeBIP}} {
		out, err := l.Run(c.ns, "ip", "-d", "link", "show", "vxlan.calico")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{c.mac, "vxlan id 4096 local " + c.local + " dev eth0", "dstport 4789 nolearning", "mtu 1450"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s vxlan.calico lacks %q:\n%s", c.ns, want, out)
			}
		}
		if _, err := l.Run(c.ns, "ip", "link", "show", VXLANDevice); err == nil {
			t.Errorf("%s has a %s device in the calico flavour", c.ns, VXLANDevice)
		}
	}
	out, err := l.Run(l.NodeA, "ip", "route", "show", "10.244.1.0/24")
	if err != nil || !strings.Contains(out, "via 10.244.1.0 dev vxlan.calico onlink") {
		t.Errorf("node-a route: %q %v", out, err)
	}
	if !strings.Contains(l.Describe(), "vxlan.calico") || strings.Contains(l.Describe(), "flannel.1") {
		t.Errorf("Describe:\n%s", l.Describe())
	}
	if err := l.Verify(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := l.Dial(ctx, l.PodA, l.WebService.Addr(), 5*time.Second); err != nil {
		t.Fatalf("dial ClusterIP: %v", err)
	}
	// The overlay really is VXLAN on UDP 4789: node-b decapsulated it.
	before := procCounter(t, l, l.NodeB, "/proc/net/snmp", "Udp", "InDatagrams")
	if err := l.Echo(ctx, l.PodA, l.WebService.Addr(), payload(64<<10), 10*time.Second); err != nil {
		t.Fatalf("echo: %v", err)
	}
	if after := procCounter(t, l, l.NodeB, "/proc/net/snmp", "Udp", "InDatagrams"); after <= before {
		t.Errorf("node-b Udp InDatagrams %d -> %d: no VXLAN traffic", before, after)
	}
}

func TestFaultNoneAndProbeService(t *testing.T) {
	l := newLab(Config{Prefix: "x", Iptables: "iptables-nft"})
	if err := l.ApplyFault("none"); err != nil {
		t.Errorf("ApplyFault(none): %v", err)
	}
	if !slices.Contains(FaultNames(), "none") {
		t.Error("none is not listed")
	}
	for _, c := range []struct {
		faults []string
		want   Service
	}{
		{nil, l.WebService},
		{[]string{"forward-drop"}, l.WebService},
		{[]string{"silent-dns"}, l.DNSService},
		{[]string{"small-mtu", "silent-dns"}, l.DNSService},
		{[]string{"small-mtu,silent-dns"}, l.DNSService},
	} {
		if got := l.ProbeService(c.faults...); got != c.want {
			t.Errorf("ProbeService(%q) = %s, want %s", c.faults, got.Addr(), c.want.Addr())
		}
	}
	if l.Flavor != FlavorFlannel || l.VXLANDevice != VXLANDevice || l.VXLANPort != VXLANPort || l.VNI != VXLANID {
		t.Errorf("default flavour: %q %q %d %d", l.Flavor, l.VXLANDevice, l.VXLANPort, l.VNI)
	}
}

// testSmallMTU checks the effect of the small-mtu fault: with "df set" the
// router drops the first 1500 byte outer packet (ICMP fragmentation-needed
// back to node-a), node-a then drops the following ones itself, and since
// forwarding ignores the learned path MTU (net.ipv4.ip_forward_use_pmtu=0)
// pod-a never hears about it: small exchanges work, bulk data stalls.
func testSmallMTU(t *testing.T, l *Lab) {
	out, err := l.Run(l.NodeA, "ip", "-d", "link", "show", l.VXLANDevice)
	if err != nil {
		t.Fatal(err)
	}
	dfSet := strings.Contains(out, "df set")
	t.Logf("node-a %s: df set: %v", l.VXLANDevice, dfSet)
	for ns, dev := range map[string]string{l.Router: "rb", l.NodeB: "eth0"} {
		out, err := l.Run(ns, "ip", "link", "show", dev)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "mtu 1400") {
			t.Errorf("%s %s: mtu not 1400: %s", ns, dev, out)
		}
	}
	if err := l.Echo(t.Context(), l.PodA, l.WebService.Addr(), payload(1000), 3*time.Second); err != nil {
		t.Errorf("small echo under small-mtu: %v", err)
	}
	err = l.Echo(t.Context(), l.PodA, l.WebService.Addr(), payload(64<<10), 3*time.Second)
	t.Logf("64KiB echo under small-mtu: %v", err)
	if dfSet && err == nil {
		t.Error("64KiB echo succeeded although the underlay MTU is too small and df is set")
	}
	if !dfSet && err != nil {
		t.Errorf("without df the router should fragment, but echo failed: %v", err)
	}
	out, _ = l.Run(l.NodeA, "ip", "route", "get", NodeBIP)
	t.Logf("node-a: ip route get %s: %s", NodeBIP, strings.Join(strings.Fields(out), " "))
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

func TestApplyFaultUnknown(t *testing.T) {
	l := newLab(Config{Prefix: "x", Iptables: "iptables-nft"})
	err := l.ApplyFault("no-such-fault")
	if err == nil {
		t.Fatal("no error for unknown fault")
	}
	for _, name := range FaultNames() {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not list %s", err, name)
		}
	}
}

func TestApplyFaultNeedsRealFlannel(t *testing.T) {
	l := newLab(Config{Prefix: "x", Iptables: "iptables-nft"})
	for _, f := range []string{"flanneld-stopped", "flanneld-stale-peer"} {
		if err := l.ApplyFault(f); err == nil || !strings.Contains(err.Error(), "real flanneld") {
			t.Errorf("%s on the imitation: %v, want an error naming the real flanneld", f, err)
		}
	}
}

func TestRealFlannelScenario(t *testing.T) {
	cfg, faults, notes := RealFlannelScenario(Config{}, []string{"wrong-vtep", "wrong-src", "forward-drop", "no-route", "small-mtu"})
	if cfg.Flannel != FlannelReal || cfg.NodeBPublicIP != UnroutedPublicIP || cfg.NodeASecondIP != WrongSrcIP ||
		!slices.Equal(cfg.NodeAFlannelArgs, []string{"--iface=" + WrongSrcIP, "--public-ip=" + NodeAIP}) || !cfg.NoFlannelForwardRules || !cfg.ConfigFaulty() {
		t.Errorf("config %+v", cfg)
	}
	if !slices.Equal(faults, []string{"forward-drop", "flanneld-stopped", "small-mtu"}) || len(notes) != 4 {
		t.Errorf("faults %v notes %v", faults, notes)
	}
	for _, c := range []Config{{NodeASecondIP: WrongSrcIP}, {NodeAFlannelArgs: []string{"--iface=eth0"}}, {NoFlannelForwardRules: true},
		{NodeBPublicIPv6: UnroutedPublicIPv6, IPv6Underlay: true}, {Flannel: FlannelReal, NodeBPublicIPv6: UnroutedPublicIPv6},
		{Flannel: FlannelReal, DualStack: true}} {
		if _, err := Up(context.Background(), c); err == nil || !strings.Contains(err.Error(), "real flanneld") {
			t.Errorf("%+v: %v, want an error naming the real flanneld", c, err)
		}
	}
	// over IPv6: dual-stack becomes flanneld's IPv6 underlay, wrong-vtep-v6
	// its unrouted --public-ipv6
	cfg, faults, notes = RealFlannelScenario(Config{DualStack: true}, []string{"wrong-vtep-v6", "forward-drop-v6"})
	if !cfg.IPv6Underlay || cfg.NodeBPublicIPv6 != UnroutedPublicIPv6 || !cfg.ConfigFaulty() ||
		!slices.Equal(faults, []string{"forward-drop-v6"}) || len(notes) != 2 {
		t.Errorf("config %+v faults %v notes %v", cfg, faults, notes)
	}
}

func TestConfigValidation(t *testing.T) {
	ctx := context.Background()
	if _, err := Up(ctx, Config{Prefix: "much-too-long-prefix"}); err == nil {
		t.Error("long prefix accepted")
	}
	if _, err := Up(ctx, Config{Prefix: "bad/name"}); err == nil {
		t.Error("bad prefix accepted")
	}
	if _, err := Up(ctx, Config{Iptables: "/bin/false"}); err == nil {
		t.Error("unsupported iptables binary accepted")
	}
	if _, err := Up(ctx, Config{Flavor: "cilium"}); err == nil || !strings.Contains(err.Error(), "flavor") {
		t.Errorf("unsupported flavor: %v", err)
	}
	for _, c := range []Config{
		{Flannel: "fake"},
		{Flannel: FlannelReal, Flavor: FlavorCalico},
		{NodeBPublicIP: UnroutedPublicIP},
	} {
		if _, err := Up(ctx, c); err == nil || !strings.Contains(err.Error(), "flannel") {
			t.Errorf("%+v: %v, want an error about flannel", c, err)
		}
	}
	for range 5 {
		if p := RandomPrefix(); ValidatePrefix(p) != nil || len(p) != 8 || !strings.HasPrefix(p, "st") {
			t.Errorf("bad random prefix %q", p)
		}
	}
	s := newService("default/web:http", "tcp", ClusterIP, 80, PodBIP+":80")
	for _, c := range []string{s.SvcChain, s.SepChain} {
		suffix := c[len("KUBE-SVC-"):]
		if len(suffix) != 16 || strings.ToUpper(suffix) != suffix {
			t.Errorf("chain %q: want 16 uppercase characters after the prefix", c)
		}
	}
}

// TestUpFailureCleansUp makes Up fail late (after all namespaces and rules
// exist) and checks that nothing is left behind, and that Up refuses to
// reuse (and does not delete) an existing namespace.
func TestUpFailureCleansUp(t *testing.T) {
	RequirePrivileged(t)
	ctx := t.Context()
	prefix := RandomPrefix()
	for _, stage := range []string{"before-server", "done"} {
		cfg := Config{Prefix: prefix, testHook: func(s string) error {
			if s == stage {
				return errors.New("injected failure at " + s)
			}
			return nil
		}}
		l, err := Up(ctx, cfg)
		if err == nil {
			l.Down()
			t.Fatalf("Up succeeded despite injected failure at %s", stage)
		}
		t.Logf("Up failed as intended: %v", err)
		if left := ExistingNetns(prefix); len(left) > 0 {
			t.Fatalf("leftover namespaces after failed Up at %s: %v", stage, left)
		}
	}

	// A pre-existing namespace with a lab name blocks Up and survives it.
	name := NetnsName(prefix, RoleRouter)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	if l, err := Up(ctx, Config{Prefix: prefix}); err == nil {
		l.Down()
		t.Fatal("Up reused an existing namespace")
	}
	if got := ExistingNetns(prefix); len(got) != 1 || got[0] != name {
		t.Fatalf("after refused Up: namespaces %v, want just %s", got, name)
	}
	deleted, err := DownPrefix(ctx, prefix)
	if err != nil || len(deleted) != 1 {
		t.Fatalf("DownPrefix: %v %v", deleted, err)
	}
	if left := ExistingNetns(prefix); len(left) > 0 {
		t.Fatalf("DownPrefix left %v", left)
	}
}

// TestDownLeavesReplacedNetns checks that Down does not delete a namespace
// that was removed behind the lab's back and re-created under the same name
// by someone else.
func TestDownLeavesReplacedNetns(t *testing.T) {
	prefix := RandomPrefix()
	first := NewForTest(t, Config{Prefix: prefix})
	if _, err := DownPrefix(t.Context(), prefix); err != nil {
		t.Fatal(err)
	}
	second := NewForTest(t, Config{Prefix: prefix})
	if err := first.Down(); err != nil {
		t.Fatalf("down of first lab: %v", err)
	}
	if got := ExistingNetns(prefix); len(got) != len(Roles()) {
		t.Fatalf("first.Down removed namespaces of the second lab; left: %v", got)
	}
	if err := second.Verify(t.Context(), 5*time.Second); err != nil {
		t.Fatalf("second lab broken after first.Down: %v", err)
	}
	if err := second.Down(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, second)
}

// TestNsIDSurvivesInodeReuse: a namespace deleted and re-created under
// the same name often gets the inode number of the old one back; its nsID
// differs all the same (TestDownLeavesReplacedNetns failed on that).
func TestNsIDSurvivesInodeReuse(t *testing.T) {
	RequirePrivileged(t)
	name := RandomPrefix() + "-reuse"
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	seen := map[uint64]nsID{}
	for range 20 {
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add: %v: %s", err, out)
		}
		id, err := statNetns(name)
		if err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Fatalf("ip netns del: %v: %s", err, out)
		}
		if old, ok := seen[id.ino]; ok {
			if old == id {
				t.Fatalf("two namespaces named %s with inode %d have the same id %+v", name, id.ino, id)
			}
			return
		}
		seen[id.ino] = id
		time.Sleep(50 * time.Millisecond) // the kernel frees a namespace's inode asynchronously
	}
	t.Skip("no inode came back in 20 namespaces")
}

// TestStopServerWaitsForSocket: a listener whose socket has a second
// descriptor (as every child forked by a concurrent exec has until it
// execs) still completes handshakes after this process closed its own;
// StopServer returns only once the socket is gone, so a dial right after
// it is refused (TestFaults/no-listener failed on exactly that).
func TestStopServerWaitsForSocket(t *testing.T) {
	l := NewForTest(t, Config{})
	const port = 8081
	addr := net.JoinHostPort(l.PodBIP, strconv.Itoa(port))
	if err := l.StartTCPEcho(port); err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	ln := l.servers[serverKey("tcp", port)].closer.(*net.TCPListener)
	l.mu.Unlock()
	dup, err := ln.File() // a second descriptor of the same socket
	if err != nil {
		t.Fatal(err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- l.StopServer("tcp", port) }()
	time.Sleep(200 * time.Millisecond)
	if err := l.Dial(t.Context(), l.PodA, addr, time.Second); err != nil {
		t.Errorf("dial while another descriptor holds the socket: %v, want success (the hazard this test is about)", err)
	}
	select {
	case err := <-stopped:
		t.Fatalf("StopServer returned (%v) while the socket still listens", err)
	default:
	}
	dup.Close()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(stopWait + time.Second):
		t.Fatal("StopServer did not return after the last descriptor closed")
	}
	if err := l.Dial(t.Context(), l.PodA, addr, time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial after StopServer: %v, want connection refused", err)
	}
}

// TestSilentUDP checks that the silent DNS backend swallows queries sent to
// the DNS ClusterIP without answering.
func TestSilentUDP(t *testing.T) {
	l := NewForTest(t, Config{})
	if err := l.StartSilentUDP(53); err != nil {
		t.Fatal(err)
	}
	if err := l.StartSilentUDP(53); err == nil {
		t.Error("second StartSilentUDP(53) succeeded")
	}
	// Send a datagram from pod A via the DNS ClusterIP and check pod B's
	// socket received it (its receive counter moves) while nothing returns.
	before := udpInDatagrams(t, l)
	if _, err := l.Run(l.PodA, "bash", "-c", "echo query > /dev/udp/10.96.0.10/53"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for udpInDatagrams(t, l) == before {
		if time.Now().After(deadline) {
			t.Fatal("datagram to 10.96.0.10:53 never reached pod-b")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := l.StopServer("udp", 53); err != nil {
		t.Error(err)
	}
	if err := l.StopServer("udp", 53); !errors.Is(err, ErrNoServer) {
		t.Errorf("second StopServer(udp, 53) = %v, want ErrNoServer", err)
	}
}

func udpInDatagrams(t *testing.T, l *Lab) string {
	t.Helper()
	out, err := l.Run(l.PodB, "cat", "/proc/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out, "\n")
	for i := 0; i+1 < len(lines); i++ {
		if strings.HasPrefix(lines[i], "Udp: InDatagrams") {
			return strings.Fields(lines[i+1])[1]
		}
	}
	t.Fatalf("no Udp line in /proc/net/snmp:\n%s", out)
	return ""
}

// TestInNetnsRestoresThreads checks that switching namespaces leaves no OS
// thread of the process in a lab namespace.
func TestInNetnsRestoresThreads(t *testing.T) {
	l := NewForTest(t, Config{})
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	inside := map[string]bool{}
	for i := range 20 {
		ns := l.Namespaces()[i%len(l.Namespaces())]
		err := InNetns(ns, func() error {
			link, err := os.Readlink("/proc/thread-self/ns/net")
			inside[link] = true
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(inside) != len(l.Namespaces()) || inside[self] {
		t.Errorf("InNetns visited %v, want the %d lab namespaces (process netns %s)", inside, len(l.Namespaces()), self)
	}
	entries, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		link, err := os.Readlink("/proc/self/task/" + e.Name() + "/ns/net")
		if err != nil {
			continue // thread exited meanwhile
		}
		if link != self {
			t.Errorf("thread %s is in netns %s, want %s", e.Name(), link, self)
		}
	}
}

func TestRunRefusesForeignNetns(t *testing.T) {
	l := newLab(Config{Prefix: "x", Iptables: "iptables-nft"})
	if _, err := l.Run("some-other-ns", "true"); err == nil {
		t.Error("Run accepted a namespace outside the lab")
	}
	if err := l.Dial(context.Background(), "some-other-ns", "10.96.0.100:80", time.Second); err == nil {
		t.Error("Dial accepted a namespace outside the lab")
	}
}

// Issue 16: the IPv6 forms of service-no-endpoints on a dual-stack lab:
// connections to the IPv6 ClusterIP are refused (ICMPv6 port unreachable
// from node-a), kube-proxy's IPv6 rules look as its IPv6 proxiers write
// them, and the IPv4 Service still works.
func TestServiceNoEndpointsIPv6(t *testing.T) {
	RequirePrivileged(t)
	requireTool(t, "nft")
	for _, name := range []string{"service-no-endpoints-v6", "service-no-endpoints-nft-v6"} {
		for _, ipt := range iptablesVariants {
			t.Run(name+"/"+ipt, func(t *testing.T) {
				requireTool(t, ipt)
				ctx := t.Context()
				l := NewForTest(t, Config{Iptables: ipt, DualStack: true})
				if err := l.Verify(ctx, 5*time.Second); err != nil {
					t.Fatalf("healthy lab: %v", err)
				}
				if err := l.ApplyFault(name); err != nil {
					t.Fatalf("apply: %v", err)
				}
				// Refused within the dial's 2 s, not at once as in IPv4: the
				// ICMPv6 error for the first SYN comes back while connect()
				// still holds the socket, so TCP keeps it as a soft error
				// (TcpExtLockDroppedIcmps), and the error for the SYN
				// retransmitted 1 s later ends the connect.
				err := l.Dial(ctx, l.PodA, l.WebService6.Addr(), 2*time.Second)
				if !errors.Is(err, syscall.ECONNREFUSED) {
					t.Fatalf("dial %s: %v, want connection refused", l.WebService6.Addr(), err)
				}
				if err := l.Dial(ctx, l.PodA, l.WebService.Addr(), 2*time.Second); err != nil {
					t.Errorf("dial the IPv4 Service %s: %v", l.WebService.Addr(), err)
				}
				checkNoEndpointsRules6(t, l, name)
			})
		}
	}
}

// checkNoEndpointsRules6 checks node-a's rules after an IPv6
// service-no-endpoints fault: no IPv6 DNAT to pod-b:80, and the refusal
// in ip6tables' filter table or in table ip6 kube-proxy.
func checkNoEndpointsRules6(t *testing.T, l *Lab, name string) {
	t.Helper()
	save6, err := l.Run(l.NodeA, l.ip6tablesBin()+"-save")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(save6, "--to-destination ["+PodBIP6+"]:80") {
		t.Errorf("IPv6 DNAT to pod-b left after %s:\n%s", name, save6)
	}
	if name == "service-no-endpoints-v6" {
		rule := `-A KUBE-SERVICES -d ` + ClusterIP6 + `/128 -p tcp -m comment --comment "default/web:http has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp6-port-unreachable`
		if !strings.Contains(save6, rule) {
			t.Errorf("ip6tables rules after %s lack %q:\n%s", name, rule, save6)
		}
		return
	}
	out, err := l.Run(l.NodeA, "nft", "list", "map", "ip6", "kube-proxy", "no-endpoint-services")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, ClusterIP6+` . tcp . 80 comment "default/web:http" : goto reject-chain`) {
		t.Errorf("unexpected no-endpoint-services map:\n%s", out)
	}
	if out, err := l.Run(l.NodeA, "nft", "list", "chain", "ip6", "kube-proxy", "service-endpoints-check"); err != nil || !strings.Contains(out, "ip6 daddr . meta l4proto . th dport vmap @no-endpoint-services") {
		t.Errorf("service-endpoints-check: %v\n%s", err, out)
	}
}

// Issue 16: listener-loopback's IPv6 form on a dual-stack lab, alone and
// with the IPv4 form in either order: the pod's addresses of both versions
// are refused (the one server on [::]:80 is gone), loopback inside pod-b
// answers on each version the faults applied.
func TestListenerLoopbackIPv6(t *testing.T) {
	RequirePrivileged(t)
	for _, faults := range [][]string{
		{"listener-loopback-v6"},
		{"listener-loopback", "listener-loopback-v6"},
		{"listener-loopback-v6", "listener-loopback"},
	} {
		t.Run(strings.Join(faults, "+"), func(t *testing.T) {
			ctx := t.Context()
			l := NewForTest(t, Config{DualStack: true})
			for _, f := range faults {
				if err := l.ApplyFault(f); err != nil {
					t.Fatalf("apply %s: %v", f, err)
				}
			}
			for _, addr := range []string{net.JoinHostPort(PodBIP6, "80"), net.JoinHostPort(l.PodBIP, "80")} {
				if err := l.Dial(ctx, l.PodA, addr, 2*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
					t.Errorf("dial %s from pod-a: %v, want connection refused", addr, err)
				}
			}
			loopback := []string{"[::1]:80"}
			if len(faults) == 2 {
				loopback = append(loopback, "127.0.0.1:80")
			}
			for _, addr := range loopback {
				if err := l.Dial(ctx, l.PodB, addr, 2*time.Second); err != nil {
					t.Errorf("dial %s inside pod-b: %v", addr, err)
				}
			}
		})
	}
}
