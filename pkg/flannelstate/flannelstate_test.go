package flannelstate

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseSubnetFile(t *testing.T) {
	sf, err := ParseSubnetFile([]byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if sf.Network != netip.MustParsePrefix("10.244.0.0/16") || sf.Subnet != netip.MustParsePrefix("10.244.1.1/24") || sf.MTU != 1450 || !sf.IPMasq {
		t.Errorf("got %+v", sf)
	}
	for _, bad := range []string{"", "garbage\n", "FLANNEL_NETWORK=10.244.0.0\n", "FLANNEL_MTU=x\nFLANNEL_NETWORK=10.244.0.0/16\n"} {
		if _, err := ParseSubnetFile([]byte(bad)); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
	if _, err := ReadSubnetFile(filepath.Join(t.TempDir(), "missing.env")); err == nil || !strings.Contains(err.Error(), "flannel subnet file") {
		t.Errorf("missing file: %v", err)
	}
}

func TestParseLease(t *testing.T) {
	l, err := ParseLease("/coreos.com/network/subnets/10.244.1.0-24",
		[]byte(`{"PublicIP":"198.51.100.20","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"EE:A5:65:27:59:4E"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if l.Subnet != netip.MustParsePrefix("10.244.1.0/24") || l.PublicIP != netip.MustParseAddr("198.51.100.20") || l.VtepMAC != "ee:a5:65:27:59:4e" || l.BackendType != "vxlan" {
		t.Errorf("got %+v", l)
	}
	if _, err := ParseLease("/coreos.com/network/subnets/nonsense", []byte(`{}`)); err == nil {
		t.Error("bad key: want an error")
	}
	if _, err := ParseLease("/coreos.com/network/subnets/10.244.1.0-24", []byte(`{`)); err == nil {
		t.Error("bad value: want an error")
	}
}

func TestReadLeases(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v3/kv/range" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, `{"kvs":[{"key":%q,"value":%q}]}`, b64("/coreos.com/network/subnets/10.244.0.0-24"),
			b64(`{"PublicIP":"192.0.2.10","BackendType":"vxlan","BackendData":{"VtepMAC":"f2:c1:53:44:44:1c"}}`))
	}))
	defer srv.Close()
	leases, err := ReadLeases(context.Background(), []string{"http://127.0.0.1:1", srv.URL}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) != 1 || leases[0].PublicIP != netip.MustParseAddr("192.0.2.10") || leases[0].VtepMAC != "f2:c1:53:44:44:1c" {
		t.Errorf("got %+v", leases)
	}
	if _, err := ReadLeases(context.Background(), []string{"http://127.0.0.1:1"}, "", nil); err == nil {
		t.Error("unreachable etcd: want an error")
	}
}

func TestFlanneldNetns(t *testing.T) {
	root := t.TempDir()
	mk := func(pid, comm, ns string) {
		d := filepath.Join(root, pid, "ns")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, pid, "comm"), []byte(comm+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(ns, filepath.Join(d, "net")); err != nil {
			t.Fatal(err)
		}
	}
	mk("10", "flanneld", "net:[4026532001]")
	mk("11", "bash", "net:[4026532002]")
	mk("12", "flannel", "net:[4026532003]")
	m, err := FlanneldNetns(root)
	if err != nil {
		t.Fatal(err)
	}
	if !m[4026532001] || m[4026532002] || !m[4026532003] || len(m) != 2 {
		t.Errorf("got %v", m)
	}
}
