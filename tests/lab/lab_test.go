package lab

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
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
		"forward-drop":          timeout,
		"forward-drop-rule-nft": timeout,
		"reject-rst":            refused,
		"no-dnat":               timeout,
		"wrong-vtep":            timeout,
		"no-listener":           refused,
		"no-route":              timeout,
		"small-mtu":             works,
	}
	for _, f := range Faults() {
		if _, ok := cases[f.Name]; !ok {
			t.Errorf("fault %s has no test case", f.Name)
		}
	}
	// Faults implemented with iptables run against both backends.
	usesIptables := map[string]bool{"forward-drop": true, "reject-rst": true, "no-dnat": true}
	type run struct{ name, ipt string }
	var runs []run
	for name := range cases {
		runs = append(runs, run{name, "iptables-nft"})
		if usesIptables[name] {
			runs = append(runs, run{name, "iptables-legacy"})
		}
	}
	for _, r := range runs {
		name, want := r.name, cases[r.name]
		t.Run(name+"/"+r.ipt, func(t *testing.T) {
			t.Parallel()
			requireTool(t, r.ipt)
			if name == "forward-drop-rule-nft" {
				requireTool(t, "nft")
			}
			ctx := t.Context()
			l := NewForTest(t, Config{Iptables: r.ipt})
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
				out, err := l.Run(l.NodeA, "bridge", "fdb", "show", "dev", VXLANDevice)
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
			}
		})
	}
}

// testSmallMTU checks the effect of the small-mtu fault: with "df set" the
// router drops the first 1500 byte outer packet (ICMP fragmentation-needed
// back to node-a), node-a then drops the following ones itself, and since
// forwarding ignores the learned path MTU (net.ipv4.ip_forward_use_pmtu=0)
// pod-a never hears about it: small exchanges work, bulk data stalls.
func testSmallMTU(t *testing.T, l *Lab) {
	out, err := l.Run(l.NodeA, "ip", "-d", "link", "show", VXLANDevice)
	if err != nil {
		t.Fatal(err)
	}
	dfSet := strings.Contains(out, "df set")
	t.Logf("node-a %s: df set: %v", VXLANDevice, dfSet)
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
	if !l.StopServer("udp", 53) {
		t.Error("StopServer(udp, 53) found no server")
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
