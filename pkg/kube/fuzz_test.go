//go:build linux

package kube

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/skbtrail/skbtrail/tests/fuzztest"
)

// FuzzParseCNICache: no crash on any file; a parsed entry has a container
// id and addresses that are valid, unmapped, not loopback and listed
// once; an error names the file on one line. Seeds: the libcni cache
// files of testdata (cni-containerd16 is what containerd 1.6 wrote for a
// pod of tests/cri).
func FuzzParseCNICache(f *testing.F) {
	paths, err := filepath.Glob("testdata/*/results/*")
	if err != nil || len(paths) == 0 {
		f.Fatalf("no CNI cache files in testdata: %v", err)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"containerId":"x","cniArgs":[["K8S_POD_NAME"]],"config":"e30=","result":{"ips":[{"interface":-1,"address":"::ffff:127.0.0.1/8"},{"interface":9,"address":"10.0.0.1"}],"ip4":{"ip":"10.0.0.1/24"}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzztest.Bounded(t, func() error { return checkCNICache(data) })
	})
}

func checkCNICache(data []byte) error {
	const path = "/var/lib/cni/results/net-id-eth0"
	e, err := parseCNICache(path, data)
	if err != nil {
		if !strings.HasPrefix(err.Error(), path+": ") || strings.Contains(err.Error(), "\n") {
			return fmt.Errorf("error %q", err)
		}
		return nil
	}
	if e.containerID == "" || e.file != path {
		return fmt.Errorf("entry %+v", e)
	}
	seen := map[string]bool{}
	for _, a := range e.ips {
		if !a.IsValid() || a.Is4In6() || a.IsLoopback() || seen[a.String()] {
			return fmt.Errorf("address %v in %v", a, e.ips)
		}
		seen[a.String()] = true
	}
	again, err := parseCNICache(path, data)
	if err != nil || !reflect.DeepEqual(again, e) {
		return fmt.Errorf("second parse: %+v, %v; first %+v", again, err, e)
	}
	return nil
}

// FuzzParseVerboseInfo: no crash on any verbose info; the answer does not
// depend on map order, the "info" key (containerd, CRI-O) comes first,
// and its parts agree (a netns path only from a spec that lists one).
// Seed: containerd 1.6's verbose PodSandboxStatus of a tests/cri pod.
func FuzzParseVerboseInfo(f *testing.F) {
	b, err := os.ReadFile("testdata/cri-verbose-info-containerd16.json")
	if err != nil {
		f.Fatal(err)
	}
	var real map[string]string
	if err := json.Unmarshal(b, &real); err != nil {
		f.Fatal(err)
	}
	f.Add(real["info"], "", "")
	f.Add(real["info"], "aaa", `{"pid":7,"runtimeSpec":{"linux":{"namespaces":[{"type":"network","path":"/proc/7/ns/net"}]}}}`)
	f.Add(`{"pid":3}`, "zzz", `{"runtimeSpec":{"linux":{"namespaces":[{"type":"pid"}]}}}`)
	f.Add(containerdInfo(fakeSandbox{pid: 42, netnsPath: "/var/run/netns/cni-1", id: "abc"}), "other", "not json")
	f.Fuzz(func(t *testing.T, info, key, other string) {
		fuzztest.Bounded(t, func() error { return checkVerboseInfo(info, key, other) })
	})
}

type verboseResult struct {
	path              string
	pid               int
	hasNetns, hasSpec bool
}

func verbose(m map[string]string) verboseResult {
	var r verboseResult
	r.path, r.pid, r.hasNetns, r.hasSpec = parseVerboseInfo(m)
	return r
}

func checkVerboseInfo(info, key, other string) error {
	m := map[string]string{"info": info}
	if key != "" && key != "info" {
		m[key] = other
	}
	got := verbose(m)
	if got.pid < 0 || (got.hasNetns && !got.hasSpec) || (got.path != "" && !got.hasNetns) {
		return fmt.Errorf("%+v", got)
	}
	for range 4 { // map order differs from call to call
		if again := verbose(m); again != got {
			return fmt.Errorf("%+v, then %+v", got, again)
		}
	}
	alone := verbose(map[string]string{"info": info})
	if alone.hasSpec && (got.path != alone.path || got.hasNetns != alone.hasNetns || !got.hasSpec) {
		return fmt.Errorf("with %q: %+v; info alone: %+v", key, got, alone)
	}
	if alone.pid > 0 && got.pid != alone.pid {
		return fmt.Errorf("with %q: pid %d; info alone: %d", key, got.pid, alone.pid)
	}
	return nil
}

// FuzzParseSpec: no crash on any pod reference; a parsed one is a valid
// namespace and name or a pod-like IP address and parses back from its
// String form to itself; an error is ErrInvalidSpec on one line.
func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{"default/client", "kube-system/coredns-5d78c-x1z", "ns1/web.example-0", "10.244.1.2", "fd00::5",
		"::ffff:10.0.0.1", "", "  ", "foo", "Foo", "a/b/c", "/web", "default/", "10.0.0.0/24", "default/web_1", "fe80::1%eth0",
		"255.255.255.255", "ff02::1", strings.Repeat("n", 64) + "/x", "a/" + strings.Repeat("b.", 127) + "c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fuzztest.Bounded(t, func() error { return checkSpec(s) })
	})
}

func checkSpec(s string) error {
	spec, err := ParseSpec(s)
	if err != nil {
		if !errors.Is(err, ErrInvalidSpec) || strings.Contains(err.Error(), "\n") {
			return fmt.Errorf("ParseSpec(%q): error %q", s, err)
		}
		return nil
	}
	if spec.IP.IsValid() {
		a := spec.IP
		if spec.Namespace != "" || spec.Name != "" || a.Zone() != "" || a.Is4In6() || a.IsLoopback() || a.IsUnspecified() || a.IsMulticast() {
			return fmt.Errorf("ParseSpec(%q) = %+v", s, spec)
		}
	} else if validLabel(spec.Namespace) != "" || spec.Namespace == "" || validName(spec.Name) != "" {
		return fmt.Errorf("ParseSpec(%q) = %+v", s, spec)
	}
	again, err := ParseSpec(spec.String())
	if err != nil || again != spec {
		return fmt.Errorf("ParseSpec(%q) = %+v, whose String %q parses to %+v, %v", s, spec, spec.String(), again, err)
	}
	return nil
}
