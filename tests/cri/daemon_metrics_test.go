//go:build linux

package cri

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skbtrail/skbtrail/netnsutil"
)

// TestDaemonPodMetrics runs the daemon against a real containerd: a drop
// in a pod's network namespace is counted in skbtrail_pod_drops_total under
// that pod's namespace and name (learned through the CRI), and the series
// goes once the pod is removed.
func TestDaemonPodMetrics(t *testing.T) {
	Require(t)
	bin := filepath.Join(t.TempDir(), "skbtrail")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/skbtrail").CombinedOutput(); err != nil {
		t.Fatalf("build skbtrail: %v\n%s", err, out)
	}
	rt := StartRuntime(t)
	client := rt.RunPod(t, "default", "client", false)
	server := rt.RunPod(t, "default", "server", true)
	checkServes(t, client, server)

	port := freeTCPPort(t)
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", port)
	dir := t.TempDir()
	var log strings.Builder
	cmd := exec.Command(bin, "daemon", "--listen", "unix://"+filepath.Join(dir, "skbtrail.sock"),
		"--metrics", metricsAddr, "--cri-endpoint", rt.Endpoint, "--rate-limit", "0")
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM) // our own daemon, by PID
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", log.String())
		}
	})
	scrape := func() string {
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	waitFor := func(what string, within time.Duration, ok func(string) bool) string {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			out := scrape()
			if ok(out) {
				return out
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %s; last scrape:\n%s", what, within, grepMetrics(out, "skbtrail_pod"))
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	waitFor("daemon metrics up", 30*time.Second, func(s string) bool {
		return strings.Contains(s, "skbtrail_journeys_total") || strings.Contains(s, "skbtrail_events_lost_total")
	})

	// a NetworkPolicy-like DROP in the server pod: the client's SYNs die there
	serverNetns := filepath.Base(server.NetnsPath)
	if out, err := exec.Command("ip", "netns", "exec", serverNetns, "iptables", "-A", "INPUT", "-p", "tcp", "--dport", fmt.Sprint(ServePort), "-j", "DROP").CombinedOutput(); err != nil {
		t.Fatalf("add drop rule in the server pod: %v %s", err, out)
	}
	addr := net.JoinHostPort(server.IP.String(), fmt.Sprint(ServePort))
	_ = netnsutil.Do(fmt.Sprintf("/proc/%d/ns/net", client.SandboxPID), func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			t.Error("connect through the DROP rule succeeded")
		}
		return nil
	})
	series := regexp.MustCompile(`(?m)^skbtrail_pod_drops_total\{pod="server",pod_namespace="default",reason="NETFILTER_DROP"\} [1-9]`)
	waitFor("the drop charged to default/server", 30*time.Second, series.MatchString)

	// the pod goes: its series goes with it (the daemon's sweep, within a
	// pod-index refresh plus a sweep period)
	rt.RemovePod(t, server)
	out := waitFor("the removed pod's series deleted", 90*time.Second, func(s string) bool {
		return s != "" && !strings.Contains(s, `pod="server"`)
	})
	if !strings.Contains(out, "skbtrail_pod_series_capped_total 0") {
		t.Errorf("series capped on a two-pod node:\n%s", grepMetrics(out, "skbtrail_pod"))
	}
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func grepMetrics(scrape, prefix string) string {
	var b strings.Builder
	for _, line := range strings.Split(scrape, "\n") {
		if strings.HasPrefix(line, prefix) {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}
