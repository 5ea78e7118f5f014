//go:build linux

package cri

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/vishvananda/netlink"

	"github.com/skbtrail/skbtrail/netnsutil"
	"github.com/skbtrail/skbtrail/pkg/kube"
)

// checkServes sends an HTTP request from the client pod to the server pod.
func checkServes(t *testing.T, client, server Pod) {
	t.Helper()
	addr := net.JoinHostPort(server.IP.String(), fmt.Sprint(ServePort))
	err := netnsutil.Do(fmt.Sprintf("/proc/%d/ns/net", client.SandboxPID), func() error {
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.WriteString(c, "GET /index.html HTTP/1.0\r\n\r\n"); err != nil {
			return err
		}
		b, err := io.ReadAll(c)
		if err != nil {
			return err
		}
		if !bytes.HasPrefix(b, []byte("HTTP/1.")) || !bytes.HasSuffix(b, []byte("hi\n")) {
			return fmt.Errorf("unexpected answer %q", b)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s -> %s: %v", client.Ref(), addr, err)
	}
}

func TestResolveRealContainerd(t *testing.T) {
	rt := StartRuntime(t)
	client := rt.RunPod(t, "default", "client", false)
	server := rt.RunPod(t, "default", "server", true)
	checkServes(t, client, server)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// 1. CRI.
	r := kube.NewResolver(kube.Options{
		CRIEndpoints:   []string{rt.Endpoint},
		CNIResultsDirs: []string{}, IPAMDirs: []string{},
		Logf: t.Logf,
	})
	for _, want := range []Pod{client, server} {
		p, err := r.Resolve(ctx, want.Ref())
		if err != nil {
			t.Fatalf("Resolve(%s): %v", want.Ref(), err)
		}
		checkPod(t, p, want, "cri:"+rt.Endpoint)
		if p.NetnsPath != want.NetnsPath {
			t.Errorf("%s: netns path %s, want the OCI spec's %s", want.Ref(), p.NetnsPath, want.NetnsPath)
		}
		name, err := p.NetnsName()
		if err != nil {
			t.Fatal(err)
		}
		if name != filepath.Base(want.NetnsPath) {
			t.Errorf("NetnsName = %q, want %q", name, filepath.Base(want.NetnsPath))
		}
		if _, ino, err := netnsutil.ResolveName(name); err != nil || uint32(ino) != want.NetnsInode {
			t.Errorf("ResolveName(%s) = %d, %v; want inode %d", name, ino, err, want.NetnsInode)
		}
		// A bare IP, through the CRI.
		p, err = r.Resolve(ctx, want.IP.String())
		if err != nil {
			t.Fatalf("Resolve(%s): %v", want.IP, err)
		}
		checkPod(t, p, want, "cri:"+rt.Endpoint)
	}
	_, err := r.Resolve(ctx, "default/clinet")
	if !errors.Is(err, kube.ErrNotFound) || !strings.HasSuffix(err.Error(), "; did you mean default/client?") {
		t.Errorf("typo: %v", err)
	}
	idx, err := r.Index(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if idx[client.NetnsInode].Name != "client" || idx[server.NetnsInode].Name != "server" {
		t.Errorf("Index = %+v", idx)
	}

	// 2. The CNI cache containerd 1.6 (libcni) really wrote, with no
	// runtime reachable.
	noRuntime := "unix://" + filepath.Join(rt.Dir, "no-runtime.sock")
	rc := kube.NewResolver(kube.Options{
		CRIEndpoints:   []string{noRuntime},
		CNIResultsDirs: []string{cniResultsDir},
		IPAMDirs:       []string{filepath.Join(rt.Dir, "ipam")},
		Logf:           t.Logf,
	})
	for _, want := range []Pod{client, server} {
		for _, spec := range []string{want.Ref(), want.IP.String()} {
			p, err := rc.Resolve(ctx, spec)
			if err != nil {
				t.Fatalf("CNI cache: Resolve(%s): %v", spec, err)
			}
			checkPod(t, p, want, kube.SourceCNICache)
		}
	}
	_, err = rc.Resolve(ctx, "default/nope")
	if !errors.Is(err, kube.ErrNoRuntime) || !strings.Contains(err.Error(), noRuntime+": no such socket") {
		t.Errorf("no runtime: %v", err)
	}

	// 3. A bare IP with neither: the netns scan.
	rs := kube.NewResolver(kube.Options{CRIEndpoints: []string{}, CNIResultsDirs: []string{}, IPAMDirs: []string{}, Logf: t.Logf})
	for _, want := range []Pod{client, server} {
		p, err := rs.Resolve(ctx, want.IP.String())
		if err != nil {
			t.Fatalf("netns scan: Resolve(%s): %v", want.IP, err)
		}
		if p.Source != kube.SourceNetnsScan || p.NetnsInode != want.NetnsInode || p.IP != want.IP {
			t.Errorf("netns scan: got %+v, want inode %d", p, want.NetnsInode)
		}
		if ino, err := netnsutil.InodeOf(p.NetnsPath); err != nil || uint32(ino) != want.NetnsInode {
			t.Errorf("netns scan: path %s -> %d, %v", p.NetnsPath, ino, err)
		}
	}

	// 4. A stopped pod is reported as not running.
	rt.StopPod(t, server)
	_, err = r.Resolve(ctx, "default/server")
	if !errors.Is(err, kube.ErrNotRunning) || !strings.Contains(err.Error(), "is NOTREADY") {
		t.Errorf("stopped pod: %v", err)
	}
	if _, err := r.Resolve(ctx, server.IP.String()); !errors.Is(err, kube.ErrNotFound) {
		t.Errorf("IP of stopped pod: %v", err)
	}
}

func checkPod(t *testing.T, p kube.Pod, want Pod, source string) {
	t.Helper()
	if p.Namespace != want.Namespace || p.Name != want.Name || p.IP != want.IP || p.SandboxID != want.SandboxID || p.Source != source {
		t.Errorf("got %s %+v\nwant %s/%s ip %s sandbox %s via %s", p, p, want.Namespace, want.Name, want.IP, want.SandboxID, source)
	}
	if source != kube.SourceCNICache || p.UID != "" {
		if p.UID != want.UID {
			t.Errorf("%s: uid %q, want %q", want.Ref(), p.UID, want.UID)
		}
	}
	if p.NetnsInode != want.NetnsInode {
		t.Errorf("%s: netns inode %d, want the sandbox's %d", want.Ref(), p.NetnsInode, want.NetnsInode)
	}
	if ino, err := netnsutil.InodeOf(p.NetnsPath); err != nil || uint32(ino) != want.NetnsInode {
		t.Errorf("%s: netns path %s opens inode %d (%v), want %d", want.Ref(), p.NetnsPath, ino, err, want.NetnsInode)
	}
}

// TestRuntimeLeavesNothing checks that a runtime's cleanup removes every
// process, mount, interface and file it made.
func TestRuntimeLeavesNothing(t *testing.T) {
	Require(t)
	linksBefore := linkNames(t)
	var rt *Runtime
	var pods []Pod
	t.Run("run", func(t *testing.T) {
		rt = StartRuntime(t)
		pods = append(pods, rt.RunPod(t, "default", "a", true), rt.RunPod(t, "default", "b", false))
		if _, err := netlink.LinkByName(rt.Bridge); err != nil {
			t.Errorf("bridge %s not created: %v", rt.Bridge, err)
		}
	})
	if rt == nil || rt.PID == 0 {
		t.Fatal("runtime did not start")
	}
	if err := syscall.Kill(rt.PID, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("containerd pid %d still exists (%v)", rt.PID, err)
	}
	for _, p := range pods {
		if err := syscall.Kill(p.SandboxPID, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("sandbox pid %d of %s still exists (%s)", p.SandboxPID, p.Ref(), cmdline(p.SandboxPID))
		}
		if _, err := os.Lstat(p.NetnsPath); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("netns %s still exists", p.NetnsPath)
		}
	}
	if pids := rt.leftoverPids(map[string]bool{}); len(pids) > 0 {
		t.Errorf("processes left: %v", pids)
	}
	if m := mountsUnder(rt.Dir); len(m) > 0 {
		t.Errorf("mounts left: %v", m)
	}
	if _, err := os.Stat(rt.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists", rt.Dir)
	}
	after := linkNames(t)
	for name := range after {
		if !linksBefore[name] {
			t.Errorf("interface %s left behind", name)
		}
	}
	if cg := rt.Cgroups(); len(cg) > 0 {
		t.Errorf("cgroups left: %v", cg)
	}
	if m, _ := filepath.Glob(filepath.Join(cniResultsDir, rt.Network+"-*")); len(m) > 0 {
		t.Errorf("CNI cache files left: %v", m)
	}
}

func linkNames(t *testing.T) map[string]bool {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, l := range links {
		out[l.Attrs().Name] = true
	}
	return out
}

// TestTracePod runs `skbtrail trace --pod default/client --to SERVER:8080
// --probe --json` against pods of a real containerd. Until the CLI has
// --cri-endpoint it only says so (a skip would fail `make test`), unless
// SKBTRAIL_E2E_POD_WIRED=1 requires it.
func TestTracePod(t *testing.T) {
	Require(t)
	bin := filepath.Join(t.TempDir(), "skbtrail")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/skbtrail").CombinedOutput(); err != nil {
		t.Fatalf("build skbtrail: %v\n%s", err, out)
	}
	help, _ := exec.Command(bin, "trace", "--help").CombinedOutput()
	if !bytes.Contains(help, []byte("--cri-endpoint")) {
		t.Fatalf("skbtrail trace has no --cri-endpoint flag")
	}
	rt := StartRuntime(t)
	client := rt.RunPod(t, "default", "client", false)
	server := rt.RunPod(t, "default", "server", true)
	checkServes(t, client, server)
	schema := loadSchema(t)

	to := net.JoinHostPort(server.IP.String(), fmt.Sprint(ServePort))
	stdout, stderr, code := run(t, bin, "trace", "--pod", "default/client", "--cri-endpoint", rt.Endpoint,
		"--to", to, "--probe", "--json", "--timeout", "5s")
	if code != 0 {
		t.Fatalf("exit %d, want 0\nstderr: %s\nstdout: %s", code, stderr, stdout)
	}
	var journeys []map[string]any
	sc := bufio.NewScanner(strings.NewReader(stdout))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(sc.Bytes()))
		if err != nil {
			t.Fatalf("not JSON: %v\n%s", err, sc.Bytes())
		}
		if err := schema.Validate(inst); err != nil {
			t.Fatalf("journey does not match the schema: %v\n%s", err, sc.Bytes())
		}
		var j map[string]any
		_ = json.Unmarshal(sc.Bytes(), &j)
		journeys = append(journeys, j)
	}
	if len(journeys) != 1 {
		t.Fatalf("%d journeys, want 1\n%s", len(journeys), stdout)
	}
	j := journeys[0]
	pkt, _ := j["packet"].(map[string]any)
	if pkt["src"] != client.IP.String() || pkt["dst"] != server.IP.String() || pkt["dport"] != float64(ServePort) || pkt["proto"] != "tcp" {
		t.Errorf("packet = %v, want %s -> %s:%d tcp", pkt, client.IP, server.IP, ServePort)
	}
	if v, _ := j["verdict"].(map[string]any); v["kind"] != "delivered" {
		t.Errorf("verdict = %v, want delivered", v)
	}
	hops, _ := j["hops"].([]any)
	if len(hops) == 0 {
		t.Fatal("no hops")
	}
	clientNetns := filepath.Base(client.NetnsPath) // named: bind-mounted under /run/netns
	if h, _ := hops[0].(map[string]any); h["netns"] != clientNetns {
		t.Errorf("first hop %v, want netns %s", h, clientNetns)
	}
	serverNetns := filepath.Base(server.NetnsPath)
	seen := false
	for _, h := range hops {
		if m, _ := h.(map[string]any); m["netns"] == serverNetns {
			seen = true
		}
	}
	if !seen {
		t.Errorf("no hop in the server's netns %s: %v", serverNetns, hops)
	}
	// the hops in the pods' namespaces carry their identity
	podOf := map[string]string{clientNetns: "default/client", serverNetns: "default/server"}
	for _, h := range hops {
		m, _ := h.(map[string]any)
		if want, ok := podOf[fmt.Sprint(m["netns"])]; ok && m["pod"] != want {
			t.Errorf("hop %v: pod %v, want %s", m, m["pod"], want)
		}
	}
	if v, _ := j["verdict"].(map[string]any); v["pod"] != "default/server" || v["pod_id"] != server.SandboxID {
		t.Errorf("verdict %v, want pod default/server, pod_id %s", v, server.SandboxID)
	}

	// A fault: a DROP rule for this traffic in the server pod's netns (what a
	// NetworkPolicy does). The pods share one bridge, so the traffic is
	// bridged, not routed: the host's FORWARD chain never sees it, and this
	// kernel has no nf_tables bridge family to filter it there.
	if out, err := exec.Command("ip", "netns", "exec", serverNetns, "iptables", "-A", "INPUT", "-p", "tcp", "--dport", fmt.Sprint(ServePort), "-j", "DROP").CombinedOutput(); err != nil {
		t.Fatalf("add drop rule in the server pod: %v %s", err, out)
	}
	stdout, stderr, code = run(t, bin, "trace", "--pod", "default/client", "--cri-endpoint", rt.Endpoint,
		"--to", to, "--probe", "--json", "--timeout", "5s")
	if code != 1 {
		t.Fatalf("with the drop rule: exit %d, want 1\nstderr: %s\nstdout: %s", code, stderr, stdout)
	}
	var dj map[string]any
	if err := json.Unmarshal([]byte(strings.SplitN(stdout, "\n", 2)[0]), &dj); err != nil {
		t.Fatalf("journey: %v\n%s", err, stdout)
	}
	dv, _ := dj["verdict"].(map[string]any)
	if dv["kind"] != "dropped" || dv["reason"] != "NETFILTER_DROP" || dv["pod"] != "default/server" || dv["netns"] != serverNetns ||
		dv["hook"] != "INPUT" || dv["rule"] != fmt.Sprintf("-A INPUT -p tcp -m tcp --dport %d -j DROP", ServePort) {
		t.Errorf("verdict %v, want dropped NETFILTER_DROP in %s (default/server) by the INPUT rule", dv, serverNetns)
	}
	dhops, _ := dj["hops"].([]any)
	if h, _ := dhops[0].(map[string]any); h["pod"] != "default/client" {
		t.Errorf("first hop %v, want pod default/client", h)
	}

	// A pod that does not exist: usage/environment error, one line.
	_, stderr, code = run(t, bin, "trace", "--pod", "default/clinet", "--cri-endpoint", rt.Endpoint,
		"--to", to, "--probe", "--timeout", "2s")
	if code != 2 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "did you mean default/client?") {
		t.Errorf("unknown pod: exit %d, stderr %q", code, stderr)
	}
}

func run(t *testing.T, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run %s: %v", bin, err)
	}
	t.Logf("skbtrail %s -> exit %d\nstderr: %s\nstdout: %s", strings.Join(args, " "), code, e.String(), o.String())
	return o.String(), e.String(), code
}

func loadSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	for _, p := range []string{"../e2e/journey.schema.json", "../../../shared/journey.schema.json"} {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		s, err := jsonschema.NewCompiler().Compile(p)
		if err != nil {
			t.Fatalf("schema %s: %v", p, err)
		}
		return s
	}
	t.Fatal("journey.schema.json not found")
	return nil
}
