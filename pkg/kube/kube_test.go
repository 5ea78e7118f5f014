//go:build linux

package kube

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/skbtrail/skbtrail/netnsutil"
)

const (
	idA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	idB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	idC = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
	idD = "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
	idE = "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
	idF = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
	id1 = "1111111111111111111111111111111111111111111111111111111111111111"
	id2 = "2222222222222222222222222222222222222222222222222222222222222222"

	selfNetns = "/proc/self/ns/net"
	cniDir    = "testdata/cni/results"
	ipamDir   = "testdata/cni/networks"
)

func selfIno(t *testing.T) uint32 {
	t.Helper()
	ino, err := netnsutil.InodeOf(selfNetns)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(ino)
}

// resolver returns a resolver that only uses the given sources (nil: none)
// and never scans namespaces unless scan is set.
func resolver(t *testing.T, endpoints, cniDirs, ipamDirs []string) *Resolver {
	t.Helper()
	nonNil := func(s []string) []string {
		if s == nil {
			return []string{}
		}
		return s
	}
	return NewResolver(Options{
		CRIEndpoints:   nonNil(endpoints),
		CNIResultsDirs: nonNil(cniDirs),
		IPAMDirs:       nonNil(ipamDirs),
		Timeout:        2 * time.Second,
		NoNetnsScan:    true,
		Logf:           t.Logf,
	})
}

func missingEndpoint(t *testing.T) string {
	return "unix://" + filepath.Join(t.TempDir(), "missing.sock")
}

func wantErr(t *testing.T, err error, kind error, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %q", msg)
	}
	if !errors.Is(err, kind) {
		t.Errorf("error %q does not match %v", err, kind)
	}
	if err.Error() != msg {
		t.Errorf("error message\n got: %s\nwant: %s", err, msg)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not one line: %q", err)
	}
}

// ---------------------------------------------------------------------------
// Spec parsing

func TestParseSpec(t *testing.T) {
	good := map[string]Spec{
		"default/client":                {Namespace: "default", Name: "client"},
		"kube-system/coredns-5d78c-x1z": {Namespace: "kube-system", Name: "coredns-5d78c-x1z"},
		"ns1/web.example-0":             {Namespace: "ns1", Name: "web.example-0"},
		"10.244.1.2":                    {IP: netip.MustParseAddr("10.244.1.2")},
		"fd00::5":                       {IP: netip.MustParseAddr("fd00::5")},
		"::ffff:10.0.0.1":               {IP: netip.MustParseAddr("10.0.0.1")},
	}
	for in, want := range good {
		got, err := ParseSpec(in)
		if err != nil || got != want {
			t.Errorf("ParseSpec(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	const usage = "want NAMESPACE/NAME (e.g. default/web) or the pod's IP address"
	bad := map[string]string{
		"":                             "empty pod: " + usage,
		"  ":                           "empty pod: " + usage,
		"foo":                          `invalid pod "foo": ` + usage + " (did you mean default/foo?)",
		"Foo":                          `invalid pod "Foo": ` + usage,
		"a/b/c":                        `invalid pod "a/b/c": ` + usage + ` (too many "/")`,
		"/web":                         `invalid pod "/web": ` + usage + " (empty namespace or name)",
		"default/":                     `invalid pod "default/": ` + usage + " (empty namespace or name)",
		"10.0.0.0/24":                  `invalid pod "10.0.0.0/24": a prefix is not a pod; ` + usage,
		"Default/web":                  `invalid pod "Default/web": namespace "Default" is not a valid Kubernetes name (lowercase letters, digits and '-', starting and ending with a letter or digit)`,
		"default/web_1":                `invalid pod "default/web_1": name "web_1" is not a valid Kubernetes name (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)`,
		"default/-web":                 `invalid pod "default/-web": name "-web" is not a valid Kubernetes name (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)`,
		"fe80::1%eth0":                 `invalid pod "fe80::1%eth0": an IP address with a zone is not a pod IP`,
		strings.Repeat("n", 64) + "/x": `invalid pod "` + strings.Repeat("n", 64) + `/x": namespace "` + strings.Repeat("n", 64) + `" is longer than 63 characters`,
	}
	for in, msg := range bad {
		_, err := ParseSpec(in)
		wantErr(t, err, ErrInvalidSpec, msg)
	}
	// Resolve rejects bad specs before asking anything.
	r := resolver(t, []string{missingEndpoint(t)}, nil, nil)
	_, err := r.Resolve(context.Background(), "a/b/c")
	wantErr(t, err, ErrInvalidSpec, `invalid pod "a/b/c": `+usage+` (too many "/")`)
}

func TestSuggest(t *testing.T) {
	names := []string{"default/old", "default/client", "default/client-2", "default/server", "kube-system/coredns-x",
		"default/web-1", "default/web-2", "default/web-3", "default/web-4", "other/web"}
	cases := map[string][]string{
		"defualt/client":  {"default/client", "default/client-2"},
		"default/clinet":  {"default/client"},
		"default/olt":     {"default/old"},
		"default/xyz":     {},
		"default/web":     {"other/web", "default/web-1", "default/web-2"},
		"default/nothing": {},
		"default/cli":     {"default/client", "default/client-2"},
	}
	for want, exp := range cases {
		got := suggest(want, names, 3)
		if strings.Join(got, ",") != strings.Join(exp, ",") {
			t.Errorf("suggest(%q) = %v, want %v", want, got, exp)
		}
	}
	for _, c := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"a", "", 1}, {"kitten", "sitting", 3}, {"clinet", "client", 2}, {"abc", "abc", 0}} {
		if got := levenshtein(c.a, c.b); got != c.d {
			t.Errorf("levenshtein(%q, %q) = %d, want %d", c.a, c.b, got, c.d)
		}
	}
	if got := didYouMean([]string{"a/b", "c/d", "e/f"}); got != "; did you mean a/b, c/d or e/f?" {
		t.Errorf("didYouMean = %q", got)
	}
}

// ---------------------------------------------------------------------------
// CRI

func stdSandboxes() []fakeSandbox {
	return []fakeSandbox{
		{id: idA, ns: "default", name: "client", uid: "uid-client", ip: "10.88.77.22", netnsPath: selfNetns, pid: os.Getpid(), created: 10},
		{id: idB, ns: "default", name: "server", uid: "uid-server", ip: "10.88.77.23", extraIPs: []string{"fd00::23"}, netnsPath: selfNetns, created: 11},
		{id: idC, ns: "kube-system", name: "coredns-x", ip: "10.88.77.24", netnsPath: selfNetns, created: 12},
		{id: idD, ns: "default", name: "old", ip: "10.88.77.25", netnsPath: selfNetns, notReady: true, created: 5},
	}
}

func TestResolveCRI(t *testing.T) {
	ep := serveCRI(t, &fakeCRI{sandboxes: stdSandboxes()})
	r := resolver(t, []string{ep}, nil, nil)
	p, err := r.Resolve(context.Background(), "default/client")
	if err != nil {
		t.Fatal(err)
	}
	want := Pod{Namespace: "default", Name: "client", UID: "uid-client", SandboxID: idA,
		IP: netip.MustParseAddr("10.88.77.22"), IPs: []netip.Addr{netip.MustParseAddr("10.88.77.22")}, NetnsPath: selfNetns, NetnsInode: selfIno(t), Source: "cri:" + ep}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("got  %+v\nwant %+v", p, want)
	}
	if !strings.Contains(p.String(), "default/client (ip 10.88.77.22, sandbox aaaaaaaaaaaaa, netns /proc/self/ns/net, via cri:unix://") {
		t.Errorf("String() = %s", p)
	}
}

func TestResolveCRIPidFallback(t *testing.T) {
	// The runtime spec's netns path is gone (or unset): the sandbox pid's
	// namespace is used.
	pid := os.Getpid()
	for _, path := range []string{"/var/run/netns/cni-skbtrail-test-gone", ""} {
		ep := serveCRI(t, &fakeCRI{sandboxes: []fakeSandbox{
			{id: idA, ns: "default", name: "client", ip: "10.88.77.22", netnsPath: path, pid: pid},
		}})
		p, err := resolver(t, []string{ep}, nil, nil).Resolve(context.Background(), "default/client")
		if err != nil {
			t.Fatal(err)
		}
		if want := "/proc/" + strconv.Itoa(pid) + "/ns/net"; p.NetnsPath != want || p.NetnsInode != selfIno(t) {
			t.Errorf("netns path %q: got %s (%d), want %s", path, p.NetnsPath, p.NetnsInode, want)
		}
	}
	// Neither a path nor a pid.
	ep := serveCRI(t, &fakeCRI{sandboxes: []fakeSandbox{
		{id: idA, ns: "default", name: "client", ip: "10.88.77.22", noInfo: true},
	}})
	_, err := resolver(t, []string{ep}, nil, nil).Resolve(context.Background(), "default/client")
	wantErr(t, err, ErrNoNetns, "pod default/client: runtime "+ep+" reported neither a network namespace path nor a sandbox pid")

	// Neither, but the CNI cache knows the sandbox (cri-dockerd).
	ep = serveCRI(t, &fakeCRI{sandboxes: []fakeSandbox{
		{id: idA, ns: "default", name: "client", ip: "10.88.77.22", noInfo: true},
	}})
	p, err := resolver(t, []string{ep}, []string{cniDir}, nil).Resolve(context.Background(), "default/client")
	if err != nil {
		t.Fatal(err)
	}
	if p.NetnsPath != selfNetns || p.Source != "cri:"+ep || p.IP != netip.MustParseAddr("10.88.77.22") {
		t.Errorf("got %+v", p)
	}

	// A path that does not open and a dead pid.
	ep = serveCRI(t, &fakeCRI{sandboxes: []fakeSandbox{
		{id: idA, ns: "default", name: "client", ip: "10.88.77.22", netnsPath: "/var/run/netns/cni-skbtrail-test-gone", pid: 1 << 30},
	}})
	_, err = resolver(t, []string{ep}, nil, nil).Resolve(context.Background(), "default/client")
	wantErr(t, err, ErrNoNetns, "pod default/client: cannot open its network namespace (open /var/run/netns/cni-skbtrail-test-gone: no such file or directory; open /proc/1073741824/ns/net: no such file or directory)")
}

func TestResolveCRIHostNetwork(t *testing.T) {
	ep := serveCRI(t, &fakeCRI{sandboxes: []fakeSandbox{
		{id: idA, ns: "kube-system", name: "kube-proxy-x", hostNetwork: true, pid: os.Getpid()},
	}})
	p, err := resolver(t, []string{ep}, nil, nil).Resolve(context.Background(), "kube-system/kube-proxy-x")
	if err != nil {
		// Without privileges the host namespace may not be openable.
		if os.Geteuid() != 0 && errors.Is(err, ErrNoNetns) {
			t.Skipf("host netns not accessible: %v", err)
		}
		t.Fatal(err)
	}
	if !p.HostNetwork || p.IP.IsValid() || p.NetnsPath == "" {
		t.Errorf("got %+v", p)
	}
}

func TestResolveCRIMetadataOnly(t *testing.T) {
	// Sandboxes made without the kubelet's labels are matched on metadata.
	sbs := stdSandboxes()
	for i := range sbs {
		sbs[i].noLabels = true
	}
	ep := serveCRI(t, &fakeCRI{sandboxes: sbs})
	p, err := resolver(t, []string{ep}, nil, nil).Resolve(context.Background(), "default/server")
	if err != nil {
		t.Fatal(err)
	}
	if p.SandboxID != idB || p.IP != netip.MustParseAddr("10.88.77.23") {
		t.Errorf("got %+v", p)
	}
	// dual stack: every address, and the one of a destination's family
	v4, v6 := netip.MustParseAddr("10.88.77.23"), netip.MustParseAddr("fd00::23")
	if !reflect.DeepEqual(p.IPs, []netip.Addr{v4, v6}) {
		t.Errorf("IPs %v, want [%s %s]", p.IPs, v4, v6)
	}
	for dst, want := range map[string]netip.Addr{"fd00::1": v6, "10.96.0.10": v4, "": v4} {
		d, _ := netip.ParseAddr(dst)
		if got := p.Addr(d); got != want {
			t.Errorf("Addr(%q) = %s, want %s", dst, got, want)
		}
	}
	v6only, v4only := Pod{IP: v6, IPs: []netip.Addr{v6}}, Pod{IP: v4} // IPs unset: an older caller
	for _, c := range []struct {
		p        Pod
		dst      string
		want     netip.Addr
		wantNone bool
	}{
		{v4only, "fd00::1", netip.Addr{}, true},
		{v4only, "10.96.0.10", v4, false},
		{v6only, "10.96.0.10", netip.Addr{}, true},
		{v6only, "", v6, false},
		{p, "::ffff:10.96.0.10", v4, false},
	} {
		d, _ := netip.ParseAddr(c.dst)
		if got := c.p.Addr(d); got != c.want || got.IsValid() == c.wantNone {
			t.Errorf("%v.Addr(%q) = %s, want %s", c.p.IPs, c.dst, got, c.want)
		}
	}
	if !strings.Contains(p.String(), "ips 10.88.77.23,fd00::23") {
		t.Errorf("String() = %s", p)
	}
}

func TestResolveOrder(t *testing.T) {
	ctx := context.Background()
	ep := serveCRI(t, &fakeCRI{sandboxes: stdSandboxes()})
	missing := missingEndpoint(t)

	// 1. The CRI wins over the CNI cache (which has another IP for
	// default/client); unreachable endpoints before it are skipped.
	r := resolver(t, []string{missing, ep}, []string{cniDir}, []string{ipamDir})
	p, err := r.Resolve(ctx, "default/client")
	if err != nil {
		t.Fatal(err)
	}
	if p.Source != "cri:"+ep || p.IP != netip.MustParseAddr("10.88.77.22") {
		t.Errorf("CRI first: got %+v", p)
	}

	// 2. No runtime reachable: the CNI cache answers.
	r = resolver(t, []string{missing}, []string{cniDir}, []string{ipamDir})
	p, err = r.Resolve(ctx, "default/client")
	if err != nil {
		t.Fatal(err)
	}
	want := Pod{Namespace: "default", Name: "client", UID: "11111111-2222-3333-4444-555555555555", SandboxID: idA,
		IP: netip.MustParseAddr("10.88.77.2"), IPs: []netip.Addr{netip.MustParseAddr("10.88.77.2")}, NetnsPath: selfNetns, NetnsInode: selfIno(t), Source: SourceCNICache}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("CNI fallback:\n got  %+v\nwant %+v", p, want)
	}

	// 3. A reachable runtime is authoritative: a pod it does not know is not
	// looked up in the (possibly stale) CNI cache.
	r = resolver(t, []string{ep}, []string{cniDir}, nil)
	_, err = r.Resolve(ctx, "kube-system/coredns-5d78c9869d-abcde")
	wantErr(t, err, ErrNotFound, "pod kube-system/coredns-5d78c9869d-abcde not found on this node (runtime "+ep+")")

	// 4. A bare IP: CRI, then CNI cache, then host-local IPAM.
	r = resolver(t, []string{ep}, []string{cniDir}, []string{ipamDir})
	for ip, src := range map[string]string{
		"10.88.77.23": "cri:" + ep, // default/server
		"fd00::23":    "cri:" + ep, // default/server's additional IP
		"10.88.77.4":  SourceCNICache,
		"10.88.77.9":  SourceCNICache, // IPAM -> container id -> cache entry's netns
	} {
		p, err := r.Resolve(ctx, ip)
		if err != nil {
			t.Errorf("Resolve(%s): %v", ip, err)
			continue
		}
		if p.Source != src || p.NetnsInode != selfIno(t) {
			t.Errorf("Resolve(%s) = %+v, want source %s", ip, p, src)
		}
		if p.IP != netip.MustParseAddr(ip) && src == SourceCNICache {
			t.Errorf("Resolve(%s): IP %s", ip, p.IP)
		}
	}
	p, _ = r.Resolve(ctx, "10.88.77.9")
	if p.Namespace != "default" || p.Name != "ipam-only" || p.SandboxID != idF {
		t.Errorf("IPAM: got %+v", p)
	}
	p, _ = r.Resolve(ctx, "10.88.77.5") // cache entry without pod args
	if p.Name != "" || p.SandboxID != idE || p.Source != SourceCNICache {
		t.Errorf("anonymous cache entry: got %+v", p)
	}
	// NOTREADY sandboxes do not own their IP any more.
	_, err = r.Resolve(ctx, "10.88.77.25")
	wantErr(t, err, ErrNotFound, "no pod on this node has address 10.88.77.25 (no runtime sandbox has it; not in the CNI cache)")
}

func TestResolveIPNotFound(t *testing.T) {
	ctx := context.Background()
	missing := missingEndpoint(t)
	r := resolver(t, []string{missing}, []string{cniDir}, []string{ipamDir})
	_, err := r.Resolve(ctx, "192.0.2.77")
	wantErr(t, err, ErrNotFound, "no pod on this node has address 192.0.2.77 (no container runtime reachable: "+missing+": no such socket; not in the CNI cache)")

	// With the namespace scan (only local namespaces are looked at).
	r.NoNetnsScan = false
	_, err = r.Resolve(ctx, "192.0.2.77")
	wantErr(t, err, ErrNotFound, "no pod on this node has address 192.0.2.77 (no container runtime reachable: "+missing+": no such socket; not in the CNI cache; no other network namespace has it)")
}

func TestResolveIPHostAddress(t *testing.T) {
	reg := netnsutil.NewRegistry()
	_ = reg.Refresh()
	if self := selfIno(t); reg.Host() == 0 || uint32(reg.Host()) != self {
		t.Skip("the test does not run in the host network namespace")
	}
	if p, ok := reg.Path(reg.Host()); !ok {
		t.Skip("no path to the host network namespace")
	} else if h, err := netnsutil.NewHandle(p); err != nil {
		t.Skipf("host network namespace not accessible: %v", err)
	} else {
		h.Close()
	}
	// A global address of this (the host) namespace.
	var host netip.Addr
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() && p.Addr().IsGlobalUnicast() {
			host = p.Addr()
			break
		}
	}
	if !host.IsValid() {
		t.Skip("no global IPv4 address on the host")
	}
	r := resolver(t, nil, nil, nil)
	r.NoNetnsScan = false
	_, err := r.Resolve(context.Background(), host.String())
	wantErr(t, err, ErrNotFound, "address "+host.String()+" belongs to the host network namespace, not to a pod; give the pod as NAMESPACE/NAME")
}

// ---------------------------------------------------------------------------
// Error messages

func TestErrNotFoundSuggestions(t *testing.T) {
	sbs := append(stdSandboxes(),
		fakeSandbox{id: id1, ns: "default", name: "client-2", ip: "10.88.77.30", netnsPath: selfNetns},
		fakeSandbox{id: id2, ns: "staging", name: "client", ip: "10.88.77.31", netnsPath: selfNetns},
	)
	ep := serveCRI(t, &fakeCRI{sandboxes: sbs})
	r := resolver(t, []string{ep}, nil, nil)
	ctx := context.Background()
	_, err := r.Resolve(ctx, "default/clinet")
	wantErr(t, err, ErrNotFound, "pod default/clinet not found on this node (runtime "+ep+"); did you mean default/client or staging/client?")
	_, err = r.Resolve(ctx, "prod/client")
	wantErr(t, err, ErrNotFound, "pod prod/client not found on this node (runtime "+ep+"); did you mean default/client, staging/client or default/client-2?")
	_, err = r.Resolve(ctx, "default/cli")
	wantErr(t, err, ErrNotFound, "pod default/cli not found on this node (runtime "+ep+"); did you mean default/client, default/client-2 or staging/client?")
	_, err = r.Resolve(ctx, "default/zzzzzz")
	wantErr(t, err, ErrNotFound, "pod default/zzzzzz not found on this node (runtime "+ep+")")

	// A second endpoint that exists but does not answer is mentioned; a
	// missing default socket is not.
	refused := refusedEndpoint(t)
	r = resolver(t, []string{missingEndpoint(t), ep, refused}, nil, nil)
	_, err = r.Resolve(ctx, "default/clinet")
	wantErr(t, err, ErrNotFound, "pod default/clinet not found on this node (runtime "+ep+"; not asked: "+refused+": connection refused (runtime not running?)); did you mean default/client or staging/client?")
}

func TestErrNotRunning(t *testing.T) {
	sbs := append(stdSandboxes(), fakeSandbox{id: idE, ns: "default", name: "old", ip: "10.88.77.26", notReady: true, created: 7})
	ep := serveCRI(t, &fakeCRI{sandboxes: sbs})
	r := resolver(t, []string{ep}, nil, nil)
	_, err := r.Resolve(context.Background(), "default/old")
	wantErr(t, err, ErrNotRunning, "pod default/old is not running on this node: its sandbox eeeeeeeeeeeee is NOTREADY (runtime "+ep+", the latest of 2)")

	ep = serveCRI(t, &fakeCRI{sandboxes: stdSandboxes()})
	_, err = resolver(t, []string{ep}, nil, nil).Resolve(context.Background(), "default/old")
	wantErr(t, err, ErrNotRunning, "pod default/old is not running on this node: its sandbox ddddddddddddd is NOTREADY (runtime "+ep+")")

	// A NOTREADY sandbox next to a READY one (pod restarted): the ready one.
	sbs = append(stdSandboxes(), fakeSandbox{id: idE, ns: "default", name: "client", notReady: true, created: 1})
	ep = serveCRI(t, &fakeCRI{sandboxes: sbs})
	p, err := resolver(t, []string{ep}, nil, nil).Resolve(context.Background(), "default/client")
	if err != nil || p.SandboxID != idA {
		t.Errorf("got %+v, %v", p, err)
	}

	// From the CNI cache: the sandbox's network namespace is gone.
	r = resolver(t, []string{missingEndpoint(t)}, []string{cniDir}, nil)
	_, err = r.Resolve(context.Background(), "default/server")
	wantErr(t, err, ErrNotRunning, "pod default/server is not running on this node: the network namespace /var/run/netns/cni-00000000-dead-beef-0000-000000000000 of its sandbox bbbbbbbbbbbbb (CNI cache "+cniDir+"/skbnet-"+idB+"-eth0) is gone")
}

func TestErrAmbiguous(t *testing.T) {
	sbs := append(stdSandboxes(),
		fakeSandbox{id: id1, ns: "default", name: "twin", ip: "10.88.77.40", netnsPath: selfNetns},
		fakeSandbox{id: id2, ns: "default", name: "twin", ip: "10.88.77.40", netnsPath: selfNetns},
	)
	ep := serveCRI(t, &fakeCRI{sandboxes: sbs})
	r := resolver(t, []string{ep}, nil, nil)
	ctx := context.Background()
	_, err := r.Resolve(ctx, "default/twin")
	wantErr(t, err, ErrAmbiguous, "pod default/twin matches 2 ready sandboxes (1111111111111 on "+ep+", 2222222222222 on "+ep+"); remove the stale one or pass the pod IP instead")
	_, err = r.Resolve(ctx, "10.88.77.40")
	wantErr(t, err, ErrAmbiguous, "address 10.88.77.40 belongs to several pods: default/twin (sandbox 1111111111111), default/twin (sandbox 2222222222222)")

	// Two runtimes with the same pod.
	ep2 := serveCRI(t, &fakeCRI{sandboxes: stdSandboxes()})
	_, err = resolver(t, []string{ep, ep2}, nil, nil).Resolve(ctx, "default/client")
	wantErr(t, err, ErrAmbiguous, "pod default/client matches 2 ready sandboxes (aaaaaaaaaaaaa on "+ep+", aaaaaaaaaaaaa on "+ep2+"); remove the stale one or pass the pod IP instead")

	// From the CNI cache.
	r = resolver(t, []string{missingEndpoint(t)}, []string{"testdata/cni-ambiguous/results"}, nil)
	_, err = r.Resolve(ctx, "default/twin")
	wantErr(t, err, ErrAmbiguous, "pod default/twin has 2 live sandboxes in the CNI cache (1111111111111, 2222222222222); pass the pod IP instead")
}

// refusedEndpoint returns a unix socket path nobody listens on any more.
func refusedEndpoint(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "refused.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	_ = l.Close()
	return "unix://" + sock
}

func TestErrNoRuntime(t *testing.T) {
	dir := t.TempDir()
	missing := "unix://" + filepath.Join(dir, "missing.sock")
	file := filepath.Join(dir, "file.sock")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	refused := refusedEndpoint(t)
	// A gRPC server without the CRI runtime service (e.g. Docker's
	// containerd with the cri plugin disabled).
	unimpl := serveOn(t, filepath.Join(dir, "nocri.sock"), func(*grpc.Server) {})
	eps := []string{missing, file, refused, unimpl, "tcp://127.0.0.1:1", "containerd.sock"}
	noCache := filepath.Join(dir, "no-cni")
	r := resolver(t, eps, []string{noCache}, nil)
	_, err := r.Resolve(context.Background(), "default/client")
	reasons := missing + ": no such socket; " +
		file + ": not a unix socket; " +
		refused + ": connection refused (runtime not running?); " +
		unimpl + ": does not serve the CRI v1 runtime service (unknown service runtime.v1.RuntimeService); " +
		`tcp://127.0.0.1:1: invalid endpoint: unsupported scheme "tcp" (want unix://); ` +
		"containerd.sock: invalid endpoint: want unix:///ABSOLUTE/PATH"
	wantErr(t, err, ErrNoRuntime, "pod default/client: no container runtime reachable ("+reasons+") and no CNI result cache ("+noCache+": no such directory)")

	// The cache exists but does not know the pod.
	r = resolver(t, []string{missing}, []string{cniDir}, nil)
	_, err = r.Resolve(context.Background(), "default/clien")
	wantErr(t, err, ErrNoRuntime, "pod default/clien: no container runtime reachable ("+missing+": no such socket) and not in the CNI cache ("+cniDir+"); did you mean default/client?")

	// The cache knows the pod but not its network namespace.
	_, err = r.Resolve(context.Background(), "default/old")
	wantErr(t, err, ErrNoNetns, "pod default/old: the CNI cache ("+cniDir+"/oldnet-"+idD+"-eth0) does not record its network namespace")

	// A runtime that hangs is given up after the timeout.
	slow := filepath.Join(dir, "slow.sock")
	l, err := net.Listen("unix", slow) // accepts, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r = resolver(t, []string{"unix://" + slow}, []string{}, nil)
	r.Timeout = 300 * time.Millisecond
	start := time.Now()
	_, err = r.Resolve(context.Background(), "default/client")
	if time.Since(start) > 5*time.Second {
		t.Errorf("took %v", time.Since(start))
	}
	wantErr(t, err, ErrNoRuntime, "pod default/client: no container runtime reachable (unix://"+slow+": no answer within 300ms) and no CNI result cache configured")
}

// ---------------------------------------------------------------------------
// CNI cache

func TestParseCNICacheFixtures(t *testing.T) {
	r := resolver(t, nil, []string{cniDir}, nil)
	groups, err := r.readCNI()
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		ns, name, uid, netns, ips string
	}
	exp := map[string]want{
		idA: {"default", "client", "11111111-2222-3333-4444-555555555555", selfNetns, "10.88.77.2"}, // loopback entry merged away
		idB: {"default", "server", "u2", "/var/run/netns/cni-00000000-dead-beef-0000-000000000000", "10.88.77.3"},
		idC: {"kube-system", "coredns-5d78c9869d-abcde", "u3", selfNetns, "10.88.77.4"}, // netns from interfaces[].sandbox
		idD: {"default", "old", "", "", "10.99.0.7"},                                    // CNI 0.2.0, args in config
		idE: {"", "", "", selfNetns, "10.88.77.5"},
		idF: {"default", "ipam-only", "u6", selfNetns, ""},
	}
	if len(groups) != len(exp) {
		t.Errorf("%d groups, want %d", len(groups), len(exp))
	}
	for _, g := range groups {
		w, ok := exp[g.containerID]
		if !ok {
			t.Errorf("unexpected group %s", g.containerID)
			continue
		}
		ns, name, uid := g.ref()
		var ips []string
		for _, a := range g.ips() {
			ips = append(ips, a.String())
		}
		got := want{ns, name, uid, g.netnsPath(), strings.Join(ips, ",")}
		if got != w {
			t.Errorf("%s: got %+v, want %+v", shortID(g.containerID), got, w)
		}
		if len(g.entries) != 1 || g.entries[0].ifName != "eth0" {
			t.Errorf("%s: entries %+v", shortID(g.containerID), g.entries)
		}
	}
	r.IPAMDirs = []string{ipamDir}
	if got := r.ipamOwner(netip.MustParseAddr("10.88.77.9")); got != idF {
		t.Errorf("ipamOwner = %q", got)
	}
	if got := r.ipamOwner(netip.MustParseAddr("10.88.77.10")); got != "" {
		t.Errorf("ipamOwner(unallocated) = %q", got)
	}
	if _, err := parseCNICache("x", []byte(`{"kind":"cniCacheV1"}`)); err == nil {
		t.Error("entry without containerId accepted")
	}
}

// ---------------------------------------------------------------------------
// Index

func TestIndex(t *testing.T) {
	saved := hostNetnsInode
	t.Cleanup(func() { hostNetnsInode = saved })
	hostNetnsInode = func() uint32 { return 0 }

	pid := os.Getpid()
	ep := serveCRI(t, &fakeCRI{sandboxes: []fakeSandbox{
		{id: idA, ns: "default", name: "client", ip: "10.88.77.22", netnsPath: selfNetns},
		{id: idD, ns: "default", name: "old", ip: "10.88.77.25", netnsPath: selfNetns, notReady: true},
		{id: idC, ns: "kube-system", name: "kube-proxy", hostNetwork: true, pid: pid},
	}})
	r := resolver(t, []string{missingEndpoint(t), ep}, []string{cniDir}, nil)
	idx, err := r.Index(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ino := selfIno(t)
	if len(idx) != 1 || idx[ino].Name != "client" || idx[ino].Source != "cri:"+ep {
		t.Errorf("index = %+v", idx)
	}

	// CNI cache only.
	r = resolver(t, []string{missingEndpoint(t)}, []string{cniDir}, nil)
	idx, err = r.Index(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if p := idx[ino]; len(idx) != 1 || p.Source != SourceCNICache || p.NetnsPath != selfNetns {
		t.Errorf("index = %+v", idx)
	}

	// The host namespace never maps to a pod.
	hostNetnsInode = func() uint32 { return ino }
	idx, err = r.Index(context.Background())
	if err != nil || len(idx) != 0 {
		t.Errorf("index = %+v, %v", idx, err)
	}

	// Nothing readable at all.
	missing := missingEndpoint(t)
	r = resolver(t, []string{missing}, []string{filepath.Join(t.TempDir(), "nope")}, nil)
	_, err = r.Index(context.Background())
	if err == nil || !strings.Contains(err.Error(), missing+": no such socket") || !strings.Contains(err.Error(), "no CNI result cache") {
		t.Errorf("Index error = %v", err)
	}
}

// ---------------------------------------------------------------------------
// Misc

func TestNetnsName(t *testing.T) {
	pid := os.Getpid()
	p := Pod{Namespace: "default", Name: "x", NetnsPath: "/proc/" + strconv.Itoa(pid) + "/ns/net"}
	name, err := p.NetnsName()
	if err != nil {
		t.Fatal(err)
	}
	// "host" when the test runs in the host's namespace, else pid:N.
	want := "pid:" + strconv.Itoa(pid)
	if _, hostIno, err := netnsutil.ResolveName("host"); err == nil && uint32(hostIno) == selfIno(t) {
		want = "host"
	}
	if name != want {
		t.Errorf("NetnsName = %q, want %q", name, want)
	}
	_, err = Pod{Namespace: "default", Name: "x", NetnsPath: "/var/run/netns/cni-skbtrail-test-gone"}.NetnsName()
	if !errors.Is(err, ErrNoNetns) || !strings.Contains(err.Error(), "pod default/x: cannot open network namespace /var/run/netns/cni-skbtrail-test-gone") {
		t.Errorf("NetnsName(gone) = %v", err)
	}
	_, err = Pod{}.NetnsName()
	if !errors.Is(err, ErrNoNetns) {
		t.Errorf("NetnsName(empty) = %v", err)
	}
}

func TestNewResolverDefaults(t *testing.T) {
	r := NewResolver(Options{})
	if strings.Join(r.CRIEndpoints, ",") != "unix:///run/containerd/containerd.sock,unix:///run/crio/crio.sock,unix:///var/run/cri-dockerd.sock" {
		t.Errorf("CRIEndpoints = %v", r.CRIEndpoints)
	}
	if strings.Join(r.CNIResultsDirs, ",") != "/var/lib/cni/results" || strings.Join(r.IPAMDirs, ",") != "/var/lib/cni/networks" {
		t.Errorf("dirs = %v %v", r.CNIResultsDirs, r.IPAMDirs)
	}
	if r.timeout() != DefaultTimeout {
		t.Errorf("timeout = %v", r.timeout())
	}
	r = NewResolver(Options{CRIEndpoints: []string{}})
	if len(r.CRIEndpoints) != 0 {
		t.Errorf("empty endpoints replaced by defaults: %v", r.CRIEndpoints)
	}
	// The defaults never include DefaultCRIEndpoints' backing array.
	r.CRIEndpoints = append(r.CRIEndpoints, "x")
	if len(DefaultCRIEndpoints) != 3 {
		t.Error("defaults modified")
	}
}

func TestSocketPath(t *testing.T) {
	for in, want := range map[string]string{
		"unix:///run/containerd/containerd.sock": "/run/containerd/containerd.sock",
		"/run/crio/crio.sock":                    "/run/crio/crio.sock",
	} {
		if got, err := socketPath(in); err != nil || got != want {
			t.Errorf("socketPath(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"unix://relative.sock", "npipe:////./pipe/x", "relative.sock", ""} {
		if _, err := socketPath(in); err == nil {
			t.Errorf("socketPath(%q): no error", in)
		}
	}
}

func TestContextCancelled(t *testing.T) {
	ep := serveCRI(t, &fakeCRI{sandboxes: stdSandboxes()})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := resolver(t, []string{ep}, nil, nil).Resolve(ctx, "default/client")
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

// TestCNICacheContainerd16 reads cache files as containerd 1.6.20 (libcni
// 1.1) really writes them: no top-level "netns" (only the interface's
// "sandbox"), cniArgs, a loopback network entry; the host-local IPAM file
// holds "<id>\r\neth0". Only the netns path was changed to one that opens.
func TestCNICacheContainerd16(t *testing.T) {
	const id = "1548c46abfd4ac1d6baba7c03ca4991e3dc2aae937b9946a4a5d7d6c73a8fd53"
	dir := "testdata/cni-containerd16"
	r := resolver(t, []string{missingEndpoint(t)}, []string{dir + "/results"}, []string{dir + "/networks"})
	want := Pod{Namespace: "default", Name: "client", UID: "4acaa975-d3b6-b28a-48b0-78f5820a580f", SandboxID: id,
		IP: netip.MustParseAddr("10.88.77.2"), IPs: []netip.Addr{netip.MustParseAddr("10.88.77.2")}, NetnsPath: selfNetns, NetnsInode: selfIno(t), Source: SourceCNICache}
	for _, spec := range []string{"default/client", "10.88.77.2"} {
		p, err := r.Resolve(context.Background(), spec)
		if err != nil {
			t.Fatalf("Resolve(%s): %v", spec, err)
		}
		if !reflect.DeepEqual(p, want) {
			t.Errorf("Resolve(%s):\n got  %+v\nwant %+v", spec, p, want)
		}
	}
	if got := r.ipamOwner(netip.MustParseAddr("10.88.77.2")); got != id {
		t.Errorf("ipamOwner = %q", got)
	}
	// IPAM alone (no cache dir): the container id is known, not the netns.
	r = resolver(t, nil, nil, []string{dir + "/networks"})
	_, err := r.Resolve(context.Background(), "10.88.77.2")
	wantErr(t, err, ErrNotFound, "no pod on this node has address 10.88.77.2 (host-local IPAM allocated it to container 1548c46abfd4a, whose network namespace the CNI cache does not know)")
}
