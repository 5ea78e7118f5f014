package lab

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRealFlannel: the real flanneld programs flannel.1 (VNI 1, UDP 8472,
// MTU 1450), the route to the other node's pod CIDR, a permanent
// neighbour and an FDB entry per peer, from the pinned leases in etcd;
// pod A reaches pod B and the Service; Down stops every process and
// deletes every namespace.
func TestRealFlannel(t *testing.T) {
	RequirePrivileged(t)
	if _, _, err := FlannelBinaries(); err != nil {
		t.Fatal(err)
	}
	l := NewForTest(t, Config{Flannel: FlannelReal})
	for _, ns := range []string{l.NodeA, l.NodeB} {
		for _, args := range [][]string{
			{"ip", "-d", "link", "show", VXLANDevice}, {"ip", "addr", "show", VXLANDevice},
			{"ip", "route"}, {"ip", "neigh", "show", "dev", VXLANDevice}, {"bridge", "fdb", "show", "dev", VXLANDevice},
		} {
			out, err := l.Run(ns, args...)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %s\n%s", ns, strings.Join(args, " "), out)
		}
	}
	link, _ := l.Run(l.NodeA, "ip", "-d", "link", "show", VXLANDevice)
	for _, want := range []string{"mtu 1450", "vxlan id 1 ", "dstport 8472", "local " + NodeAIP, "nolearning"} {
		if !strings.Contains(link, want) {
			t.Errorf("node-a %s: want %q in\n%s", VXLANDevice, want, link)
		}
	}
	route, _ := l.Run(l.NodeA, "ip", "route", "show", "10.244.1.0/24")
	if !strings.Contains(route, "via 10.244.1.0 dev "+VXLANDevice+" onlink") {
		t.Errorf("node-a route to node-b's pods: %q", route)
	}
	fdb, _ := l.Run(l.NodeA, "bridge", "fdb", "show", "dev", VXLANDevice)
	if !strings.Contains(fdb, "dst "+NodeBIP) {
		t.Errorf("node-a fdb: want dst %s in\n%s", NodeBIP, fdb)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.Verify(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := l.Down(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{l.Etcd, l.NodeA} {
		if netnsExists(p) {
			t.Errorf("netns %s survived Down", p)
		}
	}
	if l.FlannelLog("etcd") != "" {
		t.Error("Down left the lab's directory behind")
	}
}

// TestRealFlannelUpFailureCleansUp: an Up that fails after flanneld and
// etcd started stops them (by PID) and deletes the etcd namespace and the
// lab's directory too.
func TestRealFlannelUpFailureCleansUp(t *testing.T) {
	RequirePrivileged(t)
	if _, _, err := FlannelBinaries(); err != nil {
		t.Fatal(err)
	}
	prefix := RandomPrefix()
	_, err := Up(t.Context(), Config{Prefix: prefix, Flannel: FlannelReal, testHook: func(s string) error {
		if s == "before-server" {
			return errors.New("injected failure")
		}
		return nil
	}})
	if err == nil {
		t.Fatal("Up succeeded despite the injected failure")
	}
	for _, name := range append(NetnsNames(prefix), NetnsName(prefix, RoleEtcd)) {
		if netnsExists(name) {
			t.Errorf("netns %s left behind", name)
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "skbtrail-lab-"+prefix+"-*"))
	if len(dirs) != 0 {
		t.Errorf("directories left behind: %v", dirs)
	}
	out, _ := exec.Command("pgrep", "-f", "skbtrail-lab-"+prefix).CombinedOutput()
	if s := strings.TrimSpace(string(out)); s != "" {
		t.Errorf("processes of the lab still running: %s", s)
	}
}
